"""The study's headline number: how much editing performance drops after fine-tuning, per edit type.

The study (§1, He et al., arXiv 2506.18428): "Compared to the edited model, editing performance
drops by an average of 6.78 % for appearance edits and 6.80 % for role edits across the four
fine-tuning methods". Its abstract says the same of appearance edits as "an average of 6.78 % of
the editing effect is reversed". Only Figure 3's bars (efficacy, generality, specificity of M,
M_ed, M_ft, M_ed_ft per fine-tuner, SD1.4) stand behind these numbers, so this table fixes the
definition the wording gives:

  score_k(V)   the ReFACT success rate of metric k (efficacy, generality, specificity) of variant V,
               averaged over the edits of one RoAD type (appearance or role), exactly the `refact`
               table's cell (tables/refact.py)
  P(V)         editing performance = the mean of score_k(V) over the table's `metrics`
  drop_F       = 100 · (P(M_ed) − P(M_ed_ft,F)) / P(M_ed)      (measure: relative, the default)
               = 100 · (P(M_ed) − P(M_ed_ft,F))                (measure: absolute, percentage points)
  average drop = the mean of drop_F over the table's fine-tuners (the study: its four)

"Compared to the edited model" makes M_ed the reference, so the default is the drop relative to
M_ed's performance ("6.78 % of the editing effect"); M (the unedited model) does not enter. The
study's Figure 3 draws rates in percent, so "drops by 6.78 %" could also be read as 6.78 points:
`measure: absolute` gives that reading. A drop is positive when fine-tuning weakened the edit.

Rows: (edit type, metric) for each of `metrics`, then (edit type, "editing performance") from P.
Columns: Base M_ed; per fine-tuner M_ed_ft and drop; "Average" drop (the headline). With `ci: true`
the per-metric rows get bootstrap CIs from one draw per (type, metric) shared by M_ed and every
M_ed_ft (as the refact table); the drop of the editing-performance row mixes metrics whose
draws are separate, so it carries no CI.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics.rates import REFACT_METRICS
from editrobust.plugins import Param
from editrobust.variant_names import ed, ed_ft

from . import COMMON, NAMES, resample
from .layout import TableRows
from .load import TableInputError
from .refact import EDIT_PARAMS, EditMeans, Refact, group_order, load_edits
from .spec import ScoreKey, edits

BASE_GROUP, AVERAGE_GROUP = "Base", "Average"
PERFORMANCE = "editing performance"
MEASURES = ("relative", "absolute")


def inputs(spec: Mapping) -> list[ScoreKey]:
    m, s = spec["model"], spec["scorer"]
    keys = []
    for e, p in edits(spec):
        keys.append(ScoreKey(m, ed(e), p, s))
        keys += [ScoreKey(m, ed_ft(e, f), p, s) for f in spec["finetuners"]]
    return keys


def drop(edited, after, measure: str):
    """100 · (edited − after) / edited (relative) or 100 · (edited − after) (absolute); works on
    numbers and on arrays of bootstrap resamples alike."""
    change = np.subtract(edited, after)
    if measure == "absolute":
        return 100.0 * change
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * change / np.asarray(edited, dtype=float)


def average_drop(edited: float, after: Mapping[str, float], measure: str = "relative") -> float:
    """The headline: the mean over fine-tuners of the drop from `edited` (P(M_ed)) to each
    `after[F]` (P(M_ed_ft,F))."""
    if not after:
        raise ValueError("the average drop needs at least one fine-tuner")
    return float(np.mean([drop(edited, a, measure) for a in after.values()]))


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    measure, metrics = spec["measure"], list(spec["metrics"])
    rng = np.random.default_rng(spec["seed"])
    names = spec["names"]
    finetuners = list(spec["finetuners"])
    role = {f: f"{f}|M_ed_ft" for f in finetuners}
    variant_of = {"M_ed": ed, **{role[f]: (lambda e, f=f: ed_ft(e, f)) for f in finetuners}}
    loaded = load_edits(spec, frames, variant_of)
    rows = TableRows(["edit", "metric"])
    ci = resample.interval_of(spec)

    for group, pairs in group_order(spec).items():
        performance = {"M_ed": [], **{f: [] for f in finetuners}}
        for metric in metrics:
            row = (group, metric)
            mean = EditMeans([loaded[pair] for pair in pairs], metric, spec, rng, reference_role="M_ed")
            edited, edited_samples = mean("M_ed")
            if np.isnan(edited):
                raise TableInputError(f"{spec['kind']} table: no {metric} images for the {group} edits "
                                      f"({', '.join(e for e, _ in pairs)})")
            performance["M_ed"].append(edited)
            rows.put(row, BASE_GROUP, "M_ed", edited, ci(edited_samples))
            drops, drop_samples = [], []
            for f in finetuners:
                after, after_samples = mean(role[f])
                performance[f].append(after)
                rows.put(row, names.get(f, f), "M_ed_ft", after, ci(after_samples))
                drops.append(drop(edited, after, measure))
                samples = drop(edited_samples, after_samples, measure) if after_samples is not None else None
                drop_samples.append(samples)
                rows.put(row, names.get(f, f), "drop", drops[-1], ci(samples))
            shared = drop_samples[0] is not None
            rows.put(row, AVERAGE_GROUP, "drop", float(np.mean(drops)),
                     ci(np.mean(drop_samples, axis=0)) if shared else None)
        # editing performance: the mean over the metrics, then its drop per fine-tuner and averaged
        row = (group, PERFORMANCE)
        edited = float(np.mean(performance["M_ed"]))
        rows.put(row, BASE_GROUP, "M_ed", edited)
        after = {f: float(np.mean(performance[f])) for f in finetuners}
        for f in finetuners:
            rows.put(row, names.get(f, f), "M_ed_ft", after[f])
            rows.put(row, names.get(f, f), "drop", float(drop(edited, after[f], measure)))
        rows.put(row, AVERAGE_GROUP, "drop", average_drop(edited, after, measure))
    return rows.frame()


class EditDrop(Refact):
    """The study's §1 headline: the average drop of editing performance from M_ed to M_ed_ft per edit
    type (the refact table's edits, groups and cells of an edit; its own columns)."""

    name = "edit_drop"
    params = {
        **COMMON,
        **EDIT_PARAMS,
        "finetuners": Param(NAMES, required=True, doc="the fine-tuners averaged over (the study: its four)"),
        "metrics": Param({"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(REFACT_METRICS)}},
                         list(REFACT_METRICS), doc="the ReFACT metrics whose mean is the editing performance"),
        "measure": Param({"enum": list(MEASURES)}, "relative",
                         doc="`relative`: 100·(P(M_ed) − P(M_ed_ft)) / P(M_ed), % of M_ed's performance; `absolute`: "
                             "100·(P(M_ed) − P(M_ed_ft)), percentage points"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)
