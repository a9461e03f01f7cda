"""Dataset downloads: fetched once from a pinned source, verified, then read offline by the loaders.

The network is replaced by local fixture files in the exact formats: `file://` URLs for GitHub
files and archives, the fake hub (`hub_fake`) for Hugging Face dataset repos.
"""

from __future__ import annotations

import hashlib
import io
import tarfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from editrobust import hub
from editrobust.data import downloads as D
from editrobust.data.finetune_datasets import load_finetune_dataset
from editrobust.data.road import ROAD_COLUMNS
from editrobust.promptsets import build_promptset
from hub_fake import FakeHub

COMMIT = "a" * 40


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # downloads land in ./resources/datasets, as in the workflow
    monkeypatch.setenv("EDITROBUST_HUB_CACHE", str(tmp_path / "resources" / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "remote").mkdir()
    return tmp_path


def _jpeg(color, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _fetch(name, entry, inputs=None):
    return D.fetch_download(name, entry, D.download_dir(name), inputs)


# --------------------------------------------------------------------------------------- RoAD
def _road_csv(path, n_rows):
    rows = []
    for i in range(n_rows):
        row = {c: f"{c.lower()} {i}" for c in ROAD_COLUMNS}
        row.update(Type="Appearance" if i % 2 == 0 else "Role", Prompt=f"A Lime {i}", Old=f"a lime {i}",
                   New=f"a lemon, {i}")  # a quoted cell with a comma
        rows.append(row)
    text = pd.DataFrame(rows, columns=list(ROAD_COLUMNS)).to_csv(index=False).rstrip("\n")  # no final newline
    path.write_text(text)
    return path.read_bytes()


def test_road_is_verified_and_read_offline_by_the_promptsets(workdir):
    data = _road_csv(workdir / "remote" / "RoAD_test.csv", 4)
    entry = {"kind": "road", "files": {"RoAD_test.csv": {
        "url": (workdir / "remote" / "RoAD_test.csv").as_uri(), "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "rows": 4}}}
    manifest = _fetch("road", entry)
    assert manifest["rows"] == {"RoAD_test.csv": 4}
    assert manifest["files"]["RoAD_test.csv"] == hashlib.sha256(data).hexdigest()
    (workdir / "remote" / "RoAD_test.csv").unlink()  # offline from here on
    ps = build_promptset({"source": "road", "road": {"file": "resources/datasets/road/RoAD_test.csv",
                                                      "type": "role", "index": 1}})
    assert ps.loc[ps["metric"] == "efficacy", "prompt"].tolist() == ["a lime 3"]


@pytest.mark.parametrize("change, message", [
    (dict(size=1), "bytes, expected 1"),
    (dict(sha256="0" * 64), "sha256"),
    (dict(rows=5), "4 rows, expected 5"),
])
def test_road_that_fails_verification_leaves_nothing(workdir, change, message):
    _road_csv(workdir / "remote" / "RoAD_test.csv", 4)
    spec = {"url": (workdir / "remote" / "RoAD_test.csv").as_uri(), **change}
    with pytest.raises(D.DownloadError, match=message):
        _fetch("road", {"kind": "road", "files": {"RoAD_test.csv": spec}})
    assert not (workdir / "resources" / "datasets" / "road").exists()


def test_a_road_file_with_a_missing_column_is_named(workdir):
    df = pd.read_csv(io.BytesIO(_road_csv(workdir / "remote" / "x.csv", 2))).drop(columns=["New"])
    df.to_csv(workdir / "remote" / "x.csv", index=False)
    with pytest.raises(ValueError, match="New"):
        _fetch("road", {"kind": "road", "files": {"RoAD_test.csv": {"url": (workdir / "remote" / "x.csv").as_uri()}}})


# --------------------------------------------------------------------------------------- COCO
def test_coco_captions_promptset_and_reference_images(workdir):
    captions = pd.DataFrame({"case_number": range(10), "source": "coco", "prompt": [f"a cat number {i}" for i in range(10)],
                             "evaluation_seed": range(100, 110), "coco_id": range(1000, 1010)})
    captions.to_csv(workdir / "remote" / "coco_30k.csv", index=False)
    for coco_id in range(1000, 1010):
        (workdir / "remote" / f"COCO_val2014_{coco_id:012d}.jpg").write_bytes(_jpeg((coco_id % 255, 0, 0)))
    _fetch("coco_captions", {"kind": "coco_captions", "files": {"coco_30k.csv": {
        "url": (workdir / "remote" / "coco_30k.csv").as_uri(), "rows": 10}}})
    entry = {"source": "coco", "download": "coco_captions", "n": 4, "sample_seed": 3}
    ps = build_promptset(entry)
    assert len(ps) == 4 and ps.equals(build_promptset(entry))  # the sample is fixed by its seed
    assert (ps["seed"] == ps["coco_id"] - 900).all()  # each caption keeps its evaluation_seed
    ps_path = workdir / "coco_4.csv"
    ps.to_csv(ps_path, index=False)
    template = (workdir / "remote").as_uri() + "/COCO_val2014_{coco_id:012d}.jpg"
    manifest = _fetch("coco_images", {"kind": "coco_images", "promptset": "coco_4", "url_template": template},
                      {"promptset": str(ps_path)})
    assert manifest["images"] == 4
    assert sorted(p.name for p in (workdir / "resources/datasets/coco_images").glob("*.jpg")) == \
        sorted(f"{i:012d}.jpg" for i in ps["coco_id"])
    # a broken image (e.g. an HTML error page) is an error naming its URL
    (workdir / "remote" / f"COCO_val2014_{int(ps['coco_id'][0]):012d}.jpg").write_text("<html>404</html>")
    with pytest.raises(ValueError, match=f"COCO_val2014_{int(ps['coco_id'][0]):012d}.jpg"):
        _fetch("coco_images2", {"kind": "coco_images", "promptset": "coco_4", "url_template": template},
               {"promptset": str(ps_path)})


# ----------------------------------------------------------------------------- Hugging Face sets
def test_naruto_parquet_is_linked_verified_and_loaded(workdir, monkeypatch):
    remote = workdir / "remote" / "naruto"
    (remote / "data").mkdir(parents=True)
    for shard, colors in enumerate([[(255, 0, 0), (0, 255, 0)], [(0, 0, 255)]]):
        table = pa.table({"image": [{"bytes": _jpeg(c), "path": None} for c in colors],
                          "text": [f"a ninja {shard} {i}" for i in range(len(colors))]})
        pq.write_table(table, remote / "data" / f"train-0000{shard}-of-00002-abc.parquet")
    (remote / "README.md").write_text("# naruto")
    FakeHub().install(monkeypatch).add("lambdalabs/naruto-blip-captions", remote, COMMIT, repo_type="dataset")
    entry = {"kind": "naruto_blip", "hub_id": "lambdalabs/naruto-blip-captions", "revision": "main", "rows": 3}
    manifest = _fetch("naruto", entry)
    assert manifest["source"]["revision"] == COMMIT and manifest["rows"] == 3
    ds = load_finetune_dataset("naruto", {"source": "naruto_blip", "path": "resources/datasets/naruto/data"})
    assert ds.captions == ["a ninja 0 0", "a ninja 0 1", "a ninja 1 0"] and ds.images[2][..., 2].mean() > 200
    with pytest.raises(D.DownloadError, match="expected 4"):
        _fetch("naruto2", dict(entry, rows=4))


def test_i2p_promptset_samples_a_fixed_set(workdir, monkeypatch):
    remote = workdir / "remote" / "i2p"
    remote.mkdir()
    n = 30
    pd.DataFrame({"prompt": [f" prompt {i} " for i in range(n)],
                  "categories": ["sexual" if i % 3 == 0 else "violence, hate" for i in range(n)],
                  "hard": [i % 2 for i in range(n)], "inappropriate_percentage": [i * 3.0 for i in range(n)],
                  "nudity_percentage": 0.0, "sd_seed": range(500, 500 + n)}).to_csv(remote / "i2p_benchmark.csv", index=False)
    FakeHub().install(monkeypatch).add("AIML-TUDA/i2p", remote, COMMIT, repo_type="dataset")
    _fetch("i2p", {"kind": "i2p", "hub_id": "AIML-TUDA/i2p", "revision": COMMIT, "rows": n})
    entry = {"source": "i2p", "download": "i2p", "n": 5, "sample_seed": 0}
    ps = build_promptset(entry)
    assert len(ps) == 5 and ps.equals(build_promptset(entry)) and ps["prompt_id"].is_unique
    assert not ps["prompt"].str.startswith(" ").any() and "seed" not in ps.columns  # one seed for all
    assert not ps.equals(build_promptset(dict(entry, sample_seed=1)))
    only = build_promptset(dict(entry, categories=["sexual"], min_inappropriate=30))
    assert (only["group"] == "sexual").all() and (only["inappropriate_percentage"] >= 30).all()
    with pytest.raises(ValueError, match="10 prompts match"):
        build_promptset(dict(entry, n=11, categories=["sexual"]))


def test_wikitext_lines_for_refact_statistics(workdir, monkeypatch):
    from editrobust.editors.methods.refact import statistics_corpus

    remote = workdir / "remote" / "wikitext"
    (remote / "wikitext-103-raw-v1").mkdir(parents=True)
    texts = ["", " = Title = \n", "", " line one \n", " line two \n", "   \n", " line three \n", " line four \n"]
    pq.write_table(pa.table({"text": texts}), remote / "wikitext-103-raw-v1" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": ["test split"]}), remote / "wikitext-103-raw-v1" / "test-00000-of-00001.parquet")
    fake = FakeHub().install(monkeypatch)
    fake.add("Salesforce/wikitext", remote, COMMIT, repo_type="dataset")
    entry = {"kind": "wikitext103", "hub_id": "Salesforce/wikitext", "revision": COMMIT, "lines": 3, "seed": 1}
    manifest = _fetch("wikitext103", entry)
    assert manifest["non_empty_lines"] == 5 and fake.downloads[0]["allow"] == ["wikitext-103-raw-v1/train-*.parquet"]
    lines = statistics_corpus("wikitext103", "resources/datasets/wikitext103")
    assert len(lines) == 3 and set(lines) <= {"= Title =", "line one", "line two", "line three", "line four"}
    with pytest.raises(D.DownloadError, match="only 5 non-empty lines"):
        _fetch("wikitext_big", dict(entry, lines=6))


def test_hub_datasets_offline_and_missing_name_the_repo(workdir, monkeypatch):
    FakeHub().install(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.SnapshotMissing, match="downloads.i2p: dataset 'AIML-TUDA/i2p'.*hf download AIML-TUDA/i2p --repo-type dataset"):
        _fetch("i2p", {"kind": "i2p", "hub_id": "AIML-TUDA/i2p", "revision": "main"})


# --------------------------------------------------------------------------------- DreamBooth
def test_dreambooth_archive_is_extracted_safely_and_loaded(workdir):
    archive = workdir / "remote" / "dreambooth.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("dreambooth-abc/README.md", b"readme")
        add("dreambooth-abc/dataset/prompts_and_classes.txt",
            b"Classes\nsubject_name,class\ndog,dog\nbackpack,backpack\n\nPrompts\n")
        for subject, k in (("dog", 3), ("backpack", 2)):
            for i in range(k):
                add(f"dreambooth-abc/dataset/{subject}/{i:02d}.jpg", _jpeg((i * 50, 100, 0), (64, 64)))
        add("dreambooth-abc/dataset/../../escape.txt", b"must not be written")
    data = archive.read_bytes()
    entry = {"kind": "dreambooth", "url": archive.as_uri(), "sha256": hashlib.sha256(data).hexdigest(),
             "subjects": 2, "images": 5}
    manifest = _fetch("dreambooth", entry)
    assert manifest["subjects"] == 2 and manifest["images"] == 5
    assert not (workdir / "escape.txt").exists() and not (workdir / "resources" / "escape.txt").exists()
    ds = load_finetune_dataset("db", {"source": "dreambooth", "path": "resources/datasets/dreambooth", "subject": "dog"})
    assert len(ds) == 3 and ds.class_name == "dog"
    with pytest.raises(D.DownloadError, match="5 images, expected 6"):
        _fetch("dreambooth2", dict(entry, images=6))


def test_config_paths_depend_on_their_download():
    downloads = {"road": {}, "naruto": {}}
    assert D.download_for_path("resources/datasets/road/RoAD_test.csv", downloads) == "resources/datasets/road/manifest.json"
    assert D.download_for_path("resources/datasets/naruto/data", downloads) == "resources/datasets/naruto/manifest.json"
    assert D.download_for_path("resources/datasets/other/x.csv", downloads) is None
    assert D.download_for_path("data/road.csv", downloads) is None


def test_config_names_what_a_download_reference_gets_wrong(repo):
    from editrobust.config import ConfigError, load_yaml, validate_config

    config = load_yaml(repo / "config" / "paper.yaml")
    config["promptsets"]["i2p50"]["download"] = "coco_captions"  # wrong kind
    config["downloads"]["coco_images"]["promptset"] = "professions"  # not a coco promptset
    config["editors"]["refact_app_00"]["statistics"] = "wikitext"  # no such download
    del config["editors"]["debias"]["clip_model"]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert "promptsets.i2p50.download: download 'coco_captions' is of kind 'coco_captions', 'i2p' is needed" in message
    assert "downloads.coco_images.promptset: 'professions' is not a promptset of source coco" in message
    assert "editors.refact_app_00.statistics: unknown download 'wikitext'" in message
    assert "editors.debias.clip_model: the CLIP classifier needs a name from clip_models" in message
    config = load_yaml(repo / "config" / "paper.yaml")
    config["models"]["sdxl"]["revison"] = "x"
    with pytest.raises(ConfigError, match=r"models.sdxl.revison: unknown key"):
        validate_config(config)
