"""Figure 3's numbers: ReFACT efficacy / generality / specificity of M, M_ed, M_ft and M_ed_ft.

Each edit E is evaluated on its own RoAD promptset P (the entry's `editors[i]` on `promptsets[i]`)
for every variant: base, ed-E, ft-F and ed-E+ft-F. A cell is the mean over the edits of one
RoAD type (the study's Appearance and Role panels; `groups` comes from the editors' config) of the
per-edit score (`metrics.refact_scores`: the share of successful images of that metric).
Δ = |score(M_ed) − score(M_ed_ft)|; with `ci: true` CIs resample the seeds of every edit and
metric (one draw shared by the four variants: paired), and `p` is the paired bootstrap p-value of
the change M_ed → M_ed_ft.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics import delta, refact_scores
from editrobust.metrics.rates import REFACT_METRICS, as_bool

from . import resample
from .layout import TableRows
from .load import TableInputError, get, source
from .spec import CLUSTERS, ScoreKey, ed, ed_ft, edits, ft

BASE_GROUP = "Base"


def inputs(spec: Mapping) -> list[ScoreKey]:
    m, s = spec["model"], spec["scorer"]
    keys = []
    for e, p in edits(spec):
        keys += [ScoreKey(m, "base", p, s), ScoreKey(m, ed(e), p, s)]
        for f in spec["finetuners"]:
            keys += [ScoreKey(m, ft(f), p, s), ScoreKey(m, ed_ft(e, f), p, s)]
    return keys


def edit_scores(frame: pd.DataFrame) -> dict[str, float]:
    """{efficacy, generality, specificity: share of successes} of one RoAD score file."""
    where = source(frame)
    missing = [c for c in ("metric", "success") if c not in frame.columns]
    if missing:
        raise TableInputError(f"{where}: missing column(s) {', '.join(missing)} (not a RoAD promptset's scores?)")
    try:
        return refact_scores(frame)
    except ValueError as err:
        raise TableInputError(f"{where}: {err}") from None


class _EditDraws:
    """The seeds (or prompts) of each metric of one edit, and their shared bootstrap draw."""

    def __init__(self, base: pd.DataFrame, cluster: tuple, rng, n_resamples: int | None):
        self.cluster, self.refs, self.picks = cluster, {}, {}
        for metric in REFACT_METRICS:
            rows = base[base["metric"] == metric]
            if rows.empty:
                continue
            self.refs[metric] = resample.pooled(rows, pd.Series(1.0, index=rows.index), cluster).clusters
            if n_resamples:
                self.picks[metric] = resample.draw(rng, len(self.refs[metric]), n_resamples)

    def samples(self, frame: pd.DataFrame, metric: str) -> np.ndarray:
        rows = frame[frame["metric"] == metric]
        success = pd.Series(as_bool(rows["success"], f"{source(frame)} success").astype(float), index=rows.index)
        cells = resample.pooled(rows, success, self.cluster, self.refs[metric], source(frame))
        return cells.resampled(self.picks[metric])


def per_edit(spec: Mapping, frames: Mapping, variant_of, with_ci: bool, rng) -> dict:
    """{role: {editor: {metric: (score, samples or None)}}} for roles given by variant_of(editor)."""
    m, s, cluster = spec["model"], spec["scorer"], CLUSTERS[spec["cluster"]]
    out: dict = {role: {} for role in variant_of}
    for e, p in edits(spec):
        base = get(frames, ScoreKey(m, "base", p, s), f"{spec['kind']} table")
        edit_scores(base)
        draws = _EditDraws(base, cluster, rng, spec["bootstrap_resamples"] if with_ci else None)
        for role, variant in variant_of.items():
            frame = get(frames, ScoreKey(m, variant(e), p, s), f"{spec['kind']} table")
            scores = edit_scores(frame)
            out[role][e] = {
                metric: (scores[metric], draws.samples(frame, metric) if with_ci and metric in draws.refs else None)
                for metric in REFACT_METRICS
            }
    return out


def group_order(spec: Mapping) -> dict[str, list[str]]:
    """{RoAD type: its editors}, in the order the editors are listed."""
    out: dict[str, list[str]] = {}
    for e in spec["editors"]:
        out.setdefault(spec["groups"].get(e, "all"), []).append(e)
    return out


def mean_over(edits_scores: dict, editors: list[str], metric: str, with_ci: bool):
    """(mean score over the editors, mean of their resamples or None)."""
    value = float(np.mean([edits_scores[e][metric][0] for e in editors]))
    if not with_ci or any(edits_scores[e][metric][1] is None for e in editors):
        return value, None
    return value, np.mean(np.vstack([edits_scores[e][metric][1] for e in editors]), axis=0)


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    with_ci, conf = bool(spec["ci"]), spec["confidence"]
    rng = np.random.default_rng(spec["seed"])
    names = spec.get("names", {})
    roles = {"M": lambda e: "base", "M_ed": ed}
    for f in spec["finetuners"]:
        roles[f"{f}|M_ft"] = lambda e, f=f: ft(f)
        roles[f"{f}|M_ed_ft"] = lambda e, f=f: ed_ft(e, f)
    scores = per_edit(spec, frames, roles, with_ci, rng)
    rows = TableRows(["edit", "metric"])

    def ci(samples):
        return resample.interval(samples, conf) if with_ci and samples is not None else None

    for group, editors in group_order(spec).items():
        for metric in REFACT_METRICS:
            row = (group, metric)
            for role in ("M", "M_ed"):
                value, samples = mean_over(scores[role], editors, metric, with_ci)
                rows.put(row, BASE_GROUP, role, value, ci(samples))
            edited, edited_samples = mean_over(scores["M_ed"], editors, metric, with_ci)
            for f in spec["finetuners"]:
                label = names.get(f, f)
                value, samples = mean_over(scores[f"{f}|M_ft"], editors, metric, with_ci)
                rows.put(row, label, "M_ft", value, ci(samples))
                after, after_samples = mean_over(scores[f"{f}|M_ed_ft"], editors, metric, with_ci)
                rows.put(row, label, "M_ed_ft", after, ci(after_samples))
                change = after_samples - edited_samples if with_ci and after_samples is not None else None
                rows.put(row, label, "Δ", delta(edited, after),
                         resample.abs_interval(*ci(change)) if change is not None else None)
                if change is not None:
                    rows.put(row, label, "p", resample.p_value(change))
    return rows.frame()
