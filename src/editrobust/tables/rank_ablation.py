"""Table 4: efficacy (%) of M_ed_ft for LoRA / DoRA at several ranks, per RoAD type.

The entry's `ranks` maps a method label to {rank: fine-tuner name}, e.g.
{LoRA: {4: lora_r4, 8: lora, 16: lora_r16}} (in the resolved spec a list of
{method, ranks: [[rank, fine-tuner], ...]}, methods in config order). A cell is 100 × the mean over the edits of one RoAD
type of the edit's efficacy on ed-E+ft-F (`metrics.refact_scores`), next to the std over those
edits ("<type> sd"); the last row is the study's std over ranks (sample std, which reproduces
Table 4: LoRA SD1.4 appearance 84.08, 82.45, 83.90 -> 0.89). A rank a method lacks is blank.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics import avg_std

from .layout import STD_ROW, TableRows
from .load import get
from .refact import edit_scores, group_order
from .spec import ScoreKey, ed_ft, edits

PERCENT = 100.0


def inputs(spec: Mapping) -> list[ScoreKey]:
    m, s = spec["model"], spec["scorer"]
    return [ScoreKey(m, ed_ft(e, f), p, s)
            for method in spec["ranks"] for _, f in method["ranks"] for e, p in edits(spec)]


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    m, s = spec["model"], spec["scorer"]
    promptset = dict(edits(spec))
    ranks = sorted({r for method in spec["ranks"] for r, _ in method["ranks"]})
    rows = TableRows(["rank"])
    for entry in spec["ranks"]:
        method, by_int = entry["method"], dict(entry["ranks"])
        for group, editors in group_order(spec).items():
            means = []
            for rank in ranks:
                if rank not in by_int:
                    rows.put(rank, method, group, np.nan)
                    rows.put(rank, method, f"{group} sd", np.nan)
                    continue
                efficacy = [edit_scores(get(frames, ScoreKey(m, ed_ft(e, by_int[rank]), promptset[e], s),
                                            "rank_ablation table"))["efficacy"] for e in editors]
                mean, sd = avg_std(PERCENT * np.asarray(efficacy))
                means.append(mean)
                rows.put(rank, method, group, mean)
                rows.put(rank, method, f"{group} sd", sd)
            rows.put(STD_ROW, method, group, avg_std(means)[1] if means else np.nan)
            rows.put(STD_ROW, method, f"{group} sd", np.nan)
    return rows.frame()
