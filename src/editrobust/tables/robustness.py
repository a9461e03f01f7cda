"""The robustness league table: which edit survives which fine-tune, and what restores it.

Rows are the entry's `tasks` ({label: {kind, editors, promptsets[, scorer, collateral]}}, the
`retention` table's tasks: UCE debias, UCE erase, ESD, ReFACT appearance / role, ...), each with
one row per remedy:

    fine-tuned      M_ed_ft = ed-E+ft-F          the edit after a fine-tune (the study's question)
    re-edited       ed-E+ft-F+ed-E               the same edit applied again to M_ed_ft
    edit-aware      ed-E+ft-F'                   F' = F with `keep_edit_frozen` (the entry's
                                                 `edit_aware: {F: F'}`); fine-tuners without one
                                                 have no such cell
    edited after    ft-F+ed-E                    editing the fine-tuned base model instead

Columns: group "Edit" holds the edit strength s of M and M_ed (on the first row of a task); one
group per fine-tuner holds, for the remedy's variant X,
    retained    1 − (s(M_ed) − s(X)) / (s(M_ed) − s(M)), the `retention` table's share of the edit
                effect kept (1 = as edited, 0 = back to M), with its bootstrap CI;
    s           the edit strength of X with its CI (is a re-edit's within M_ed's interval?);
    collateral  what the variant keeps of something the edit should not touch, relative to M:
                ReFACT's specificity (its own promptset), debias's content accuracy (`correct` on
                the professions), or a task's `collateral: {promptset, column}` (unsafe: the safe
                counterparts' accuracy); 1 = as M;
    task        the fine-tune's own measure on X (the entry's `finetune_task: {F: {promptset,
                column}}`, e.g. the in-style rate): does an edit-aware fine-tune still learn?
Edit strength s per task kind is the retention table's: refact efficacy (mean over the task's
edits), unsafe the share of images labelled safe, debias the mean δ over the professions.

Unlike the retention table, black images (the NSFW filter) do not count (NaN), as in every summary
rate; the league table should read unfiltered promptsets, since a filter that blacks out unsafe
images hides the edit's effect.

CIs: one bootstrap draw per task, shared by all its variants (paired: the same clusters of the
same prompts and seeds), clusters (the table's `cluster`, or the task's) resampled within each
edit and profession (stratified; the task's edits are fixed: the rows compare these edits). A ratio whose denominator s(M_ed) − s(M)
comes near 0 in a resample gets a wide interval, as it should.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics import relative_reversal
from editrobust.metrics.rates import as_bool
from editrobust.plugins import Param
from editrobust.variant_names import BASE, ed, ed_ft, ft_ed, re_edit

from . import COMMON, NAME, NAME_LIST, NAMES, TableKind, resample
from .debias import female_indicator
from .layout import TableRows
from .load import TableInputError, black_images, get, indicator, source
from .spec import CLUSTERS, ScoreKey, edit_groups, edits

KINDS = ("refact", "unsafe", "debias")
REMEDIES = ("fine-tuned", "re-edited", "edit-aware", "edited after")
EDIT_GROUP = "Edit"
MEASURE = {"type": "object", "additionalProperties": False, "required": ["promptset", "column"],
           "properties": {"promptset": NAME, "column": {"type": "string"}, "scorer": NAME}}


def remedy_variants(spec: Mapping, editor: str, finetuner: str) -> dict[str, str]:
    """{remedy: variant} of one edit and fine-tuner (edit-aware only where a twin is configured)."""
    out = {"fine-tuned": ed_ft(editor, finetuner)}
    if spec["re_edit"]:
        out["re-edited"] = re_edit(editor, finetuner)
    if finetuner in spec["edit_aware"]:
        out["edit-aware"] = ed_ft(editor, spec["edit_aware"][finetuner])
    if spec["edit_after"]:
        out["edited after"] = ft_ed(finetuner, editor)
    return out


def task_variants(spec: Mapping, editor: str) -> list[str]:
    """Every variant a task's edit is scored in: M, M_ed and each remedy of each fine-tuner."""
    out = [BASE, ed(editor)]
    for f in spec["finetuners"]:
        out += remedy_variants(spec, editor, f).values()
    return out


def inputs(spec: Mapping) -> list[ScoreKey]:
    m = spec["model"]
    keys = []
    for task in spec["tasks"]:
        s = task.get("scorer", spec["scorer"])
        collateral = task.get("collateral")
        for e, p in edits(task):
            for v in task_variants(spec, e):
                keys.append(ScoreKey(m, v, p, s))
                if collateral:
                    keys.append(ScoreKey(m, v, collateral["promptset"], collateral.get("scorer", s)))
            for f, measure in spec["finetune_task"].items():
                if f not in spec["finetuners"]:
                    continue
                for remedy in ("fine-tuned", "edit-aware"):
                    v = remedy_variants(spec, e, f).get(remedy)
                    if v:
                        keys.append(ScoreKey(m, v, measure["promptset"], measure.get("scorer", s)))
    return keys


# --- per-image values of the edit strength ------------------------------------------------------------
def _strata(kind: str, frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.Series]]:
    """(stratum, rows, 0/1 value per row, NaN = does not count) whose pooled shares make s."""
    where = source(frame)
    black = black_images(frame)
    if kind == "refact":
        if "metric" not in frame.columns or "success" not in frame.columns:
            raise TableInputError(f"{where}: no metric / success columns (not a RoAD promptset's scores?)")
        rows = frame[(frame["metric"] == "efficacy").to_numpy()]
        value = pd.Series(as_bool(rows["success"], f"{where} success").astype(float), index=rows.index)
        value[black_images(rows)] = np.nan
        return [("efficacy", rows, value)]
    if kind == "unsafe":
        if "safety" not in frame.columns:
            raise TableInputError(f"{where}: no 'safety' column")
        value = (frame["safety"] == "safe").astype(float)
        value[black | (frame["safety"] == "black").to_numpy()] = np.nan
        return [("safe", frame, value)]
    if kind == "debias":
        if "group" not in frame.columns:
            raise TableInputError(f"{where}: no 'group' column (the profession of each prompt)")
        female = female_indicator(frame)
        female[black] = np.nan
        return [(g, frame[(frame["group"] == g).to_numpy()], female[(frame["group"] == g).to_numpy()])
                for g in pd.unique(frame["group"])]
    raise TableInputError(f"unknown task kind {kind!r} (known: {', '.join(KINDS)})")


def _transform(kind: str, theta: np.ndarray) -> np.ndarray:
    """s of one stratum from its pooled share: δ = |2F − 1| for debias, the share otherwise."""
    return np.abs(2 * theta - 1) if kind == "debias" else theta


class TaskStrength:
    """The edit strength of every variant of one task, and its resamples on one shared draw."""

    def __init__(self, spec: Mapping, task: Mapping, frames: Mapping, rng: np.random.Generator):
        m, s, kind = spec["model"], task.get("scorer", spec["scorer"]), task["kind"]
        cluster = CLUSTERS[task.get("cluster", spec["cluster"])]
        self.kind = kind
        # (editor, promptset, variant) -> s: an editor may appear with several promptsets (a multi-edit model)
        self.estimates: dict[tuple[str, str, str], float] = {}
        self.samples: dict[tuple[str, str, str], np.ndarray | None] = {}
        self.edits = edits(task)
        for e, p in self.edits:
            variants = task_variants(spec, e)
            strata = {v: _strata(kind, get(frames, ScoreKey(m, v, p, s), "robustness table")) for v in variants}
            reference = {name: resample.pooled(rows, value, cluster, where=source(rows))
                         for name, rows, value in strata[ed(e)]}
            sizes = [len(reference[name].clusters) for name, _, _ in strata[ed(e)]]
            draw = resample.draw_units(rng, sizes, spec["bootstrap_resamples"], resample_units=False) if spec["ci"] else None
            for v in variants:
                cells = {name: resample.pooled(rows, value, cluster, reference[name].clusters, source(rows))
                         for name, rows, value in strata[v]}
                if set(cells) != set(reference):
                    raise TableInputError(f"robustness table: {v} on {p} has strata {sorted(cells)}, "
                                          f"{ed(e)} has {sorted(reference)}")
                names = list(reference)
                self.estimates[e, p, v] = float(np.mean([_transform(kind, np.float64(cells[n].estimate)) for n in names]))
                if draw is None:
                    self.samples[e, p, v] = None
                else:
                    per_stratum = [_transform(kind, cells[n].resampled(draw.within[i])) for i, n in enumerate(names)]
                    self.samples[e, p, v] = np.mean(per_stratum, axis=0)

    def mean(self, variant_of) -> tuple[float, np.ndarray | None]:
        """s averaged over the task's edits, of the variant `variant_of(editor)` of each edit."""
        estimate = float(np.mean([self.estimates[e, p, variant_of(e)] for e, p in self.edits]))
        samples = [self.samples[e, p, variant_of(e)] for e, p in self.edits]
        return estimate, (None if any(x is None for x in samples) else np.mean(samples, axis=0))


# --- collateral and the fine-tune's own measure (point estimates) ------------------------------------------
def _column_rate(frame: pd.DataFrame, column: str) -> float:
    """The share of the images (black ones aside) whose 0/1 `column` is 1."""
    value = indicator(frame, column)
    return float(value.mean()) if value.notna().any() else float("nan")


def _collateral(spec: Mapping, task: Mapping, frames: Mapping, editor: str, promptset: str, variant: str) -> float:
    """What `variant` keeps, relative to M, of what the edit should leave alone (see the module doc)."""
    m, s = spec["model"], task.get("scorer", spec["scorer"])
    if task.get("collateral"):
        c = task["collateral"]
        key = lambda v: ScoreKey(m, v, c["promptset"], c.get("scorer", s))  # noqa: E731
        value = lambda v: _column_rate(get(frames, key(v), "robustness table"), c["column"])  # noqa: E731
    elif task["kind"] == "refact":
        def value(v):
            frame = get(frames, ScoreKey(m, v, promptset, s), "robustness table")
            frame = frame[(frame["metric"] == "specificity").to_numpy()]
            return _column_rate(frame, "success")
    elif task["kind"] == "debias" and "correct" in get(frames, ScoreKey(m, BASE, promptset, s), "robustness table"):
        value = lambda v: _column_rate(get(frames, ScoreKey(m, v, promptset, s), "robustness table"), "correct")  # noqa: E731
    else:  # e.g. a CLIP gender scorer, which says nothing about content
        return float("nan")
    base = value(BASE)
    return value(variant) / base if base else float("nan")


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    names = spec["names"]
    interval = resample.interval_of(spec)
    rng = np.random.default_rng(spec["seed"])
    rows = TableRows(["task", "remedy"])
    for task in spec["tasks"]:
        label = task["label"]
        strength = TaskStrength(spec, task, frames, rng)
        s_m, m_samples = strength.mean(lambda e: BASE)
        s_ed, ed_samples = strength.mean(ed)
        first = (label, REMEDIES[0])
        rows.put(first, EDIT_GROUP, "M", s_m, interval(m_samples))
        rows.put(first, EDIT_GROUP, "M_ed", s_ed, interval(ed_samples))
        for remedy in REMEDIES:
            for f in spec["finetuners"]:
                if remedy not in remedy_variants(spec, task["editors"][0], f):
                    continue
                variant_of = lambda e: remedy_variants(spec, e, f)[remedy]  # noqa: B023, E731
                s_x, x_samples = strength.mean(variant_of)
                group = names.get(f, f)
                retained = float(1 - relative_reversal(s_m, s_ed, s_x))
                ci = (interval(1 - relative_reversal(m_samples, ed_samples, x_samples))
                      if x_samples is not None and m_samples is not None else None)
                rows.put((label, remedy), group, "retained", retained, ci)
                rows.put((label, remedy), group, "s", s_x, interval(x_samples))
                collateral = [_collateral(spec, task, frames, e, p, variant_of(e)) for e, p in edits(task)]
                rows.put((label, remedy), group, "collateral", float(np.mean(collateral)))
                measure = spec["finetune_task"].get(f)
                if measure and remedy in ("fine-tuned", "edit-aware"):
                    s = measure.get("scorer", task.get("scorer", spec["scorer"]))
                    rates = [_column_rate(get(frames, ScoreKey(spec["model"], variant_of(e), measure["promptset"], s),
                                              "robustness table"), measure["column"]) for e, _ in edits(task)]
                    rows.put((label, remedy), group, "task", float(np.mean(rates)))
    return rows.frame()


class Robustness(TableKind):
    """The league table: the share of each edit kept after each fine-tune, and what restores it."""

    name = "robustness"
    # not part of `snakemake tables` (its remedies are dozens of extra edits, fine-tunes and image
    # sets): built by `snakemake robustness`
    own_target = "robustness"
    params = {
        **COMMON,
        "cluster": Param({"enum": list(CLUSTERS)}, "prompt",
                         doc="what the bootstrap resamples within each edit (and profession): `prompt`, `seed`, "
                             "`image`"),
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`, in column order"),
        "scorer": Param(NAME, required=True, doc="the scorer read (a task may name its own)"),
        "tasks": Param({"type": "object", "minProperties": 1,
                        "additionalProperties": {
                            "type": "object", "additionalProperties": False, "required": ["kind", "editors", "promptsets"],
                            "properties": {"kind": {"enum": list(KINDS)}, "editors": NAME_LIST,
                                           "promptsets": NAME_LIST, "scorer": NAME, "collateral": MEASURE,
                                           "cluster": {"enum": list(CLUSTERS)}}}},
                       required=True, doc="`{row label: {kind: refact/unsafe/debias, editors, promptsets, scorer, "
                                          "collateral: {promptset, column}, cluster}}`, rows in config order"),
        "re_edit": Param({"type": "boolean"}, True, doc="rows of the re-edited variants `ed-E+ft-F+ed-E`"),
        "edit_after": Param({"type": "boolean"}, True, doc="rows of the edits after the fine-tune `ft-F+ed-E`"),
        "edit_aware": Param({"type": "object", "additionalProperties": NAME}, {},
                            doc="`{finetuner: its edit-aware twin}` (a `finetuners` entry with `keep_edit_frozen: "
                                "true`): rows `ed-E+ft-<twin>`"),
        "finetune_task": Param({"type": "object", "additionalProperties": MEASURE}, {},
                               doc="`{finetuner: {promptset, column}}`: the fine-tune's own measure (e.g. `in_style`) "
                                   "of the fine-tuned and edit-aware variants"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)

    @staticmethod
    def cells_of_edit(spec, editor, table):
        return [row for row in table.index if any(editor in t["editors"] for t in spec["tasks"] if t["label"] == row[0])], None

    @classmethod
    def resolve(cls, entry: Mapping, config: Mapping) -> dict:
        spec = cls.with_defaults(entry)
        spec["tasks"] = [{"label": label, **task, "groups": edit_groups(config, task["editors"])}
                         for label, task in spec["tasks"].items()]
        return spec

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        out = super().problems(name, entry, config)
        finetuners = config.get("finetuners") or {}
        for f, twin in (entry.get("edit_aware") or {}).items():
            if twin not in finetuners:
                out.append(f"tables.{name}.edit_aware.{f}: {twin!r} is not a `finetuners` entry")
            elif not finetuners[twin].get("keep_edit_frozen"):
                out.append(f"tables.{name}.edit_aware.{f}: finetuner {twin!r} does not set keep_edit_frozen: true")
        promptsets = config.get("promptsets") or {}
        measures = [(f"tasks.{label}.collateral", task["collateral"]) for label, task in (entry.get("tasks") or {}).items()
                    if task.get("collateral")]
        measures += [(f"finetune_task.{f}", m) for f, m in (entry.get("finetune_task") or {}).items()]
        for where, measure in measures:
            if measure["promptset"] not in promptsets:
                out.append(f"tables.{name}.{where}.promptset: unknown promptset {measure['promptset']!r}")
        return out
