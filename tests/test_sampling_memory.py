"""Precision and memory options of the sampling stage: models.<name>.sampling.dtype,
attention_slicing, vae_slicing, vae_tiling."""

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers.models.attention_processor import SlicedAttnProcessor

import editrobust.sampling as sampling_stage
from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.models.base import prepare_base_model
from editrobust.models.builders import build_sd1_pipeline
from editrobust.models.tiny import build_tiny_flux_pipeline
from editrobust.sampling import SamplingSettings, configure_for_sampling, generate

from conftest import REPO, SCHEMA, TINY_SIZES

PROMPTS, SEEDS = ["a photo of a cat", "a red box"], [3, 4]


def test_slicing_options_are_applied_and_leave_images_unchanged(one_thread):
    plain = SamplingSettings(steps=2, batch_size=2)
    pipe = build_sd1_pipeline(TINY_SIZES, seed=0)
    before = generate(pipe, PROMPTS, SEEDS, plain, progress=False)

    sliced = SamplingSettings(steps=2, batch_size=2, attention_slicing="max", vae_slicing=True)
    configure_for_sampling(pipe, sliced)
    processors = pipe.unet.attn_processors
    assert processors and all(isinstance(p, SlicedAttnProcessor) for p in processors.values())
    assert pipe.vae.use_slicing and not pipe.vae.use_tiling
    after = generate(pipe, PROMPTS, SEEDS, sliced, progress=False)
    # the same computation in slices: equal up to float rounding (at most one intensity level)
    assert np.abs(before.astype(int) - after.astype(int)).max() <= 1

    configure_for_sampling(pipe, SamplingSettings(vae_tiling=True))
    assert pipe.vae.use_tiling


def test_attention_slicing_on_a_pipeline_without_sliceable_attention_is_an_error():
    with pytest.raises(ValueError, match="sampling.attention_slicing: FluxPipeline"):
        configure_for_sampling(build_tiny_flux_pipeline(), SamplingSettings(attention_slicing="auto"))


def test_the_sampling_stage_loads_the_model_in_the_configured_dtype(tmp_path, monkeypatch, one_thread):
    build_sd1_pipeline(TINY_SIZES, seed=0).save_pretrained(tmp_path / "tiny", safe_serialization=True)
    prepare_base_model("tiny", {"kind": "path", "path": str(tmp_path / "tiny")}, tmp_path / "base")
    (tmp_path / "prompts.csv").write_text("prompt_id,prompt\np0,a photo of a cat\n")

    seen = {}

    def recording_generate(pipe, *args, **kwargs):
        seen.update(unet=pipe.unet.dtype, vae=pipe.vae.dtype, text_encoder=pipe.text_encoder.dtype,
                    vae_slicing=pipe.vae.use_slicing)
        return generate(pipe, *args, **kwargs)

    monkeypatch.setattr(sampling_stage, "generate", recording_generate)
    sampling = {"steps": 1, "batch_size": 2, "dtype": "bfloat16", "vae_slicing": True}
    index = sampling_stage.sample_promptset(tmp_path / "base", tmp_path / "prompts.csv", {"images_per_prompt": 2},
                                            sampling, tmp_path / "samples", device="cpu")
    assert seen == dict(unet=torch.bfloat16, vae=torch.bfloat16, text_encoder=torch.bfloat16, vae_slicing=True)
    assert len(index) == 2 and all((tmp_path / "samples" / f).is_file() for f in index["file"])
    assert pd.read_csv(tmp_path / "samples" / "index.csv")["seed"].tolist() == index["seed"].tolist()


@pytest.mark.parametrize("key, value, message", [
    ("dtype", "float64", "models.toy.sampling.dtype"),
    ("attention_slicing", "half", "models.toy.sampling.attention_slicing"),
    ("attention_slicing", 0, "models.toy.sampling.attention_slicing"),
    ("vae_slicing", "yes", "models.toy.sampling.vae_slicing"),
])
def test_bad_memory_options_name_their_key(key, value, message):
    cfg = load_yaml(REPO / "config" / "config.yaml")
    cfg["models"]["toy"]["sampling"][key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, SCHEMA)


def test_good_memory_options_validate():
    cfg = load_yaml(REPO / "config" / "config.yaml")
    cfg["models"]["toy"]["sampling"].update(dtype="float16", attention_slicing="max", vae_slicing=True,
                                            vae_tiling=False)
    validate_config(cfg, SCHEMA)
    cfg["models"]["toy"]["sampling"]["attention_slicing"] = 2
    validate_config(cfg, SCHEMA)
