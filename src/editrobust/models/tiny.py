"""Tiny random SDXL and FLUX pipelines for tests (no hub, CPU, a second to build).

They are the real diffusers pipeline classes with real module names, only tiny, so the editors
touch exactly the tensors they would touch on SDXL base or FLUX.1-schnell:

- SDXL: `unet.*.attn2.to_k/to_v`, whose input width is the concatenation of both text encoders'
  hidden sizes (768 + 1280 = 2048 on SDXL; 32 + 64 = 96 here), and the text encoders'
  `encoder.layers.{L}.mlp.fc2` (CLIPTextModel, transformers 5) and
  `text_model.encoder.layers.{L}.mlp.fc2` (CLIPTextModelWithProjection).
- FLUX: `transformer.context_embedder` (T5 width -> inner width) and
  `transformer.time_text_embed.text_embedder.linear_1` (pooled CLIP width -> inner width).

All widths differ from each other on purpose, so a tensor fed to the wrong map fails loudly.

Tokenizers. Both CLIP tokenizers are the real CLIP BPE (`models.tokenizer`), with SDXL's
conventions: `tokenizer` pads with `<|endoftext|>` (CLIP-L), `tokenizer_2` pads with `!` (bigG).
FLUX's `tokenizer_2` should be T5's sentencepiece tokenizer, which is not available offline. We use
a CLIP BPE tokenizer in its place (decision): it has a real vocabulary, so concepts split into real
sub-words, and UCE's index rule `attention_mask.sum() - 2` still picks the last sub-word of the
concept (CLIP: `[BOS] ... last </w> [EOS] pad`, T5: `... last </s> pad`). Two differences from
T5 to keep in mind: a BOS token leads the sequence, and `''` maps to index 0 (BOS) where T5 would
give index -1. The tiny T5 encoder's vocabulary is sized to the CLIP vocabulary.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                       FluxTransformer2DModel, StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config,
                          T5EncoderModel)

from editrobust.models.tokenizer import BOS, EOS, clip_bpe_vocab

CLIP_VOCAB = 49408
TEXT_MAX_LENGTH = 16  # CLIP tokenizers and position embeddings (77 on the real models)
T5_MAX_LENGTH = 32  # FLUX tokenizer_2's model_max_length (512 on FLUX); pass it as max_sequence_length

# SDXL's sampler and noise schedule (scheduler_config.json of stabilityai/stable-diffusion-xl-base-1.0).
SDXL_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     prediction_type="epsilon", timestep_spacing="leading", steps_offset=1)


@lru_cache(maxsize=1)
def _clip_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    # Reading and splitting the gzipped merges is most of a tokenizer's build time: do it once.
    vocab, merges = clip_bpe_vocab()
    return vocab, tuple(merges)


def clip_tokenizer(model_max_length: int = TEXT_MAX_LENGTH, pad_token: str = EOS) -> CLIPTokenizer:
    """Real CLIP BPE tokenizer; `pad_token='!'` reproduces SDXL's `tokenizer_2`."""
    vocab, merges = _clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length,
                         bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=pad_token)


def _clip_text_config(hidden: int, layers: int, act: str, pad_id: int, projection_dim: int | None = None,
                      heads: int = 4) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=TEXT_MAX_LENGTH, hidden_act=act,
        projection_dim=projection_dim or hidden, bos_token_id=49406, eos_token_id=49407, pad_token_id=pad_id,
    )


def _tiny_vae(latent_channels: int, **kw) -> AutoencoderKL:
    # 3 blocks: 4x downsampling, so a 32 px image has 8x8 latents.
    ch = (16, 32, 32)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=ch, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=16, sample_size=32, **kw,
    )


def _ready(pipe):
    # Modules built from configs start in train mode; `from_pretrained` would give eval mode.
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------- SDXL
SDXL_TE1_HIDDEN, SDXL_TE2_HIDDEN, SDXL_TE2_PROJECTION = 32, 64, 40
SDXL_TIME_EMBED = 8  # addition_time_embed_dim; SDXL has 6 micro-conditioning numbers


def _tiny_sdxl_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),  # SDXL's config uses this field for the number of heads
        use_linear_projection=True, norm_num_groups=16,
        cross_attention_dim=SDXL_TE1_HIDDEN + SDXL_TE2_HIDDEN,
        addition_embed_type="text_time", addition_time_embed_dim=SDXL_TIME_EMBED,
        # the add-embedding sees the 6 time ids (each embedded to SDXL_TIME_EMBED) and the pooled text
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED + SDXL_TE2_PROJECTION,
    )


def build_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A random SDXL-architecture pipeline: text encoders 32|64 wide (cross-attention 96), 32 px images."""
    torch.manual_seed(seed)
    te1 = CLIPTextModel(_clip_text_config(SDXL_TE1_HIDDEN, 4, "quick_gelu", pad_id=49407))
    # `!` (id 0) pads bigG's tokenizer; its encoder returns the projected pooled output (`text_embeds`).
    te2 = CLIPTextModelWithProjection(_clip_text_config(SDXL_TE2_HIDDEN, 4, "gelu", pad_id=0,
                                                        projection_dim=SDXL_TE2_PROJECTION))
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(4), text_encoder=te1, text_encoder_2=te2,
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=_tiny_sdxl_unet(), scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULE),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    return _ready(pipe)


# ---------------------------------------------------------------------------------------------- FLUX
FLUX_CLIP_HIDDEN, FLUX_T5_HIDDEN, FLUX_LATENT_CHANNELS = 48, 40, 16


def _tiny_t5() -> T5EncoderModel:
    cfg = T5Config(
        vocab_size=CLIP_VOCAB, d_model=FLUX_T5_HIDDEN, d_kv=8, d_ff=80, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
        dropout_rate=0.0,  # T5's default 0.1 would make prompt embeddings random in train mode
        pad_token_id=49407, eos_token_id=49407, decoder_start_token_id=49407,
    )
    return T5EncoderModel(cfg)


def _tiny_flux_transformer() -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4 * FLUX_LATENT_CHANNELS,  # latents are packed 2x2
        num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=FLUX_T5_HIDDEN, pooled_projection_dim=FLUX_CLIP_HIDDEN,
        guidance_embeds=False,  # schnell
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
    )


def build_tiny_flux_pipeline(seed: int = 0) -> FluxPipeline:
    """A random FLUX.1-schnell-architecture pipeline (no guidance embedding), 32 px images.

    Sample with `max_sequence_length=T5_MAX_LENGTH` to match what the editors embed by default.
    """
    torch.manual_seed(seed)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False),
        # FLUX's VAE has no quant convs and shifts/scales latents (values of FLUX.1's vae config)
        vae=_tiny_vae(FLUX_LATENT_CHANNELS, use_quant_conv=False, use_post_quant_conv=False,
                      shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=CLIPTextModel(_clip_text_config(FLUX_CLIP_HIDDEN, 2, "quick_gelu", pad_id=49407)),
        tokenizer=clip_tokenizer(),
        text_encoder_2=_tiny_t5(),
        tokenizer_2=clip_tokenizer(T5_MAX_LENGTH),  # stands in for T5's tokenizer; see module docstring
        transformer=_tiny_flux_transformer(),
    )
    return _ready(pipe)
