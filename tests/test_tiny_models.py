"""The tiny random SDXL and FLUX pipelines build fast, sample, and have the modules the editors touch."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

from editrobust.models.tiny import (FLUX_CLIP_HIDDEN, FLUX_T5_HIDDEN, SDXL_TE1_HIDDEN, SDXL_TE2_HIDDEN, T5_MAX_LENGTH,
                                    build_tiny_flux_pipeline, build_tiny_sdxl_pipeline)


pytestmark = pytest.mark.usefixtures("one_thread")


def _timed(build):
    start = time.perf_counter()
    pipe = build(seed=0)
    return pipe, time.perf_counter() - start


@pytest.fixture(scope="module")
def sdxl():
    return _timed(build_tiny_sdxl_pipeline)


@pytest.fixture(scope="module")
def flux():
    return _timed(build_tiny_flux_pipeline)


def _check_images(images):
    assert images.shape == (1, 32, 32, 3)
    assert np.isfinite(images).all()


def test_sdxl_builds_fast_and_samples(sdxl):
    pipe, seconds = sdxl
    assert seconds < 3.0 + 2.0  # < 3 s on an idle CPU; slack for a loaded test machine
    _check_images(pipe("a photo of a cat", num_inference_steps=2, height=32, width=32, output_type="np").images)


def test_sdxl_has_real_module_names(sdxl):
    pipe, _ = sdxl
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert pipe.unet.config.addition_embed_type == "text_time"
    cross = {n: m for n, m in pipe.unet.named_modules() if "attn2" in n and n.endswith(("to_k", "to_v"))}
    assert len(cross) >= 8 and all(m.in_features == SDXL_TE1_HIDDEN + SDXL_TE2_HIDDEN for m in cross.values())
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k" in cross
    # ReFACT's targets in both encoders (transformers 5 drops `text_model.` in CLIPTextModel)
    assert "encoder.layers.3.mlp.fc2.weight" in pipe.text_encoder.state_dict()
    assert "text_model.encoder.layers.3.mlp.fc2.weight" in pipe.text_encoder_2.state_dict()
    # SDXL's tokenizers: CLIP-L pads with the end token, bigG with '!'
    assert pipe.tokenizer.pad_token == "<|endoftext|>" and pipe.tokenizer_2.pad_token == "!"


def test_sdxl_prompt_embeds_concatenate_both_encoders(sdxl):
    pipe, _ = sdxl
    embeds, _, pooled, _ = pipe.encode_prompt("a cat", device="cpu", do_classifier_free_guidance=False)
    assert embeds.shape[-1] == SDXL_TE1_HIDDEN + SDXL_TE2_HIDDEN
    assert pooled.shape[-1] == pipe.text_encoder_2.config.projection_dim


def test_flux_builds_fast_and_samples(flux):
    pipe, seconds = flux
    assert seconds < 3.0 + 2.0
    kw = dict(num_inference_steps=2, height=32, width=32, output_type="np")
    _check_images(pipe("a photo of a cat", max_sequence_length=T5_MAX_LENGTH, **kw).images)
    _check_images(pipe("a photo of a cat", **kw).images)  # the pipeline's default T5 length works too


def test_flux_has_real_module_names(flux):
    pipe, _ = flux
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.text_encoder_2, T5EncoderModel)
    assert pipe.vae.config.latent_channels == 16
    assert not pipe.transformer.config.guidance_embeds  # schnell
    assert pipe.transformer.context_embedder.in_features == FLUX_T5_HIDDEN
    assert pipe.transformer.time_text_embed.text_embedder.linear_1.in_features == FLUX_CLIP_HIDDEN
    assert pipe.transformer.context_embedder.bias is not None  # the bias UCE leaves alone


def test_builders_are_deterministic_and_in_eval_mode():
    a, b = build_tiny_flux_pipeline(seed=3), build_tiny_flux_pipeline(seed=3)
    assert torch.equal(a.transformer.context_embedder.weight, b.transformer.context_embedder.weight)
    assert not build_tiny_flux_pipeline(seed=4).transformer.context_embedder.weight.equal(
        a.transformer.context_embedder.weight)
    assert not any(m.training for m in (a.text_encoder, a.text_encoder_2, a.transformer, a.vae))
