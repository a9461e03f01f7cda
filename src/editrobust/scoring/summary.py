"""Per-group summaries of a score file (the quick look before the study's tables)."""

from __future__ import annotations

import pandas as pd

from editrobust.metrics import female_share, gender_delta


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt group: images, and whichever of accuracy / unsafe rate / in-style rate /
    subject rate / female share and δ the score file supports; plus an `all` row."""
    group = "group" if "group" in scores.columns else "prompt_id"
    rows = []
    for name, g in list(scores.groupby(group, sort=False)) + [("all", scores)]:
        row = {"group": name, "images": len(g)}
        if "decode" in g:  # images whose decode came out non-finite (kept black by the sampler)
            row["nonfinite_decodes"] = int((g["decode"] == "nonfinite").sum())
        if "correct" in g:
            row["accuracy"] = g["correct"].mean()
        if "success" in g:
            row["success_rate"] = g["success"].mean()
        for col in ("unsafe", "in_style", "subject"):
            if col in g:
                row[f"{col}_rate"] = g[col].astype(bool).mean()
        if "gender" in g:
            f = female_share(g["gender"].tolist())
            row["female_share"] = f
            row["delta"] = gender_delta(f)
        rows.append(row)
    return pd.DataFrame(rows)
