"""Batched, seed-exact sampling of a loaded pipeline.

Every image has its own `torch.Generator` seeded from (prompt, image index), created on the CPU
as UCE's evaluation scripts do, so an image depends only on its prompt, seed and the sampling
settings: never on the batch size, the batch it landed in, or the device's RNG. That is what
makes M_ed and M_ed_ft images pairable for Flip and paired statistics.

A fixed batch size reproduces images bit for bit. Across batch sizes, the CPU's batched matrix
kernels may round differently, which moves a pixel by at most one intensity level (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np
import torch
from tqdm.auto import tqdm



@dataclass
class SamplingSettings:
    steps: int = 20
    guidance: float = 4.0
    height: int | None = None  # None: the model's native resolution
    width: int | None = None
    batch_size: int = 32
    negative_prompt: str | None = None
    # FLUX only: T5 prompt length (schnell: <= 256). None: min(tokenizer_2 length, 512), the length
    # the UCE editor embeds concepts with, since T5 runs without a mask and padding changes embeddings.
    max_sequence_length: int | None = None
    # Precision and memory of the sampling stage (see configure_for_sampling).
    dtype: str = "float32"
    attention_slicing: bool | str | int = False  # False, "auto", "max" or a slice size
    vae_slicing: bool = False
    vae_tiling: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> "SamplingSettings":
        return cls(**(d or {}))

    def to_dict(self) -> dict:
        return asdict(self)


def configure_for_sampling(pipe, settings: SamplingSettings):
    """Apply the memory options of `settings` to a loaded pipeline (in place; returns it).

    Attention slicing computes attention a slice of heads at a time (less peak memory, slower than
    PyTorch's fused attention, which it replaces); VAE slicing decodes a batch one image at a time
    and VAE tiling decodes large images in overlapping tiles. Slicing leaves images unchanged up
    to float rounding; tiling can change pixels near tile seams. The dtype is chosen when the
    pipeline is loaded (`load_pipeline(..., dtype=devices.torch_dtype(settings.dtype))`).
    """
    if settings.attention_slicing is not False:
        if not any(hasattr(m, "set_attention_slice") for m in pipe.components.values()):
            raise ValueError(f"sampling.attention_slicing: {type(pipe).__name__} has no sliceable attention "
                             "(a UNet pipeline such as SD1.x or SDXL has); remove the option")
        pipe.enable_attention_slicing("auto" if settings.attention_slicing is True else settings.attention_slicing)
    if settings.vae_slicing:
        pipe.vae.enable_slicing()
    if settings.vae_tiling:
        pipe.vae.enable_tiling()
    return pipe


def native_resolution(pipe) -> int:
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        return unet.config.sample_size * pipe.vae_scale_factor
    return pipe.default_sample_size * pipe.vae_scale_factor


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], settings: SamplingSettings,
             progress: bool = True, desc: str = "sampling") -> np.ndarray:
    """Images (N, H, W, 3) uint8 for (prompt, seed) pairs, in order, batched."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    size = native_resolution(pipe)
    h, w = settings.height or size, settings.width or size
    out = []
    batches = range(0, len(prompts), settings.batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, mininterval=5):
        bp = prompts[start:start + settings.batch_size]
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[start:start + settings.batch_size]]
        kwargs = dict(prompt=bp, num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                      generator=gens, height=h, width=w, output_type="np")
        if getattr(pipe, "transformer", None) is not None and getattr(pipe, "tokenizer_2", None) is not None:
            kwargs["max_sequence_length"] = settings.max_sequence_length or min(pipe.tokenizer_2.model_max_length, 512)
        if settings.negative_prompt is not None:
            kwargs["negative_prompt"] = [settings.negative_prompt] * len(bp)
        images = pipe(**kwargs).images
        if not np.all(np.isfinite(images)):
            raise FloatingPointError(f"non-finite pixels in a batch starting at prompt {bp[0]!r}")
        out.append(np.clip(np.rint(images * 255), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)
