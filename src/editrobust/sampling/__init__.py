"""The sampling stage (rule `sample_promptset`): a model variant × a promptset -> PNGs + index.csv.

`generate.py` samples a loaded pipeline, one seeded generator per image; `safety_filter.py` is
the NSFW filter a promptset may ask for (off by default); `sample_promptset` is the rule's entry
point: it loads the variant, samples every (prompt, seed) of the promptset, applies the filter
and writes the image set atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from editrobust.devices import pick_device, torch_dtype
from editrobust.io import atomic_dir, save_png, write_csv
from editrobust.models.variants import load_pipeline
from editrobust.promptsets import expand_images, validate_promptset
from editrobust.schema import with_defaults

from . import safety_filter
from .generate import SamplingSettings, configure_for_sampling, generate, native_resolution

log = logging.getLogger(__name__)


def sample_promptset(variant_dir, promptset_csv, promptset: dict, sampling: dict, out_dir,
                     device: str = "auto") -> pd.DataFrame:
    """Generate every (prompt, seed) image of the promptset with the variant; returns the index.
    `sampling` is the model's `sampling` entry (SamplingSettings)."""
    prompts = validate_promptset(pd.read_csv(promptset_csv, dtype={"prompt_id": str}), str(promptset_csv))
    promptset = with_defaults("promptset", promptset)
    index = expand_images(prompts, promptset["images_per_prompt"], promptset["seed_offset"])
    settings = SamplingSettings.from_dict(sampling)
    device = pick_device(device)
    pipe = load_pipeline(variant_dir, device=device, dtype=torch_dtype(settings.dtype, "sampling.dtype"))
    configure_for_sampling(pipe, settings)
    log.info("%d images (%d prompts) on %s, %s", len(index), len(prompts), device, settings)
    nonfinite: list[bool] = []
    images = generate(pipe, index["prompt"].tolist(), index["seed"].tolist(), settings, nonfinite=nonfinite)
    # a decode that came out non-finite is kept black and said so: every score file and summary counts it
    index["decode"] = ["nonfinite" if bad else "ok" for bad in nonfinite]
    if any(nonfinite):
        log.warning("%d of %d images decoded to non-finite pixels (kept black, `decode: nonfinite` in index.csv); "
                    "an fp16 VAE overflows this way: sample in float32 or bfloat16, or use a fixed VAE",
                    sum(nonfinite), len(index))
    del pipe  # the filter may load a checker of its own onto the device
    # the NSFW filter (off unless the promptset asks): recorded in index.csv either way
    images = safety_filter.apply(images, index, promptset, variant_dir, device=device)
    with atomic_dir(out_dir) as tmp:
        for file, image in zip(index["file"], images):
            save_png(Path(tmp) / file, image)
        write_csv(Path(tmp) / "index.csv", index)
    return index


__all__ = ["SamplingSettings", "configure_for_sampling", "generate", "native_resolution", "sample_promptset"]
