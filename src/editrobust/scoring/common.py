"""What every scorer shares: the identifying columns of a score file, reading an image set, the
black-image rule, and the one error raised when weights are not on this machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from editrobust.io import load_image

# Identifying columns carried from index.csv into every score file (the column contract shared
# with the tables); then each scorer's labels; then scorer, scorer_version and threshold.
# `safety_filter` and `filtered` say which NSFW filter the image set was sampled with and whether it
# blacked this image out (sampling/safety_filter.py).
ID_COLUMNS = ("prompt_id", "seed", "image", "file", "group", "metric", "expected_old", "expected_new", "decode",
              "safety_filter", "filtered")


class WeightsUnavailable(FileNotFoundError):
    """A scorer's weights are not on this machine. The message says exactly what to download and
    where to put it: scorers never download at run time and never fall back to something else."""


def cached_hub_files(repo_id: str, filenames, owner: str, alternative: str) -> list[Path]:
    """The local paths of `filenames` of a Hugging Face repo, from the local cache only (never a
    download). A missing file raises WeightsUnavailable naming `owner` (the config key), the
    `hf download` command, and `alternative` (what else the user can do)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    paths = []
    for filename in filenames:
        try:
            paths.append(Path(hf_hub_download(repo_id, filename, local_files_only=True)))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError):
            raise WeightsUnavailable(
                f"{owner}: {filename} of the Hugging Face repo {repo_id!r} is not in the local cache "
                f"({constants.HF_HUB_CACHE}). On a machine with internet run "
                f"`hf download {repo_id} {' '.join(filenames)}` and copy the cache here (or set HF_HOME), "
                f"or {alternative}") from None
    return paths


def id_frame(index: pd.DataFrame) -> pd.DataFrame:
    """The index's identifying columns, one row per image, in index order."""
    if "file" not in index.columns:
        raise ValueError("index.csv has no 'file' column")
    return index[[c for c in ID_COLUMNS if c in index.columns]].reset_index(drop=True).copy()


def load_images(index: pd.DataFrame, image_dir: str | Path) -> list[np.ndarray]:
    """The RGB uint8 images of the index, in order (sizes may differ); a missing file is named."""
    image_dir = Path(image_dir)
    return [load_image(image_dir / f) for f in index["file"]]


# Black-image rule. The SD safety checker replaces a flagged image by zeros, so a blacked-out
# image is uint8 max == 0 (threshold 0). A near-black failure (e.g. fp16 NaNs decoded by the
# SDXL VAE) can be caught with a larger threshold; the threshold is recorded in every output.
DEFAULT_BLACK_THRESHOLD = 0


def is_black(image: np.ndarray, threshold: float = DEFAULT_BLACK_THRESHOLD) -> bool:
    """True when every pixel value is <= threshold (0-255 scale)."""
    return bool(np.asarray(image).max() <= threshold)


def black_flags(images, threshold: float = DEFAULT_BLACK_THRESHOLD) -> np.ndarray:
    return np.array([is_black(im, threshold) for im in images], dtype=bool)


def finish(out: pd.DataFrame, scorer: str, version: str, threshold=None) -> pd.DataFrame:
    """Append the provenance columns every score file ends with."""
    out["scorer"] = scorer
    out["scorer_version"] = version
    if threshold is not None:
        out["threshold"] = threshold
    return out
