"""`models.<name>: {kind: random}`: a released architecture with seeded random weights, written once
as a base variant that every later stage loads like any other."""

import json

import pytest
import torch

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.models.base import prepare_base_model
from editrobust.models.variants import load_pipeline
from editrobust.workflow import Rules

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family, arch_class", [("sd1", "StableDiffusionPipeline"),
                                                ("sdxl", "StableDiffusionXLPipeline"),
                                                ("flux", "FluxPipeline")])
def test_a_random_model_is_written_once_and_loads_as_a_base(tmp_path, family, arch_class):
    entry = {"kind": "random", "family": family, "size": "tiny", "seed": 3}
    info = prepare_base_model("rnd", entry, tmp_path / "rnd" / "base")
    assert info["source"] == {"type": "random", "family": family, "size": "tiny", "seed": 3}
    assert (tmp_path / "rnd/base/model_index.json").is_file()
    assert json.loads((tmp_path / "rnd/base/variant.json").read_text())["checksums"]
    pipe = load_pipeline(tmp_path / "rnd" / "base")
    assert type(pipe).__name__ == arch_class
    # seeded: the same seed gives the same weights, another seed other weights
    again = prepare_base_model("rnd", entry, tmp_path / "again" / "base")
    other = prepare_base_model("rnd", dict(entry, seed=4), tmp_path / "other" / "base")
    assert again["checksums"] == info["checksums"] and other["checksums"] != info["checksums"]
    te = load_pipeline(tmp_path / "other" / "base").text_encoder
    assert not torch.equal(next(pipe.text_encoder.parameters()), next(te.parameters()))


def test_a_random_model_is_sampled_in_its_dtype(tmp_path):
    prepare_base_model("rnd", {"kind": "random", "family": "sd1", "size": "tiny", "dtype": "bfloat16"},
                       tmp_path / "rnd" / "base")
    assert load_pipeline(tmp_path / "rnd" / "base").unet.dtype == torch.bfloat16
    assert load_pipeline(tmp_path / "rnd" / "base", dtype=torch.float32).unet.dtype == torch.float32


def test_the_config_takes_a_random_model_and_names_a_wrong_key(repo):
    config = load_yaml(repo / "tests/configs/nano.yaml")
    config["models"]["rnd"] = {"kind": "random", "family": "sdxl"}
    out = validate_config(config)
    assert out["models"]["rnd"]["size"] == "full" and out["models"]["rnd"]["seed"] == 0
    assert Rules(out).base_model_inputs(type("W", (), {"model": "rnd"})()) == {}  # nothing to fetch
    config["models"]["rnd"] = {"kind": "random", "family": "sd2"}
    with pytest.raises(ConfigError, match="models.rnd"):
        validate_config(config)
    config["models"]["rnd"] = {"kind": "random", "family": "sd1", "hub_id": "a/b"}
    with pytest.raises(ConfigError, match="models.rnd"):
        validate_config(config)


def test_a_random_clip_model_is_seeded_and_reads_no_file():
    from editrobust.scoring.embeddings import describe, load_clip, resolve

    spec = {"name": "rnd", "arch": "ViT-B-32", "random_seed": 1}
    assert resolve(spec) == ("ViT-B-32", None, {}) and describe(spec) == "rnd(ViT-B-32:random-seed-1)"
    a, b, c = load_clip(spec), load_clip(spec), load_clip(dict(spec, random_seed=2))
    first = [p for p in a.model.parameters()][:3]
    assert all(torch.equal(x, y) for x, y in zip(first, b.model.parameters()))
    assert not torch.equal(first[0], next(c.model.parameters()))
