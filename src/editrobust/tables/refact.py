"""Figure 3's numbers: ReFACT efficacy / generality / specificity of M, M_ed, M_ft and M_ed_ft.

Each edit E is evaluated on its own RoAD promptset P (the entry's `editors[i]` on `promptsets[i]`)
for every variant: base, ed-E, ft-F and ed-E+ft-F. A cell is the mean over the edits of one
RoAD type (the study's Appearance and Role panels; `groups` comes from the editors' config) of the
per-edit score (`metrics.refact_scores`: the share of successful images of that metric).
The unit is the pair (editors[i], promptsets[i]): a multi-edit model (a ReFACT entry with a list
of rows) appears once per row, paired with each row's promptset, and each pair is one edit.
Δ = |score(M_ed) − score(M_ed_ft)|, and `p` is the paired bootstrap p-value of the change
M_ed → M_ed_ft.

With `ci: true` a cell's CI comes from one bootstrap draw per (RoAD type, metric), shared by the
four variants (paired). By default (`cluster: edit+seed`) it is two-stage: the type's edits are
resampled, then the seeds within each drawn edit, because the cell is a mean over edits and its
uncertainty is mostly which edits there are (on the toy, efficacy after a fine-tune is all or
nothing per edit: seeds alone gave a zero-width interval for a mean over four edits of which one
survived). `cluster: seed` (or prompt, image) keeps the edits fixed; `edit` resamples edits only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics import delta, refact_scores
from editrobust.metrics.rates import REFACT_METRICS, as_bool
from editrobust.plugins import Param
from editrobust.variant_names import ed, ed_ft, ft

from . import COMMON, NAME, NAME_LIST, NAMES, TableKind, resample
from .layout import TableRows
from .load import TableInputError, black_images, get, source
from .spec import CLUSTERS, EDIT_CLUSTERS, EDIT_DEFAULT_CLUSTER, ScoreKey, cluster_levels, edit_groups, edits

Pair = tuple[str, str]  # (editor, promptset): one edit of a table

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
    """{efficacy, generality, specificity: share of successes among the images that are not
    black} of one RoAD score file."""
    where = source(frame)
    missing = [c for c in ("metric", "success") if c not in frame.columns]
    if missing:
        raise TableInputError(f"{where}: missing column(s) {', '.join(missing)} (not a RoAD promptset's scores?)")
    try:
        return refact_scores(frame[~black_images(frame)])
    except ValueError as err:
        raise TableInputError(f"{where}: {err}") from None


class EditScores:
    """One edit's score frames, one per role (variant), each checked once."""

    def __init__(self, spec: Mapping, frames: Mapping, editor: str, promptset: str, variant_of: Mapping):
        m, s = spec["model"], spec["scorer"]
        self.frames = {role: get(frames, ScoreKey(m, variant(editor), promptset, s), f"{spec['kind']} table")
                       for role, variant in variant_of.items()}
        self.scores = {role: edit_scores(frame) for role, frame in self.frames.items()}

    def cells(self, role: str, metric: str, cluster: tuple, reference: pd.Index | None) -> resample.Pooled:
        """Per-cluster success sums of one metric in one role's frame (aligned to `reference`)."""
        frame = self.frames[role]
        rows = frame[frame["metric"] == metric]
        success = pd.Series(as_bool(rows["success"], f"{source(frame)} success").astype(float), index=rows.index)
        # a black image does not count (NaN): its cluster stays, with one image fewer
        success[black_images(rows)] = np.nan
        return resample.pooled(rows, success, cluster, reference, source(frame))


def load_edits(spec: Mapping, frames: Mapping, variant_of: Mapping) -> dict[Pair, EditScores]:
    """Each of the table's edits, keyed by its (editor, promptset) pair, its frame per role (`variant_of`)
    read and checked once."""
    return {(e, p): EditScores(spec, frames, e, p, variant_of) for e, p in edits(spec)}


class EditMeans:
    """Means over a group of edits of one metric, and their bootstrap resamples (cluster_levels):
    one draw for the group, made on the reference role's clusters and shared by every role."""

    def __init__(self, edits: list[EditScores], metric: str, spec: Mapping, rng, reference_role: str):
        self.edits, self.metric = edits, metric
        resample_edits, within = cluster_levels(spec["cluster"])
        # edits kept whole are summed per image; the clusters then only check the pairing
        self.cluster = within or CLUSTERS["image"]
        self.draw = None
        if spec["ci"] and all(metric in e.frames[reference_role]["metric"].values for e in edits):
            self.reference = [e.cells(reference_role, metric, self.cluster, None).clusters for e in edits]
            self.draw = resample.draw_units(rng, [len(r) for r in self.reference], spec["bootstrap_resamples"],
                                            resample_units=resample_edits, resample_within=within is not None)

    def __call__(self, role: str) -> tuple[float, np.ndarray | None]:
        """(mean score over the edits, its resampled values or None)."""
        value = float(np.mean([e.scores[role][self.metric] for e in self.edits]))
        if self.draw is None:
            return value, None
        cells = [e.cells(role, self.metric, self.cluster, ref) for e, ref in zip(self.edits, self.reference)]
        return value, resample.mean_of_units(self.draw, cells)


def roles(finetuners) -> dict:
    """{role: variant of an editor}: M, M_ed, and per fine-tuner M_ft and M_ed_ft."""
    out = {"M": lambda e: "base", "M_ed": ed}
    for f in finetuners:
        out[f"{f}|M_ft"] = lambda e, f=f: ft(f)
        out[f"{f}|M_ed_ft"] = lambda e, f=f: ed_ft(e, f)
    return out


def group_order(spec: Mapping) -> dict[str, list[Pair]]:
    """{RoAD type: its (editor, promptset) pairs}, in the order the editors are listed."""
    out: dict[str, list[Pair]] = {}
    for e, p in edits(spec):
        out.setdefault(spec["groups"].get(e, "all"), []).append((e, p))
    return out


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    rng = np.random.default_rng(spec["seed"])
    names = spec["names"]
    loaded = load_edits(spec, frames, roles(spec["finetuners"]))
    rows = TableRows(["edit", "metric"])
    ci = resample.interval_of(spec)

    for group, pairs in group_order(spec).items():
        for metric in REFACT_METRICS:
            row = (group, metric)
            mean = EditMeans([loaded[pair] for pair in pairs], metric, spec, rng, reference_role="M")
            value, samples = mean("M")
            rows.put(row, BASE_GROUP, "M", value, ci(samples))
            edited, edited_samples = mean("M_ed")
            rows.put(row, BASE_GROUP, "M_ed", edited, ci(edited_samples))
            for f in spec["finetuners"]:
                label = names.get(f, f)
                value, samples = mean(f"{f}|M_ft")
                rows.put(row, label, "M_ft", value, ci(samples))
                after, after_samples = mean(f"{f}|M_ed_ft")
                rows.put(row, label, "M_ed_ft", after, ci(after_samples))
                change = after_samples - edited_samples if after_samples is not None else None
                rows.put(row, label, "Δ", delta(edited, after),
                         resample.abs_interval(*ci(change)) if change is not None else None)
                if change is not None:
                    rows.put(row, label, "p", resample.p_value(change))
    return rows.frame()


# The keys of the tables over ReFACT edits (refact, rank_ablation).
EDIT_PARAMS = {
    "editors": Param(NAME_LIST, required=True,
                     doc="the edits; `editors[i]` is evaluated on `promptsets[i]` (its own RoAD row). Edits are "
                         "grouped by their RoAD type (appearance / role). A multi-edit editor (a list of rows) is "
                         "listed once per row, paired with each row's promptset"),
    "promptsets": Param(NAME_LIST, required=True, doc="the promptset of each edit, paired by position"),
    "scorer": Param(NAME, required=True, doc="a scorer with `metric` and `success` (RoAD promptsets)"),
    "cluster": Param({"enum": [*EDIT_CLUSTERS, *CLUSTERS]}, EDIT_DEFAULT_CLUSTER,
                     doc="`edit+<cluster>` resamples the edits, then that cluster within each drawn edit; `edit` "
                         "the edits only; a plain cluster keeps the edits fixed (config/README.md, tables)"),
}


class Refact(TableKind):
    """The study's Figure 3: ReFACT efficacy / generality / specificity of M, M_ed, M_ft, M_ed_ft per RoAD type."""

    name = "refact"
    params = {
        **COMMON,
        **EDIT_PARAMS,
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`, in column order"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)

    @staticmethod
    def cells_of_edit(spec, editor, table):
        """The rows of the edit's RoAD type (each a mean over that type's edits)."""
        return [r for r in table.index if r[0] == spec["groups"].get(editor, "all")], None

    @classmethod
    def resolve(cls, entry: Mapping, config: Mapping) -> dict:
        spec = cls.with_defaults(entry)
        spec["groups"] = edit_groups(config, spec["editors"])
        return spec
