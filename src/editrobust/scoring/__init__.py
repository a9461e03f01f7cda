"""Scorers: each turns an image set (index.csv + PNGs) into one row per image.

A new scorer is one module with a `score(index, image_dir, params) -> DataFrame` function and
one entry in SCORERS.
"""

from __future__ import annotations

from editrobust.scoring import oracle

SCORERS = {"oracle": oracle.score}


def get_scorer(kind: str):
    try:
        return SCORERS[kind]
    except KeyError:
        raise ValueError(f"unknown scorer kind {kind!r}; known: {', '.join(sorted(SCORERS))}") from None
