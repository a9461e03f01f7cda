import json

import numpy as np
import pytest
import torch

from editrobust.models.base import prepare_base_model
from editrobust.models.variants import load_pipeline, read_variant
from editrobust.sampling import SamplingSettings, generate

from conftest import TINY_SIZES


def test_local_diffusers_directory_is_registered_not_copied(tiny_sd1, tmp_path):
    src = tmp_path / "my_checkpoint"
    tiny_sd1.save_pretrained(src, safe_serialization=True)
    out = tmp_path / "results" / "base"
    info = prepare_base_model("mine", {"kind": "path", "path": str(src)}, out)
    assert info["source"]["path"] == str(src.resolve())
    assert sorted(p.name for p in out.iterdir()) == ["variant.json"]
    assert "unet/diffusion_pytorch_model.safetensors" in read_variant(out)["source"]["checksums"]
    pipe = load_pipeline(out)
    s = SamplingSettings(steps=2, batch_size=2)
    a = generate(pipe, ["a lime"], [0], s, progress=False)
    b = generate(tiny_sd1, ["a lime"], [0], s, progress=False)
    assert np.array_equal(a, b)


def test_missing_or_pickled_local_models_are_rejected(tiny_sd1, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        prepare_base_model("mine", {"kind": "path", "path": str(tmp_path / "nothing")}, tmp_path / "o")
    src = tmp_path / "pickled"
    tiny_sd1.save_pretrained(src, safe_serialization=True)
    unet_weights = src / "unet" / "diffusion_pytorch_model.safetensors"
    unet_weights.unlink()
    torch.save(tiny_sd1.unet.state_dict(), src / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="unet: weights are not in safetensors format"):
        prepare_base_model("mine", {"kind": "path", "path": str(src)}, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_tiny_toy_training_writes_a_standard_pipeline(tmp_path):
    entry = {"kind": "toy", "toy": {"dataset_size": 64, "vae_steps": 2, "vae_batch": 4, "steps": 2, "batch": 4,
                                    "text_pretrain_steps": 2,
                                    "eval_images_per_concept": 1,
                                    "sizes": TINY_SIZES},
             "sampling": {"steps": 2}}
    out = tmp_path / "base"
    prepare_base_model("toy", entry, out)
    info = json.loads((out / "variant.json").read_text())
    assert info["kind"] == "base" and info["params"] == entry and "torch" in info["versions"]
    assert {"unet/diffusion_pytorch_model.safetensors", "training_log.csv", "oracle_eval.json"} <= set(info["checksums"])
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    assert pipe.tokenizer.model_max_length == 16 and len(pipe.tokenizer) == 49408
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the toy latents


def test_nan_loss_stops_training_with_a_clear_error(monkeypatch):
    from editrobust.models import toy
    from editrobust.models.toy import ToyTrainingConfig, train_toy_pipeline

    def poisoned(images):
        x = images_to_tensor(images)
        x[0, 0, 0, 0] = float("nan")
        return x

    images_to_tensor = toy.images_to_tensor
    monkeypatch.setattr(toy, "images_to_tensor", poisoned)
    # no subject renders: every VAE batch then holds a poisoned image
    cfg = ToyTrainingConfig.from_dict({"dataset_size": 4, "vae_steps": 3, "vae_batch": 4, "text_pretrain_steps": 0,
                                       "steps": 1, "batch": 4, "vae_subject_images": 0,
                                       "sizes": TINY_SIZES})
    with pytest.raises(FloatingPointError, match="toy VAE: loss became nan"):
        train_toy_pipeline(cfg)


def test_text_encoder_warm_up_learns_what_captions_say():
    from editrobust.models.builders import build_sd1_pipeline
    from editrobust.models.toy import ToyTrainingConfig, caption_targets, pretrain_text_encoder
    from editrobust.toyworld.captions import sample_base_world

    _, captions, scenes = sample_base_world(512, seed=0)
    targets = caption_targets(captions, scenes)
    assert set(targets) == {"concept", "gender", "context", "style"}
    i = captions.index(next(c for c in captions if " female " in f" {c} "))
    assert targets["gender"][i] == 2
    pipe = build_sd1_pipeline(dict(text_hidden=32, text_layers=2, text_heads=2, text_intermediate=64), seed=0)
    ids = pipe.tokenizer(captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    history = []
    pretrain_text_encoder(pipe.text_encoder, ids, targets,
                          ToyTrainingConfig(text_pretrain_steps=60, text_lr=3e-3), history)
    losses = [h["loss"] for h in history]
    assert losses[-1] < 0.5 * losses[0]
    assert not pipe.text_encoder.training
