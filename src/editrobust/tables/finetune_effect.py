"""Did each fine-tune learn its own task, and at what cost to content? (M vs M_ft.)

The study's question (does an edit survive a fine-tune?) presumes that the fine-tune does what it
is for: an anime fine-tune draws anime, a DreamBooth fine-tune draws its subject. Per fine-tuner
(rows), this table reports

    task     its own measure on its own prompts (the entry's `task: {F: {promptset, column}}`,
             e.g. the in-style rate of the style set's concepts asked for without style words,
             or the share of DreamBooth prompts that show the subject) for M and M_ft, with CIs;
    content  the share of images showing what their prompt asks for (`content: {promptset,
             column}`, e.g. the oracle's `correct` on every concept) for M and M_ft, and M_ft / M.

A column is a 0/1 (or True/False) score column; black (NSFW-filtered) images do not count. CIs:
the table's `cluster` bootstrap, one draw per cell shared by M and M_ft (paired: the same prompts
and seeds), so the ratio's interval carries their covariance.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.plugins import Param
from editrobust.variant_names import BASE, ft

from . import COMMON, NAME, NAMES, TableKind, resample
from .layout import TableRows
from .load import get, indicator, source
from .spec import CLUSTERS, ScoreKey

MEASURE = {"type": "object", "additionalProperties": False, "required": ["promptset", "column"],
           "properties": {"promptset": NAME, "column": {"type": "string"}, "scorer": NAME}}


def inputs(spec: Mapping) -> list[ScoreKey]:
    m, keys = spec["model"], []
    for f in spec["finetuners"]:
        for measure in (spec["task"][f], spec["content"]):
            s = measure.get("scorer", spec["scorer"])
            keys += [ScoreKey(m, BASE, measure["promptset"], s), ScoreKey(m, ft(f), measure["promptset"], s)]
    return keys


def _pair(spec: Mapping, frames: Mapping, finetuner: str, measure: Mapping, rng):
    """(estimates, resamples or None) of M and M_ft on one measure, on one shared draw."""
    m, s = spec["model"], measure.get("scorer", spec["scorer"])
    cluster = CLUSTERS[spec["cluster"]]
    out_est, out_samples = {}, {}
    reference = None
    picks = None
    for role, variant in (("M", BASE), ("M_ft", ft(finetuner))):
        frame = get(frames, ScoreKey(m, variant, measure["promptset"], s), "finetune_effect table")
        cell = resample.pooled(frame, indicator(frame, measure["column"]), cluster,
                               reference.clusters if reference is not None else None, source(frame))
        if reference is None:
            reference = cell
            if spec["ci"]:
                picks = resample.draw(rng, len(cell.clusters), spec["bootstrap_resamples"])
        out_est[role] = cell.estimate
        out_samples[role] = cell.resampled(picks) if picks is not None else None
    return out_est, out_samples


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    names, interval = spec["names"], resample.interval_of(spec)
    rng = np.random.default_rng(spec["seed"])
    rows = TableRows(["finetuner", "task"])
    content = spec["content"]
    for f in spec["finetuners"]:
        task = spec["task"][f]
        row = (names.get(f, f), f"{task['column']} ({task['promptset']})")
        est, samples = _pair(spec, frames, f, task, rng)
        for role in ("M", "M_ft"):
            rows.put(row, "task", role, est[role], interval(samples[role]))
        est, samples = _pair(spec, frames, f, content, rng)
        for role in ("M", "M_ft"):
            rows.put(row, "content", role, est[role], interval(samples[role]))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = est["M_ft"] / est["M"] if est["M"] else float("nan")
            ratio_samples = samples["M_ft"] / samples["M"] if samples["M"] is not None else None
        rows.put(row, "content", "M_ft / M", ratio, interval(ratio_samples))
    return rows.frame()


class FinetuneEffect(TableKind):
    """Per fine-tuner: its own task's measure and content accuracy, M vs M_ft."""

    name = "finetune_effect"
    params = {
        **COMMON,
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`, one row each"),
        "scorer": Param(NAME, required=True, doc="the scorer read (a measure may name its own)"),
        "task": Param({"type": "object", "additionalProperties": MEASURE}, required=True,
                      doc="`{finetuner: {promptset, column}}`: each fine-tune's own measure, e.g. "
                          "`{promptset: toy_style, column: in_style}`"),
        "content": Param(MEASURE, required=True,
                         doc="`{promptset, column}`: content accuracy, e.g. `{promptset: toy_concepts, column: correct}`"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)

    @staticmethod
    def editors(spec):
        return []

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        out = super().problems(name, entry, config)
        promptsets = config.get("promptsets") or {}
        missing = [f for f in entry.get("finetuners", []) if f not in (entry.get("task") or {})]
        if missing:
            out.append(f"tables.{name}.task: no measure for finetuner(s) {', '.join(missing)}")
        measures = [(f"task.{f}", m) for f, m in (entry.get("task") or {}).items()] + [("content", entry["content"])]
        for where, measure in measures:
            if measure["promptset"] not in promptsets:
                out.append(f"tables.{name}.{where}.promptset: unknown promptset {measure['promptset']!r}")
        return out
