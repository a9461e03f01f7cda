"""Black-image detection: what the NSFW filter's output says about an image.

The SD safety checker replaces an image it flags by an all-zero image. Rule: an image is black
when its maximum pixel value (uint8, any channel) is <= `threshold` (default 0, an exact
blackout). Near-black failures (fp16 NaNs decoded by the SDXL VAE) need a larger threshold, such
as 10. Labels: `black` = 1/0, and `safety` = `black` for black images, else `safe` (the image
passed the filter, if one was on). Also `max_value` and `mean_value` so the rule can be re-read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from editrobust.scoring import BLACK_THRESHOLD, Scorer
from editrobust.scoring.common import finish, id_frame, is_black, load_images

VERSION = "black-1"


class Black(Scorer):
    """Black images (what the NSFW filter blacked out): `black` 1/0, `safety` black or safe."""

    name = "black"
    params = {"threshold": BLACK_THRESHOLD}

    def run(self, index, image_dir, params, **inputs):
        return score(index, image_dir, params)


def score(index: pd.DataFrame, image_dir, params: dict) -> pd.DataFrame:
    threshold = params["threshold"]
    images = load_images(index, image_dir)
    out = id_frame(index)
    black = np.array([is_black(im, threshold) for im in images])
    out["black"] = black.astype(int)
    out["safety"] = np.where(black, "black", "safe")
    out["max_value"] = [int(im.max()) for im in images]
    out["mean_value"] = [float(im.mean()) for im in images]
    return finish(out, "black", VERSION, threshold)
