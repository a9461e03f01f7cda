"""The sampling stage: a model variant x a promptset -> PNGs + index.csv, written atomically."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from editrobust.io import atomic_dir, save_png, write_csv
from editrobust.models.variants import load_pipeline
from editrobust.promptsets import expand_images, validate_promptset
from editrobust.sampling import SamplingSettings, configure_for_sampling, generate, pick_device, torch_dtype

log = logging.getLogger(__name__)


def sample_promptset(variant_dir, promptset_csv, promptset: dict, sampling: dict, out_dir) -> pd.DataFrame:
    """Generate every (prompt, seed) image of the promptset with the variant; returns the index."""
    prompts = validate_promptset(pd.read_csv(promptset_csv, dtype={"prompt_id": str}), str(promptset_csv))
    index = expand_images(prompts, promptset.get("images_per_prompt", 32), promptset.get("seed_offset", 0))
    settings = SamplingSettings.from_dict(sampling.get("sampling"))
    device = pick_device(sampling.get("device", "auto"))
    pipe = configure_for_sampling(load_pipeline(variant_dir, device=device, dtype=torch_dtype(settings.dtype)),
                                  settings)
    log.info("%d images (%d prompts) on %s, %s", len(index), len(prompts), device, settings)
    images = generate(pipe, index["prompt"].tolist(), index["seed"].tolist(), settings)
    with atomic_dir(out_dir) as tmp:
        for file, image in zip(index["file"], images):
            save_png(Path(tmp) / file, image)
        write_csv(Path(tmp) / "index.csv", index)
    return index
