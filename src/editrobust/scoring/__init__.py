"""Scorers: each turns an image set (index.csv + PNGs) into one row per image.

A new scorer is one module with a `score(index, image_dir, params, **inputs) -> DataFrame`
function and one entry in SCORERS. `inputs` are the extra files the workflow gives a scorer as
named rule inputs: `embeddings` (the shared CLIP image embeddings, for the kinds in CLIP_KINDS)
and `labels` (the human scorer's annotation CSV).
"""

from __future__ import annotations

from editrobust.scoring import black, clip, human, nudenet, oracle, safety

SCORERS = {
    "oracle": oracle.score,
    "black": black.score,
    "clip_gender": clip.score_gender,
    "clip_pair": clip.score_pair,
    "clip_safety": safety.score_clip_safety,
    "sd_safety_checker": safety.score_sd_safety_checker,
    "nudenet": nudenet.score,
    "human": human.score,
}
# Scorers that read the image embeddings of a `clip_models` entry (computed once per image set).
CLIP_KINDS = ("clip_gender", "clip_pair", "clip_safety")


def get_scorer(kind: str):
    try:
        return SCORERS[kind]
    except KeyError:
        raise ValueError(f"unknown scorer kind {kind!r}; known: {', '.join(sorted(SCORERS))}") from None
