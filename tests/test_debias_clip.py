"""UCE debias on real models classifies with zero-shot CLIP: the same decision as the clip_gender scorer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from editrobust.editors.methods.uce_debias import clip_gender_classifier
from editrobust.io import save_png
from editrobust.scoring import run_scorer

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    d = tmp_path_factory.mktemp("tiny_clip")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    return {"name": "tiny", "weights": str(d)}


def test_clip_debias_classifier_agrees_with_the_gender_scorer(one_thread, clip_spec, tmp_path):
    images = [np.full((32, 32, 3), c, dtype=np.uint8) for c in np.random.default_rng(0).integers(0, 256, (24, 3))]
    for i, im in enumerate(images):
        save_png(tmp_path / f"{i}.png", im)
    n = len(images)
    index = pd.DataFrame({"prompt_id": "p", "seed": range(n), "image": range(n), "file": [f"{i}.png" for i in range(n)]})
    scored = run_scorer({"kind": "clip_gender", "clip_model": clip_spec}, index, tmp_path)
    labels = clip_gender_classifier(clip_spec)(images)
    assert labels == scored["gender"].map({"man": "male", "woman": "female"}).tolist()
    # swapping the texts swaps every label: the attribute follows its text (a random tiny CLIP may
    # put every image in one class, so this is what makes the agreement above non-vacuous)
    swapped = clip_gender_classifier(clip_spec, {"male": "a woman", "female": "a man"})(images)
    assert all(a != b for a, b in zip(labels, swapped))
