"""SD1.4, SDXL base 1.0 and FLUX.1-schnell at full size with random weights (nothing downloaded).

The configs are those of the released checkpoints (`unet/config.json`, `transformer/config.json`,
`text_encoder*/config.json`, `vae/config.json` of CompVis/stable-diffusion-v1-4,
stabilityai/stable-diffusion-xl-base-1.0 and black-forest-labs/FLUX.1-schnell), so speed and
memory measured on them are those of the real models; only the weights are random. Parameter
counts (`parameter_counts`, on the meta device): SD1.4 UNet 859.5 M, SDXL UNet 2,567.5 M and
bigG text encoder 694.7 M, FLUX.1-schnell transformer 11,891.2 M (FLUX.1-dev's 11,901.4 M less its
guidance embedder), T5-XXL encoder 4,833.1 M (4,762.3 M with T5's own vocabulary, see below).

Tokenizers are the real CLIP BPE (`models.tiny.clip_tokenizer`) with the real length of 77. T5's
sentencepiece tokenizer is not available offline, so FLUX's `tokenizer_2` is a CLIP BPE tokenizer
of T5's length (256 for schnell) and the T5 embedding has CLIP's 49,408 rows instead of 32,128
(+70.8 M parameters, 1.5 % of T5; no effect on speed beyond the embedding lookup).

`build_random_pipeline(arch, size="tiny")` gives the tiny test pipelines of the same classes
(`models.builders` / `models.tiny`), for running the same code on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler,
                       FluxPipeline, FluxTransformer2DModel, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from editrobust.models.builders import SD1_SCHEDULE
from editrobust.models.tiny import CLIP_VOCAB, SDXL_SCHEDULE, clip_tokenizer

ARCHITECTURES = ("sd14", "sdxl", "flux_schnell")
CLIP_LENGTH = 77
FLUX_SCHNELL_T5_LENGTH = 256  # schnell's max_sequence_length

# Sizes of the tiny SD1.x test model (tests/conftest.py TINY_SIZES).
TINY_SD1_SIZES = dict(vae_channels=[8, 8, 8], unet_channels=[16, 16], norm_num_groups=8, unet_head_dim=4,
                      text_hidden=32, text_layers=2, text_heads=2, text_intermediate=64)


@dataclass(frozen=True)
class Architecture:
    name: str
    resolution: int  # native image size (px)
    latent_channels: int


SPECS = {
    "sd14": Architecture("sd14", 512, 4),
    "sdxl": Architecture("sdxl", 1024, 4),
    "flux_schnell": Architecture("flux_schnell", 1024, 16),
}
TINY_SPECS = {"sd14": Architecture("sd14", 32, 4), "sdxl": Architecture("sdxl", 32, 4),
              "flux_schnell": Architecture("flux_schnell", 32, 16)}


# --------------------------------------------------------------------------------------- components
def clip_l_text_encoder() -> CLIPTextModel:
    """openai/clip-vit-large-patch14's text tower (SD1.4, SDXL `text_encoder`, FLUX `text_encoder`)."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=CLIP_VOCAB, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=CLIP_LENGTH, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1))


def clip_bigg_text_encoder() -> CLIPTextModelWithProjection:
    """OpenCLIP ViT-bigG/14's text tower (SDXL `text_encoder_2`)."""
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=CLIP_VOCAB, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
        max_position_embeddings=CLIP_LENGTH, hidden_act="gelu", projection_dim=1280,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1))


def t5_xxl_encoder() -> T5EncoderModel:
    """google/t5-v1_1-xxl's encoder (FLUX `text_encoder_2`), vocabulary sized to the CLIP stand-in tokenizer."""
    return T5EncoderModel(T5Config(
        vocab_size=CLIP_VOCAB, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
        pad_token_id=49407, eos_token_id=49407, decoder_start_token_id=49407))


def sd_vae(latent_channels: int = 4, sample_size: int = 512, **kw) -> AutoencoderKL:
    """The SD/SDXL/FLUX autoencoder (128-256-512-512, 2 layers per block)."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(128, 256, 512, 512),
        layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=32, sample_size=sample_size, **kw)


def sd14_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)


def sdxl_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
        cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816, norm_num_groups=32)


def flux_schnell_transformer() -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False,
        axes_dims_rope=(16, 56, 56))


# ---------------------------------------------------------------------------------------- pipelines
def _build(factory: Callable[[], torch.nn.Module], device, dtype) -> torch.nn.Module:
    """Create a module directly on `device` (random initialisation runs there) and cast it at once,
    so the float32 copy of only one component exists at a time."""
    with torch.device(device):
        module = factory()
    if dtype != torch.float32:
        module = module.to(dtype=dtype)
    return module.eval()


def _full_size(arch: str, device, dtype):
    b = lambda factory: _build(factory, device, dtype)  # noqa: E731
    if arch == "sd14":
        return StableDiffusionPipeline(
            vae=b(lambda: sd_vae(4, 512, scaling_factor=0.18215)), text_encoder=b(clip_l_text_encoder),
            tokenizer=clip_tokenizer(CLIP_LENGTH), unet=b(sd14_unet), scheduler=DDIMScheduler(**SD1_SCHEDULE),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if arch == "sdxl":
        return StableDiffusionXLPipeline(
            vae=b(lambda: sd_vae(4, 1024, scaling_factor=0.13025, force_upcast=True)),
            text_encoder=b(clip_l_text_encoder), text_encoder_2=b(clip_bigg_text_encoder),
            tokenizer=clip_tokenizer(CLIP_LENGTH), tokenizer_2=clip_tokenizer(CLIP_LENGTH, pad_token="!"),
            unet=b(sdxl_unet), scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULE), force_zeros_for_empty_prompt=True,
            add_watermarker=False)
    if arch == "flux_schnell":
        return FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False),
            vae=b(lambda: sd_vae(16, 1024, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159,
                                 scaling_factor=0.3611)),
            text_encoder=b(clip_l_text_encoder), tokenizer=clip_tokenizer(CLIP_LENGTH),
            text_encoder_2=b(t5_xxl_encoder), tokenizer_2=clip_tokenizer(FLUX_SCHNELL_T5_LENGTH),
            transformer=b(flux_schnell_transformer))
    raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")


def _tiny(arch: str, seed: int = 0):
    from editrobust.models.builders import build_sd1_pipeline
    from editrobust.models.tiny import build_tiny_flux_pipeline, build_tiny_sdxl_pipeline

    builders = {"sd14": lambda: build_sd1_pipeline(TINY_SD1_SIZES, seed=seed),
                "sdxl": lambda: build_tiny_sdxl_pipeline(seed), "flux_schnell": lambda: build_tiny_flux_pipeline(seed)}
    if arch not in builders:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return builders[arch]()


def build_random_pipeline(arch: str, size: str = "full", device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32, seed: int = 0):
    """A randomly initialised pipeline of `arch` ("sd14", "sdxl", "flux_schnell") at `size`
    ("full": the released model's shapes; "tiny": the test models), on `device` in `dtype`."""
    torch.manual_seed(seed)
    if size == "full":
        pipe = _full_size(arch, device, dtype)
    elif size == "tiny":
        pipe = _tiny(arch, seed).to(device=device, dtype=dtype)
    else:
        raise ValueError(f"size must be 'full' or 'tiny', not {size!r}")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def spec(arch: str, size: str = "full") -> Architecture:
    return (SPECS if size == "full" else TINY_SPECS)[arch]


def meta_pipeline(arch: str):
    """The full-size `arch` on the meta device: every module and shape, no memory, no weights
    (parameter counts, the pre-flight's sizes; a fine-tuner's `setup` runs on it too)."""
    return _full_size(arch, "meta", torch.float32)


def parameter_counts(arch: str) -> dict[str, int]:
    """Parameters per component of the full-size `arch`, built on the meta device (no memory)."""
    pipe = meta_pipeline(arch)
    return {name: sum(p.numel() for p in module.parameters())
            for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}
