"""Batched, seed-exact sampling of a loaded pipeline.

Every image has its own `torch.Generator` seeded from (prompt, image index), created on the CPU
as UCE's evaluation scripts do, so an image depends only on its prompt, seed and the sampling
settings: never on the batch size, the batch it landed in, or the device's RNG. That is what
makes M_ed and M_ed_ft images pairable for Flip and paired statistics.

A fixed batch size reproduces images bit for bit. Across batch sizes, the CPU's batched matrix
kernels may round differently, which moves a pixel by at most one intensity level (tested).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)



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


# inference mode rather than no_grad: no autograd bookkeeping on any tensor, the same images bit for
# bit (`benchmarks/bench_sampling.py --grad-mode`); only arrays leave this function
@torch.inference_mode()
def generate(pipe, prompts: list[str], seeds: list[int], settings: SamplingSettings,
             progress: bool = True, desc: str = "sampling", nonfinite: list | None = None) -> np.ndarray:
    """Images (N, H, W, 3) uint8 for (prompt, seed) pairs, in order, batched.

    A batch that runs out of GPU memory is retried as two halves (the same images: one generator
    per image), down to one image, which then fails naming the memory figures. An image with
    non-finite pixels (e.g. an fp16 VAE overflowing) is an error, unless `nonfinite` is a list:
    then one flag per image is appended to it and such an image is kept black (its non-finite
    pixels zeroed), for the caller to count rather than score as if it were drawn."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    size = native_resolution(pipe)
    h, w = settings.height or size, settings.width or size
    out = []
    batches = range(0, len(prompts), settings.batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, mininterval=5):
        end = start + settings.batch_size
        images = _sample_batch(pipe, prompts[start:end], seeds[start:end], settings, h, w)
        finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
        if nonfinite is None and not finite.all():
            raise FloatingPointError(f"non-finite pixels in a batch starting at prompt {prompts[start]!r}")
        if nonfinite is not None:
            nonfinite.extend((~finite).tolist())
            images = np.nan_to_num(images, nan=0.0, posinf=0.0, neginf=0.0) * finite[:, None, None, None]
        out.append(np.clip(np.rint(images * 255), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def _memory_figures() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device"
    gib = 1024 ** 3
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return (f"{torch.cuda.memory_allocated() / gib:.1f} GiB allocated, {torch.cuda.memory_reserved() / gib:.1f} "
            f"GiB reserved, peak {torch.cuda.max_memory_allocated() / gib:.1f} GiB of {total / gib:.1f} GiB")


def _sample_batch(pipe, prompts: list[str], seeds: list[int], settings: SamplingSettings, h: int, w: int):
    """Float images of one batch; on out-of-memory, the two halves one after the other."""
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    kwargs = dict(prompt=prompts, num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                  generator=gens, height=h, width=w, output_type="np")
    if getattr(pipe, "transformer", None) is not None and getattr(pipe, "tokenizer_2", None) is not None:
        kwargs["max_sequence_length"] = settings.max_sequence_length or min(pipe.tokenizer_2.model_max_length, 512)
    if settings.negative_prompt is not None:
        kwargs["negative_prompt"] = [settings.negative_prompt] * len(prompts)
    try:
        return pipe(**kwargs).images
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        if len(prompts) == 1:
            raise MemoryError(f"sampling {prompts[0]!r} (seed {seeds[0]}) ran out of memory with a single image at "
                              f"{h}x{w}: {_memory_figures()}. Lower the resolution, or set the model's sampling "
                              "dtype to float16/bfloat16, attention_slicing or vae_slicing") from None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(prompts) // 2
        log.warning("out of memory on a batch of %d images (from prompt %r): retrying as %d + %d", len(prompts),
                    prompts[0], half, len(prompts) - half)
        first = _sample_batch(pipe, prompts[:half], seeds[:half], settings, h, w)
        return np.concatenate([first, _sample_batch(pipe, prompts[half:], seeds[half:], settings, h, w)])
