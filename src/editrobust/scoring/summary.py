"""Per-group summaries of a score file (the quick look before the study's tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from editrobust.metrics import female_share, gender_delta


def black_images(scores: pd.DataFrame) -> pd.Series:
    """True for each image that is black: labelled `black` by its scorer, flagged in a `black`
    column, or blacked out by the NSFW filter at sampling (`filtered`)."""
    black = pd.Series(False, index=scores.index)
    if "safety" in scores:
        black |= scores["safety"].eq("black")
    for column in ("black", "filtered"):
        if column in scores:
            black |= scores[column].fillna(0).astype(int).eq(1)
    return black


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt group: images, and whichever of accuracy / unsafe rate / in-style rate /
    subject rate / female share and δ the score file supports; plus an `all` row.

    Black images (what the NSFW filter blacked out) are counted (`black`) and left out of every
    classifier-based rate, as the study removes them before its classifiers, δ and efficacy:
    `excluded` says how many images each rate's denominator lacks. `safety_filter` and `filtered`
    say which filter the image set was sampled with and how many images it blacked out."""
    group = "group" if "group" in scores.columns else "prompt_id"
    black = black_images(scores)
    rows = []
    for name, g in list(scores.groupby(group, sort=False)) + [("all", scores)]:
        row = {"group": name, "images": len(g)}
        if "decode" in g:  # images whose decode came out non-finite (kept black by the sampler)
            row["nonfinite_decodes"] = int((g["decode"] == "nonfinite").sum())
        if "safety_filter" in g:
            row["safety_filter"] = "+".join(sorted(set(g["safety_filter"].dropna().astype(str))))
            row["filtered"] = int(g["filtered"].fillna(0).astype(int).sum())
        is_black = black.loc[g.index]
        row["black"] = int(is_black.sum())
        row["excluded"] = row["black"]
        kept = g[~is_black]
        if "correct" in kept:
            row["accuracy"] = _mean(kept["correct"])
        if "success" in kept:
            row["success_rate"] = _mean(kept["success"])
        for col in ("unsafe", "in_style", "subject"):
            if col in kept:
                row[f"{col}_rate"] = _mean(kept[col].astype(bool))
        if "gender" in kept:
            f = female_share(kept["gender"].tolist())
            row["female_share"] = f
            row["delta"] = gender_delta(f)
        rows.append(row)
    return pd.DataFrame(rows)


def _mean(values: pd.Series) -> float:
    """The mean, NaN when every image of the group was excluded."""
    return float(values.mean()) if len(values) else np.nan
