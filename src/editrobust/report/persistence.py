"""Persistence curves: how an edit fades over fine-tuning, from the intermediate checkpoints.

For each fine-tuner F the points are (0, M_ed), (s, ed-E+ft-F@s) every `every` steps (default:
the finetuner's `save_every`), and (steps, ed-E+ft-F); with `until`, only the points up to that
step (the study's Figure 5 follows the first few hundred steps of a long fine-tune). The workflow
saves exactly the checkpoints the figures draw (workflow.Rules.checkpoints_read). The M_ed level
is drawn as a dotted line and, with `base: true`, M's level as a dashed one. The metric is

  delta                               mean over the promptset's groups (professions) of
                                      δ = |F − 0.5| / 0.5, F the female share (lower = edit holds)
  efficacy / generality / specificity the ReFACT success rate of that metric's images
  safe / unsafe / undecidable / black the share of images with that safety label

each a pooled ratio per stratum (group, or one stratum), as in the tables. With `ci: true` each
point gets a percentile cluster-bootstrap interval (prompts or seeds resampled within each
stratum, tables/resample.py), drawn as a band.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from editrobust.metrics import gender_delta
from editrobust.metrics.rates import as_bool
from editrobust.tables import resample
from editrobust.tables.debias import female_indicator
from editrobust.tables.load import TableInputError, read_scores
from editrobust.plugins import Derived, Param
from editrobust.tables.spec import CLUSTERS, ScoreKey
from editrobust.variant_names import checkpoint_steps, ed

from . import COMMON, FigureKind
from .spec import (PERSISTENCE_METRICS, REFACT_METRICS, SAFETY_METRICS, FigureInputError, entry_reference_problems,
                   persistence_keys, persistence_points)

Y_LABELS = {"delta": "mean δ over groups (0 = balanced)", "safe": "share safe", "unsafe": "share unsafe",
            "undecidable": "share undecidable", "black": "share black"}


def strata(frame: pd.DataFrame, metric: str) -> list[tuple[pd.DataFrame, pd.Series]]:
    """(rows, per-image value) per stratum: the value is 1/0 (NaN = the image does not count)."""
    where = frame.attrs.get("source", "scores")
    try:
        if metric == "delta":
            if "group" not in frame.columns:
                raise FigureInputError(f"{where}: no 'group' column (δ is averaged over groups)")
            female = female_indicator(frame)
            return [(frame[frame["group"] == g], female[frame["group"] == g]) for g in pd.unique(frame["group"])]
        if metric in REFACT_METRICS:
            if "metric" not in frame.columns or "success" not in frame.columns:
                raise FigureInputError(f"{where}: needs columns metric and success (a RoAD promptset's scores)")
            rows = frame[frame["metric"] == metric]
            if rows.empty:
                raise FigureInputError(f"{where}: no {metric} images")
            return [(rows, pd.Series(as_bool(rows["success"], f"{where} success").astype(float), index=rows.index))]
        if metric in SAFETY_METRICS:
            if "safety" not in frame.columns:
                raise FigureInputError(f"{where}: no 'safety' column")
            return [(frame, (frame["safety"] == metric).astype(float))]
    except (TableInputError, ValueError) as err:
        if isinstance(err, FigureInputError):
            raise
        raise FigureInputError(f"{where}: {err}") from None
    raise FigureInputError(f"unknown persistence metric {metric!r}")


def point(frame: pd.DataFrame, spec: Mapping, rng: np.random.Generator) -> tuple[float, float, float]:
    """(value, lo, hi) of the metric on one variant's scores; lo = hi = NaN without CIs."""
    metric, cluster = spec["metric"], CLUSTERS[spec["cluster"]]
    transform = gender_delta if metric == "delta" else (lambda x: x)
    values, samples = [], []
    for rows, value in strata(frame, metric):
        cells = resample.pooled(rows, value, cluster)
        values.append(transform(cells.estimate))
        if spec["ci"]:
            picks = resample.draw(rng, len(cells.clusters), spec["bootstrap_resamples"])
            samples.append(transform(cells.resampled(picks)))
    value = float(np.mean(values))
    if not spec["ci"]:
        return value, float("nan"), float("nan")
    lo, hi = resample.interval(np.mean(np.vstack(samples), axis=0), spec["confidence"])
    return value, lo, hi


def curve_points(spec: Mapping, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per plotted point: finetuner, step, variant, value, lo, hi (and the M level as
    finetuner '' with variant base, when `base` is on)."""
    rng = np.random.default_rng(spec["seed"])
    cache: dict[str, tuple[float, float, float]] = {}

    def measured(variant: str):
        if variant not in cache:
            cache[variant] = point(frames[variant], spec, rng)
        return cache[variant]

    rows = []
    if spec["base"]:
        rows.append(dict(finetuner="", step=0, variant="base", **dict(zip(("value", "lo", "hi"), measured("base")))))
    for f in spec["finetuners"]:
        for step, variant in persistence_points(spec, f):
            rows.append(dict(finetuner=f, step=step, variant=variant, **dict(zip(("value", "lo", "hi"), measured(variant)))))
    return pd.DataFrame(rows)


def build(spec: Mapping, files: Mapping[str, Path]):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    variants = {ScoreKey(spec["model"], v, spec["promptset"], spec["scorer"]).path: v
                for v in (["base"] if spec["base"] else [])
                + [v for f in spec["finetuners"] for _, v in persistence_points(spec, f)]}
    frames = {}
    for path, variant in variants.items():
        try:
            frames[variant] = read_scores(files[path])
        except TableInputError as err:
            raise FigureInputError(str(err)) from None
    data = curve_points(spec, frames)
    names = spec["names"]
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    edited = data[data["variant"] == ed(spec["editor"])].iloc[0]
    ax.axhline(edited["value"], color="black", ls=":", lw=1, label="M_ed (before fine-tuning)")
    if spec["base"]:
        ax.axhline(data.loc[data["variant"] == "base", "value"].iloc[0], color="gray", ls="--", lw=1, label="M (unedited)")
    for f in spec["finetuners"]:
        line = data[data["finetuner"] == f]
        ax.plot(line["step"], line["value"], marker="o", ms=4, label=names.get(f, f))
        if spec["ci"]:
            ax.fill_between(line["step"], line["lo"], line["hi"], alpha=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(Y_LABELS.get(spec["metric"], spec["metric"]))
    ax.legend(fontsize=8)
    ax.set_title(spec.get("title") or f"Persistence of {spec['editor']} ({spec['metric']}, {spec['promptset']})",
                 fontsize=10)
    return fig, data


class Persistence(FigureKind):
    """An edit metric against fine-tuning steps, one line per fine-tuner, from the checkpoint variants."""

    name = "persistence"
    params = {
        **COMMON,
        "model": Param({"$ref": "#/$defs/name"}, required=True, doc="a name from `models`"),
        "editor": Param({"$ref": "#/$defs/name"}, required=True, doc="the edit E whose persistence is drawn"),
        "finetuners": Param({"$ref": "#/$defs/name_list"}, required=True,
                            doc="names from `finetuners`; each needs checkpoint steps (`every`, or its `save_every`)"),
        "promptset": Param({"$ref": "#/$defs/name"}, required=True, doc="the promptset the checkpoints are sampled on"),
        "scorer": Param({"$ref": "#/$defs/name"}, required=True, doc="the score files read"),
        "metric": Param({"enum": list(PERSISTENCE_METRICS)}, required=True,
                        doc="`delta` (mean δ over the promptset's groups), `efficacy` / `generality` / `specificity` "
                            "(RoAD promptsets), or the share of a safety label"),
        "base": Param({"type": "boolean"}, True, doc="also mark the unedited model's level (dashed)"),
        "ci": Param({"type": "boolean"}, True, doc="a percentile cluster-bootstrap band per point, as in the tables"),
        "bootstrap_resamples": Param({"type": "integer", "minimum": 1}, 1000, doc="bootstrap resamples"),
        "seed": Param({"type": "integer"}, 0, doc="seeds the bootstrap"),
        "confidence": Param({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, 0.95,
                            doc="the band's confidence level"),
        "cluster": Param({"enum": list(CLUSTERS)},
                         Derived(lambda e: "seed" if e["metric"] in REFACT_METRICS else "prompt",
                                 "`seed` for ReFACT metrics (one efficacy prompt), else `prompt`"),
                         doc="what the bootstrap resamples"),
        "names": Param({"type": "object", "additionalProperties": {"type": "string"}}, {},
                       doc="display names of the fine-tuners"),
        "every": Param({"type": "integer", "minimum": 1},
                       doc="a point every N steps (default: each finetuner's `save_every`); the fine-tunes drawn save "
                           "exactly these checkpoints"),
        "until": Param({"type": "integer", "minimum": 1},
                       doc="draw the steps up to this one only (default: every point to the finished fine-tune)"),
    }
    run = staticmethod(build)

    @classmethod
    def resolve(cls, entry: Mapping, config: Mapping) -> dict:
        """The entry with defaults, plus each fine-tuner's curve steps (its checkpoints, then its last
        step); with `until`, only the steps up to it, and each fine-tuner's `last_step` (the
        finished fine-tune is drawn only when it is not later than `until`)."""
        spec = cls.with_defaults(entry)
        finetuners = config.get("finetuners") or {}
        last = {f: int(finetuners[f]["steps"]) for f in spec["finetuners"]}
        spec["steps"] = {f: [*checkpoint_steps(spec.get("every") or finetuners[f].get("save_every"), last[f]), last[f]]
                         for f in spec["finetuners"]}
        if "until" in spec:
            spec["steps"] = {f: [s for s in steps if s <= spec["until"]] for f, steps in spec["steps"].items()}
            spec["last_step"] = last
        return spec

    @staticmethod
    def inputs(spec: Mapping) -> list[str]:
        return [k.path for k in persistence_keys(spec)]

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        at = f"figures.{name}"
        out = entry_reference_problems(at, entry, config, ("model", "editor", "promptset", "scorer", "finetuners"))
        finetuners = config.get("finetuners") or {}
        for i, f in enumerate(entry["finetuners"]):
            if f not in finetuners:
                continue
            saved = checkpoint_steps(entry.get("every") or finetuners[f].get("save_every"), finetuners[f]["steps"])
            if not saved:
                out.append(f"{at}.finetuners[{i}]: finetuner {f!r} has no step for a checkpoint (`every` or its "
                           f"`save_every`), so its curve has only its start and end; set {at}.every or "
                           f"finetuners.{f}.save_every")
            elif "until" in entry:
                if saved[0] > entry["until"]:
                    out.append(f"{at}.until: {entry['until']} is before finetuner {f!r}'s first checkpoint "
                               f"(step {saved[0]}), so its curve would have no point after M_ed")
        return out
