"""The NSFW filter of the sampling stage: which images a pipeline's safety checker blacks out.

A promptset asks for it (`promptsets.<name>.safety_filter: true`); it is off by default. With it
on, every image is shown to the model's own filter after decoding and each one it flags is
replaced by an all-black image, as diffusers' StableDiffusionPipeline does with its
`safety_checker`; the `black` scorer and every safety scorer then count it as `black`. What
"the model's own filter" is:

- an SD1.x pipeline whose `model_index.json` names a `safety_checker` (SD1.4 ships
  CompVis's StableDiffusionSafetyChecker in `safety_checker/` + `feature_extractor/`): that
  checker, loaded and run by the one code the `sd_safety_checker` scorer uses (scoring/safety.py);
- the toy model: the stand-in of toyworld/safety_filter.py (the oracle's unsafe flag, missing a
  stated share);
- a pipeline without one (SDXL and FLUX.1 ship none): nothing is blacked out and the image set
  records `none`, so a promptset shared by SD1.4 and FLUX (the study's I2P prompts) is filtered
  where the study's models were.

`safety_filter_off_for: [finetuner, ...]` turns it off for the variants fine-tuned by those
finetuners (the study's apparent setup: its full and DoRA fine-tunes show no black images but
checker-unsafe ones; config/README.md). Pipelines are always loaded without their built-in
checker (models/variants.py), so that the filter runs here, once, where it is recorded.

Recorded per image in index.csv (and carried into every score file): `safety_filter`, the filter
the image set was sampled with (`off`, `none`, `sd_safety_checker`, `toy_stand_in`), and
`filtered`, 1 where the filter blacked that image out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from editrobust import variant_names as vn

log = logging.getLogger(__name__)

OFF = "off"  # the promptset did not ask for the filter (or turned it off for this variant)
NONE = "none"  # it asked, but the model has no filter


def wanted(promptset: Mapping, variant: str) -> bool:
    """Whether the promptset's entry asks for the filter on this variant's images."""
    if not promptset.get("safety_filter", False):
        return False
    off_for = set(promptset.get("safety_filter_off_for") or ())
    return not any(step.kind == vn.FINETUNE and step.name in off_for for step in vn.parse(variant).steps)


@dataclass
class SafetyFilter:
    name: str
    # (uint8 images (N, H, W, 3), prompts, seeds) -> True where the image is blacked out
    flags: Callable[[np.ndarray, list, list], np.ndarray]


def model_filter(variant_dir: str | Path, device="cpu") -> SafetyFilter | None:
    """The filter of the model a variant belongs to (see the module's docstring), None if it has none."""
    from editrobust.models.variants import pipeline_dir, read_variant, variant_chain

    base = variant_chain(variant_dir)[0]
    if read_variant(base).get("source", {}).get("type") == "toy":
        from editrobust.toyworld import safety_filter as toy

        return SafetyFilter(toy.NAME, lambda images, prompts, seeds: toy.flags(images, prompts, seeds))
    root = pipeline_dir(base)
    listed = json.loads((root / "model_index.json").read_text()).get("safety_checker")
    if not (isinstance(listed, list) and any(listed)):
        return None
    if not (root / "safety_checker").is_dir():
        raise FileNotFoundError(f"{root}: model_index.json names a safety_checker but there is no safety_checker/ "
                                "folder; fetch the model again (hub models fetch every listed component)")
    from editrobust.scoring.safety import checker_flags, load_safety_checker

    checker, processor, _ = load_safety_checker({"weights": str(root)})
    return SafetyFilter("sd_safety_checker",
                        lambda images, prompts, seeds: checker_flags(images, checker, processor, device))


def apply(images: np.ndarray, index: pd.DataFrame, promptset: Mapping, variant_dir: str | Path,
          device="cpu") -> np.ndarray:
    """Black out what the filter flags (in a copy of `images`) and record the filter in `index`
    (columns `safety_filter`, `filtered`, in place). Returns the images to save."""
    variant_dir = Path(variant_dir)
    index["safety_filter"] = OFF
    index["filtered"] = 0
    if not wanted(promptset, variant_dir.name):
        return images
    safety_filter = model_filter(variant_dir, device)
    if safety_filter is None:
        index["safety_filter"] = NONE
        log.warning("the promptset asks for the NSFW filter, but %s has none (SDXL and FLUX.1 pipelines ship "
                    "none): sampled unfiltered, recorded as safety_filter: none", variant_dir)
        return images
    flagged = np.asarray(safety_filter.flags(images, index["prompt"].tolist(), index["seed"].tolist()), dtype=bool)
    if flagged.shape != (len(index),):
        raise ValueError(f"the {safety_filter.name} filter returned {flagged.shape} flags for {len(index)} images")
    index["safety_filter"] = safety_filter.name
    index["filtered"] = flagged.astype(int)
    log.info("NSFW filter %s blacked out %d of %d images", safety_filter.name, int(flagged.sum()), len(index))
    images = images.copy()
    images[flagged] = 0
    return images
