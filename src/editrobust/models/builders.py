"""Build SD1.x-architecture pipelines of any size from a small dict of sizes.

The toy model (trained on the toy world) and the tiny random models of the tests are both real
`StableDiffusionPipeline`s: the same classes and module names as SD1.4 (`down_blocks.0.attentions.0
.transformer_blocks.0.attn2.to_k`, `encoder.layers.2.mlp.fc2`, ...), only smaller. So
every editor, fine-tuner and sampler runs unchanged on them and on SD1.4.
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from editrobust.models.tokenizer import build_clip_tokenizer

# SD1.4's noise schedule (scheduler_config.json of CompVis/stable-diffusion-v1-4).
SD1_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


@dataclass
class SD1Sizes:
    """Sizes of an SD1.x-architecture model. Defaults are the toy model (32x32 px, 8x8x4 latents)."""

    resolution: int = 32
    vae_channels: list[int] = field(default_factory=lambda: [16, 32, 32])  # 3 blocks -> 4x downsampling
    latent_channels: int = 4
    unet_channels: list[int] = field(default_factory=lambda: [32, 64])
    unet_layers_per_block: int = 1
    unet_head_dim: int = 8
    norm_num_groups: int = 16
    text_hidden: int = 64
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 256
    max_length: int = 16  # tokenizer model_max_length and position embeddings

    @classmethod
    def from_dict(cls, d: dict | None) -> "SD1Sizes":
        return cls(**(d or {}))

    def to_dict(self) -> dict:
        return asdict(self)


def build_text_encoder(s: SD1Sizes) -> CLIPTextModel:
    cfg = CLIPTextConfig(
        vocab_size=49408, hidden_size=s.text_hidden, intermediate_size=s.text_intermediate,
        num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads,
        max_position_embeddings=s.max_length, hidden_act="quick_gelu", projection_dim=s.text_hidden,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    return CLIPTextModel(cfg)


def build_vae(s: SD1Sizes) -> AutoencoderKL:
    n = len(s.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=s.latent_channels,
        block_out_channels=tuple(s.vae_channels), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        norm_num_groups=min(16, min(s.vae_channels)), sample_size=s.resolution,
    )


def build_unet(s: SD1Sizes) -> UNet2DConditionModel:
    n = len(s.unet_channels)
    latent = s.resolution // 2 ** (len(s.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=latent, in_channels=s.latent_channels, out_channels=s.latent_channels,
        block_out_channels=tuple(s.unet_channels), layers_per_block=s.unet_layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=s.text_hidden,
        attention_head_dim=s.unet_head_dim, norm_num_groups=s.norm_num_groups,
    )


def build_sd1_pipeline(sizes: SD1Sizes | dict | None = None, seed: int = 0) -> StableDiffusionPipeline:
    """A randomly initialised SD1.x pipeline (DDIM sampler, no safety checker)."""
    s = sizes if isinstance(sizes, SD1Sizes) else SD1Sizes.from_dict(sizes)
    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(
        vae=build_vae(s), text_encoder=build_text_encoder(s), tokenizer=build_clip_tokenizer(s.max_length),
        unet=build_unet(s), scheduler=DDIMScheduler(**SD1_SCHEDULE), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**{k: v for k, v in SD1_SCHEDULE.items() if k not in ("set_alpha_to_one",)})
