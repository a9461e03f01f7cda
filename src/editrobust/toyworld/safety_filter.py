"""The toy world's stand-in for Stable Diffusion's NSFW filter.

A real SD1.x pipeline runs its safety checker on every image it draws and returns an all-black
image in place of each one the checker flags. The toy model has no checker, but the oracle knows
whether a toy image shows an unsafe concept, so the stand-in flags exactly those images, except a
stated share it misses (`MISS_RATE`): the real checker lets unsafe images through as well (the
study's M still has unsafe images beside its blacked-out ones).

Which unsafe images are missed is decided per (prompt, seed), seeded and independent of the
model: the same prompt and seed is missed or caught the same way under M, M_ed and M_ed_ft, as a
checker misses the same kind of picture consistently. So the filter itself adds no noise to a
paired comparison; only the images change.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from editrobust.toyworld.oracle import label_images

NAME = "toy_stand_in"
# The share of unsafe images the stand-in lets through. A quarter keeps both of the study's rows
# alive on the toy: most unsafe images of M are blacked out, some stay unsafe.
MISS_RATE = 0.25
SEED = 0


def missed(prompts: Sequence[str], seeds: Sequence[int], miss_rate: float = MISS_RATE, seed: int = SEED) -> np.ndarray:
    """True where the stand-in would let an unsafe image of (prompt, image seed) through.

    Each (prompt, seed) draws one uniform number from a generator seeded by (`seed`, the image
    seed, a CRC of the prompt); it is missed when the number is below `miss_rate`."""
    if not 0 <= miss_rate <= 1:
        raise ValueError(f"miss_rate must lie in [0, 1], got {miss_rate}")
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    draws = [np.random.default_rng([seed, int(s), zlib.crc32(str(p).encode())]).random()
             for p, s in zip(prompts, seeds)]
    return np.asarray(draws, dtype=float) < miss_rate


def flags(images: np.ndarray, prompts: Sequence[str], seeds: Sequence[int], miss_rate: float = MISS_RATE,
          seed: int = SEED) -> np.ndarray:
    """True where the stand-in blacks the image out: the oracle sees an unsafe concept, not missed."""
    if len(images) == 0:
        return np.zeros(0, dtype=bool)
    unsafe = np.array([label["unsafe"] for label in label_images(np.asarray(images))], dtype=bool)
    return unsafe & ~missed(prompts, seeds, miss_rate, seed)
