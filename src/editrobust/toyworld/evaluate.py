"""Quick oracle evaluation of a toy model: does it follow prompts, and keep the biases?"""

from __future__ import annotations

import numpy as np

from editrobust.sampling import SamplingSettings, generate
from editrobust.toyworld import captions as C
from editrobust.toyworld.oracle import label_images
from editrobust.toyworld.world import PROFESSION_FEMALE_SHARE


def evaluate_concepts(pipe, images_per_concept: int, settings: SamplingSettings, seed: int = 0) -> dict:
    """Per concept: oracle accuracy on the bare prompt, and for professions the female share."""
    prompts, seeds, concepts = [], [], []
    for c in C.CONCEPTS:
        prompts += [C.noun_phrase(c)] * images_per_concept
        seeds += list(range(seed, seed + images_per_concept))
        concepts += [c] * images_per_concept
    labels = label_images(generate(pipe, prompts, seeds, settings, desc="oracle evaluation"))
    out = {}
    for c in C.CONCEPTS:
        mine = [lab for lab, cc in zip(labels, concepts) if cc == c]
        want = C.expected_labels(c)["concept"]
        ok = [(lab["concept"] in ("man", "woman")) if want == "person" else lab["concept"] == want for lab in mine]
        row = {"accuracy": float(np.mean(ok))}
        if c in PROFESSION_FEMALE_SHARE:
            genders = [lab["gender"] for lab in mine if lab["gender"]]
            row["female_share"] = float(np.mean([g == "woman" for g in genders])) if genders else float("nan")
            row["female_share_in_training"] = PROFESSION_FEMALE_SHARE[c]
        out[c] = row
    accs = [r["accuracy"] for r in out.values()]
    return {"images_per_concept": images_per_concept, "mean_accuracy": float(np.mean(accs)),
            "min_accuracy": float(np.min(accs)), "concepts": out}
