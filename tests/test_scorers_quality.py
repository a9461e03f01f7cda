"""Quality metrics (FID, CLIP score), the scorer config keys, and the scoring DAG's wiring."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.io import save_png
from editrobust.scoring import quality
from editrobust.scoring.common import WeightsUnavailable
from editrobust.toyworld.captions import sample_base_world, sample_style_set

from conftest import REPO, SCHEMA


@pytest.fixture(scope="module")
def toy_sets():
    world_a, _, _ = sample_base_world(200, seed=1)
    world_b, _, _ = sample_base_world(200, seed=2)
    style, _ = sample_style_set(200, seed=3)
    return list(world_a), list(world_b), list(style)


def test_fid_toy_extractor_zero_on_itself_positive_on_another_set(one_thread, toy_sets):
    world_a, world_b, style = toy_sets
    extractor, _, desc = quality.make_extractor({"extractor": "toy_random_conv"})
    assert desc == "toy_random_conv(seed=0)"
    feats_a, feats_b, feats_style = (quality.features(extractor, s) for s in toy_sets)
    assert feats_a.shape == (200, 128)
    assert abs(quality.fid_from_features(feats_a, feats_a)) < 1e-6
    other_draw = quality.fid_from_features(feats_a, feats_b)
    styled = quality.fid_from_features(feats_a, feats_style)
    assert 0 < other_draw < styled / 10  # a new draw of the same world is close; another world is far
    assert quality.fid(world_a, style, {"extractor": "toy_random_conv"})[0] == pytest.approx(styled, rel=1e-9)
    reseeded, _, _ = quality.make_extractor({"extractor": "toy_random_conv", "seed": 1})
    assert not torch.equal(quality.features(reseeded, world_a[:4]), feats_a[:4])


def test_clip_score_definition():
    img = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    txt = np.array([[2.0, 0.0], [-1.0, 0.0], [1.0, 1.0]])
    # cos = 1, -1 (clamped to 0), 1/sqrt(2)
    assert quality.clip_score_from_embeddings(img, txt) == pytest.approx(100 * (1 + 0 + 2 ** -0.5) / 3)


def test_reference_rendering_and_quality_table(one_thread, tmp_path, toy_sets):
    ref = tmp_path / "ref"
    quality.render_toy_reference(ref, n=50, seed=4)
    index = pd.read_csv(ref / "index.csv")
    assert len(index) == 50 and all((ref / f).is_file() for f in index["file"])
    again = tmp_path / "ref2"
    quality.render_toy_reference(again, n=50, seed=4)
    assert (ref / index["file"][7]).read_bytes() == (again / index["file"][7]).read_bytes()
    assert not list(tmp_path.glob(".ref*"))  # no temporary directory left behind

    samples = tmp_path / "samples"
    samples.mkdir()
    rows = []
    for i, im in enumerate(toy_sets[2][:40]):
        save_png(samples / f"s{i}.png", im)
        rows.append(dict(prompt_id=f"p{i}", prompt="x", seed=i, file=f"s{i}.png"))
    table = quality.quality_table(pd.DataFrame(rows), samples, {"fid": {"extractor": "toy_random_conv"}}, reference_dir=ref)
    assert table["metric"].tolist() == ["fid"] and table["value"].iloc[0] > 0
    assert table[["n_images", "n_reference"]].iloc[0].tolist() == [40, 50]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        quality.reference_images(tmp_path / "nowhere")


def test_inception_weights_missing_names_url_and_path(tmp_path):
    with pytest.raises(WeightsUnavailable, match="weights-inception-2015-12-05-6726825d.pth") as err:
        quality.make_extractor({"extractor": "inception", "weights": str(tmp_path / "inception.pth")})
    assert str(tmp_path / "inception.pth") in str(err.value) and "https://github.com/toshas" in str(err.value)


def test_inception_loads_local_weights_safely(one_thread, tmp_path, monkeypatch):
    """torch-fidelity's Inception with weights from a local file (weights_only): a random
    state dict saved in its format comes back exactly."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    with monkeypatch.context() as m:  # build a random Inception without any weights file
        m.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None)
        torch.manual_seed(0)
        random_net = tf_inception.FeatureExtractorInceptionV3("random", ["64"])
    path = tmp_path / quality.INCEPTION_FILE
    torch.save(random_net.state_dict(), path)
    safe_cls = quality._feature_extractor_classes()["inception"][0]
    loaded = safe_cls("editrobust-inception-v3-compat", ["64"], feature_extractor_weights_path=str(path))
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], random_net(x)[0])


# --- config ------------------------------------------------------------------------------------

def _config(**extra):
    cfg = load_yaml(REPO / "config" / "config.yaml")
    cfg.update(extra)
    return cfg


def test_config_accepts_every_scorer_kind_and_quality_sets():
    cfg = _config(
        clip_models={"vitb32": {"arch": "ViT-B-32", "pretrained": "openai"}, "mine": {"weights": "/data/clip"}},
        quality_sets={"toy_fid": {"promptset": "toy_concepts", "models": ["toy"],
                                  "reference": {"source": "toy", "n": 100, "seed": 1},
                                  "fid": {"extractor": "toy_random_conv"}, "clip_score": {"clip_model": "mine"}}})
    cfg["scorers"].update({
        "black": {"kind": "black", "threshold": 2},
        "gender": {"kind": "clip_gender", "clip_model": "vitb32", "texts": {"man": "a photo of a man", "woman": "a photo of a woman"}},
        "refact": {"kind": "clip_pair", "clip_model": "mine", "threshold": 0.75},
        "zs": {"kind": "clip_safety", "clip_model": "vitb32"},
        "checker": {"kind": "sd_safety_checker"},
        "nude": {"kind": "nudenet", "threshold": 0.45},
        "humans": {"kind": "human", "labels": "annotations/{model}/{variant}/{promptset}.csv"},
    })
    out = validate_config(cfg, SCHEMA)
    assert out["quality_sets"]["toy_fid"]["variants"] == ["base"]


def test_config_readme_real_model_example_validates():
    text = (REPO / "config" / "README.md").read_text()
    example = yaml.safe_load(text.split("For a real model, e.g.")[1].split("```yaml")[1].split("```")[0])
    cfg = _config(clip_models=example["clip_models"])
    cfg["models"]["sd14"] = {"kind": "path", "path": "/data/sd14", "family": "sd1"}
    cfg["promptsets"]["coco_prompts"] = {"source": "csv", "path": "/data/coco.csv"}
    cfg["scorers"].update(example["scorers"])
    cfg["quality_sets"] = {**cfg.get("quality_sets", {}), **example["quality_sets"]}
    validate_config(cfg, SCHEMA)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["scorers"].update(g={"kind": "clip_gender", "clip_model": "nope"}), "scorers.g.clip_model: unknown CLIP model 'nope'"),
    (lambda c: c["scorers"].update(g={"kind": "clip_gender"}), "'clip_model' is a required property"),
    (lambda c: c["scorers"].update(n={"kind": "nudenet", "treshold": 0.5}), "scorers.n.treshold: unknown key"),
    (lambda c: c["scorers"].update(h={"kind": "human"}), "'labels' is a required property"),
    (lambda c: c.update(clip_models={"x": {"arch": "ViT-B-32"}}), "clip_models.x"),
    (lambda c: c.update(quality_sets={"q": {"promptset": "nope", "models": ["toy"], "fid": {"extractor": "toy_random_conv"},
                                            "reference": {"source": "toy"}}}), "quality_sets.q.promptset: unknown promptset 'nope'"),
    (lambda c: c.update(quality_sets={"q": {"promptset": "toy_concepts", "models": ["toy"],
                                            "fid": {"extractor": "toy_random_conv"}}}), "quality_sets.q.reference: fid needs"),
])
def test_config_errors_name_the_key(change, message):
    cfg = _config()
    change(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, SCHEMA)


# --- workflow wiring ---------------------------------------------------------------------------

def test_dag_shares_embeddings_and_builds_quality(repo, snakemake_exe, tmp_path):
    """A dry run: two CLIP scorers on one image set need ONE embeddings job; black needs none;
    a quality set adds a reference render and one quality job per variant."""
    import subprocess

    cfg = load_yaml(repo / "tests" / "configs" / "nano.yaml")
    cfg["clip_models"] = {"tiny": {"weights": str(tmp_path / "clip")}}
    cfg["scorers"].update(gender={"kind": "clip_gender", "clip_model": "tiny"},
                          zs={"kind": "clip_safety", "clip_model": "tiny"}, black={"kind": "black"},
                          humans={"kind": "human", "labels": "labels/{model}-{variant}-{promptset}.csv"})
    cfg["evaluations"] = [{"model": "nano", "promptset": "concepts", "variants": ["base"],
                           "scorers": ["gender", "zs", "black", "humans"]}]
    (tmp_path / "work" / "labels").mkdir(parents=True)
    (tmp_path / "work" / "labels" / "nano-base-concepts.csv").write_text("file,a\n")
    cfg["quality_sets"] = {"q": {"promptset": "concepts", "models": ["nano"], "variants": ["base", "ed-erase"],
                                 "reference": {"source": "toy", "n": 20}, "fid": {"extractor": "toy_random_conv"},
                                 "clip_score": {"clip_model": "tiny"}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(tmp_path / "work"),
                           "--configfile", str(path), "-n", "--quiet", "rules"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts["embed_images"] == 2  # (base, concepts) shared by gender, zs, clip score; (ed-erase, concepts)
    assert counts["score_images"] == 4 and counts["quality_metrics"] == 2 and counts["render_reference"] == 1
