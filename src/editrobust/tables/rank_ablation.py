"""Table 4: efficacy (%) of M_ed_ft for LoRA / DoRA at several ranks, per RoAD type.

The entry's `ranks` maps a method label to {rank: fine-tuner name}, e.g.
{LoRA: {4: lora_r4, 8: lora, 16: lora_r16}} (in the resolved spec a list of
{method, ranks: [[rank, fine-tuner], ...]}, methods in config order). A cell is 100 × the mean
over the edits of one RoAD type of the edit's efficacy on ed-E+ft-F (`metrics.refact_scores`),
next to the std over those edits ("<type> sd"); with `ci: true` the mean gets a bootstrap CI
resampled as the refact table's (by default edits, then seeds within each drawn edit;
refact.EditMeans). The last row is the study's std over ranks (sample std, which reproduces
Table 4: LoRA SD1.4 appearance 84.08, 82.45, 83.90 -> 0.89). A rank a method lacks is blank.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics import avg_std
from editrobust.plugins import Param
from editrobust.variant_names import ed_ft

from . import COMMON, NAME, TableKind, resample
from .layout import STD_ROW, TableRows
from .refact import EDIT_PARAMS, EditMeans, group_order, load_edits
from .spec import ScoreKey, edit_groups, edits

PERCENT = 100.0


def inputs(spec: Mapping) -> list[ScoreKey]:
    m, s = spec["model"], spec["scorer"]
    return [ScoreKey(m, ed_ft(e, f), p, s)
            for method in spec["ranks"] for _, f in method["ranks"] for e, p in edits(spec)]


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    rng = np.random.default_rng(spec["seed"])
    ci = resample.interval_of(spec)
    finetuners = [f for entry in spec["ranks"] for _, f in entry["ranks"]]
    variant_of = {f: (lambda e, f=f: ed_ft(e, f)) for f in finetuners}
    loaded = load_edits(spec, frames, variant_of)
    groups = group_order(spec)
    # one bootstrap draw per RoAD type, shared by every (method, rank): see refact.EditMeans
    means = {group: EditMeans([loaded[pair] for pair in pairs], "efficacy", spec, rng, reference_role=finetuners[0])
             for group, pairs in groups.items()}
    ranks = sorted({r for entry in spec["ranks"] for r, _ in entry["ranks"]})
    rows = TableRows(["rank"])
    for entry in spec["ranks"]:
        method, by_int = entry["method"], dict(entry["ranks"])
        for group, pairs in groups.items():
            per_rank = []
            for rank in ranks:
                if rank not in by_int:
                    rows.put(rank, method, group, np.nan)
                    rows.put(rank, method, f"{group} sd", np.nan)
                    continue
                value, samples = means[group](by_int[rank])
                _, sd = avg_std(PERCENT * np.asarray([loaded[pair].scores[by_int[rank]]["efficacy"] for pair in pairs]))
                per_rank.append(PERCENT * value)
                interval = ci(PERCENT * samples if samples is not None else None)
                rows.put(rank, method, group, PERCENT * value, interval)
                rows.put(rank, method, f"{group} sd", sd)
            rows.put(STD_ROW, method, group, avg_std(per_rank)[1] if per_rank else np.nan)
            rows.put(STD_ROW, method, f"{group} sd", np.nan)
    return rows.frame()


class RankAblation(TableKind):
    """Table 4: efficacy (%) of M_ed_ft for LoRA / DoRA at several ranks, per RoAD type."""

    name = "rank_ablation"
    params = {
        **COMMON,
        **EDIT_PARAMS,
        "ranks": Param({"type": "object", "minProperties": 1,
                        "additionalProperties": {"type": "object", "minProperties": 1,
                                                 "propertyNames": {"pattern": "^[0-9]+$"},
                                                 "additionalProperties": NAME}},
                       required=True, doc="`{method label: {rank: finetuner}}`, e.g. `{LoRA: {4: lora_r4, 8: lora_r8}}`"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)

    @staticmethod
    def cells_of_edit(spec, editor, table):
        """Every rank's cells of the edit's RoAD type (columns "<type>", "<type> sd" of each method)."""
        group = spec["groups"].get(editor, "all")
        return list(table.index), [(entry["method"], q) for entry in spec["ranks"] for q in (group, f"{group} sd")]

    @classmethod
    def resolve(cls, entry: Mapping, config: Mapping) -> dict:
        spec = cls.with_defaults(entry)
        spec["groups"] = edit_groups(config, spec["editors"])
        spec["ranks"] = [{"method": method, "ranks": sorted([int(r), f] for r, f in by_rank.items())}
                         for method, by_rank in spec["ranks"].items()]
        return spec
