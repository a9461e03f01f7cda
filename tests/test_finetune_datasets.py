"""Fine-tuning dataset loaders on fixtures in the real formats, bad inputs, and the config checks."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from editrobust.config import ConfigError, validate_config
from editrobust.data.finetune_datasets import (load_finetune_dataset, prepare_images, read_dreambooth_classes)

from conftest import REPO, SCHEMA


def _encoded(colour, size=(40, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _write_naruto(path, images, texts):
    table = pa.table({"image": [{"bytes": b, "path": None} for b in images], "text": texts})
    pq.write_table(table, path)
    return path


def test_toy_sets():
    style = load_finetune_dataset("s", {"source": "toy", "set": "style", "size": 6, "seed": 1})
    assert len(style) == 6 and all(c.startswith("an anime drawing of") for c in style.captions)
    assert style.images[0].shape == (32, 32, 3) and style.class_name is None
    plain = load_finetune_dataset("s", {"source": "toy", "set": "style", "size": 6, "seed": 1, "style_word": False})
    assert not any("anime" in c for c in plain.captions)
    subject = load_finetune_dataset("d", {"source": "toy", "set": "subject"})
    assert len(subject) == 5 and subject.class_name == "toy" and set(subject.captions) == {"a photo of sks toy"}


def test_naruto_parquet_with_png_and_jpeg_bytes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write_naruto(data / "train-00000-of-00002.parquet", [_encoded((255, 0, 0)), _encoded((0, 0, 255), fmt="JPEG")],
                  ["a man with red hair", "a blue sky"])
    _write_naruto(data / "train-00001-of-00002.parquet", [_encoded((0, 255, 0))], ["a green tree"])
    ds = load_finetune_dataset("naruto", {"source": "naruto_blip", "path": str(data)})
    assert ds.captions == ["a man with red hair", "a blue sky", "a green tree"]
    assert ds.images[0].shape == (30, 40, 3) and tuple(ds.images[0][0, 0]) == (255, 0, 0)
    assert ds.images[1][..., 2].mean() > 200  # the JPEG decodes to blue
    one = load_finetune_dataset("n", {"source": "naruto_blip", "path": str(data / "train-00000-of-00002.parquet"),
                                      "size": 1})
    assert len(one) == 1


@pytest.mark.parametrize("images,texts,message", [
    ([_encoded((1, 2, 3)), b"not an image"], ["ok", "ok"], r"bad.parquet row 1: corrupt or unreadable image"),
    ([_encoded((1, 2, 3)), _encoded((1, 2, 3))], ["ok", None], r"bad.parquet row 1: missing or empty caption"),
    ([_encoded((1, 2, 3))], ["  "], r"bad.parquet row 0: missing or empty caption"),
])
def test_naruto_bad_rows_name_the_file_and_row(tmp_path, images, texts, message):
    path = _write_naruto(tmp_path / "bad.parquet", images, texts)
    with pytest.raises(ValueError, match=message):
        load_finetune_dataset("n", {"source": "naruto_blip", "path": str(path)})


def test_naruto_missing_column_and_missing_file(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": ["a"]}), path)
    with pytest.raises(ValueError, match=r"x.parquet: missing column\(s\) image"):
        load_finetune_dataset("n", {"source": "naruto_blip", "path": str(path)})
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_finetune_dataset("n", {"source": "naruto_blip", "path": str(tmp_path / "nope.parquet")})


CLASSES = "Classes\n\nsubject_name,class\nbackpack,backpack\ndog,dog\nbear_plushie,stuffed animal\n\nPrompts\n\n..."


@pytest.fixture
def dreambooth_dir(tmp_path):
    root = tmp_path / "dreambooth" / "dataset"
    (root / "dog").mkdir(parents=True)
    (root / "prompts_and_classes.txt").write_text(CLASSES)
    for i, colour in ((0, (200, 100, 0)), (2, (10, 20, 30))):  # filenames are not contiguous upstream
        (root / "dog" / f"{i:02d}.jpg").write_bytes(_encoded(colour, (50, 50), "JPEG"))
    return tmp_path / "dreambooth"


def test_dreambooth_layout(dreambooth_dir):
    assert read_dreambooth_classes(dreambooth_dir / "dataset/prompts_and_classes.txt")["bear_plushie"] == "stuffed animal"
    ds = load_finetune_dataset("dog", {"source": "dreambooth", "path": str(dreambooth_dir), "subject": "dog"})
    assert len(ds) == 2 and ds.class_name == "dog" and ds.images[0].shape == (50, 50, 3)
    assert [o.rsplit("/", 1)[1] for o in ds.origins] == ["00.jpg", "02.jpg"]
    # the dataset/ folder itself works too
    assert len(load_finetune_dataset("dog", {"source": "dreambooth", "path": str(dreambooth_dir / "dataset"),
                                             "subject": "dog"})) == 2


def test_dreambooth_bad_inputs(dreambooth_dir):
    entry = {"source": "dreambooth", "path": str(dreambooth_dir), "subject": "dog"}
    with pytest.raises(ValueError, match=r"datasets.d.subject: 'cat' is not listed"):
        load_finetune_dataset("d", dict(entry, subject="cat"))
    (dreambooth_dir / "dataset/dog/03.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"dog/03.jpg: corrupt or unreadable image"):
        load_finetune_dataset("d", entry)
    (dreambooth_dir / "dataset/prompts_and_classes.txt").write_text("nothing here\n")
    with pytest.raises(ValueError, match="no 'subject_name,class' header"):
        load_finetune_dataset("d", entry)


def test_unknown_source():
    with pytest.raises(ValueError, match="datasets.x.source: unknown source 'hub'"):
        load_finetune_dataset("x", {"source": "hub"})


def test_prepare_images_centre_crops_and_resizes():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 255  # the centre square is white, the sides black
    out = prepare_images([img], 8)
    assert out.shape == (1, 8, 8, 3) and out.min() > 200


# ------------------------------------------------------------------------------ config checks
def _config(**extra):
    cfg = yaml.safe_load((REPO / "tests/configs/nano.yaml").read_text())
    cfg.update(extra)
    return cfg


def _problems(cfg):
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, SCHEMA)
    return str(e.value)


def test_config_accepts_finetuned_variants_and_checkpoints():
    cfg = _config()
    cfg["evaluations"][0]["variants"] = ["base", "ft-full", "ed-erase+ft-lora", "ed-erase+ft-lora@2", "ft-lora@2"]
    validate_config(cfg, SCHEMA)


def test_config_errors_name_the_key_path():
    cfg = _config()
    cfg["finetuners"]["full"]["dataset"] = "anime"
    cfg["finetuners"]["lora"]["use_ema"] = True
    cfg["evaluations"][0]["variants"] = ["ft-nope", "ed-nope+ft-full", "ft-lora@3"]
    text = _problems(cfg)
    assert "finetuners.lora.use_ema: unknown key" in text
    cfg["finetuners"]["lora"].pop("use_ema")
    text = _problems(cfg)
    assert "finetuners.full.dataset: unknown dataset 'anime'" in text
    assert "evaluations[0].variants[0]: 'ft-nope' needs a finetuner 'nope'" in text
    assert "evaluations[0].variants[1]: 'ed-nope+ft-full' needs an editor 'nope'" in text
    assert "evaluations[0].variants[2]: 'ft-lora@3': finetuner 'lora' saves no checkpoint at step 3" in text
    cfg = _config()
    cfg["evaluations"][0]["variants"] = ["ed-erase@2"]
    assert "evaluations[0].variants[0]" in _problems(cfg)
    cfg = _config()
    cfg["datasets"]["style"]["set"] = "anime"
    assert "datasets.style.set: 'anime' is not one of style, subject" in _problems(cfg)
    cfg = _config()
    cfg["finetuners"]["db"] = {"method": "dreambooth", "dataset": "style", "steps": 1}
    assert "finetuners.db.dataset: DreamBooth needs a subject dataset" in _problems(cfg)
