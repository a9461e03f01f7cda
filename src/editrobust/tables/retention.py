"""Table 6: the edit's strength in M, M_ed, M_ft, M_ed_ft as five-level icons, and the share kept.

Each row is a task of the entry's `tasks` ({label: {kind, editors, promptsets[, scorer]}}; in the
resolved spec a list of {label, kind, ...} in config order); its edit strength per variant is, by
kind,
  refact  the efficacy (mean over the task's edits; `metrics.refact_scores`),
  unsafe  the share of images labelled safe,
  debias  the mean gender δ over the professions (lower = stronger edit).
Icons follow the study's Appendix E: for efficacy and safe share ○ [0, 10 %), ◔ [10, 25 %),
◑ [25, 50 %), ◕ [50, 75 %), ● [75, 100 %]; for δ ○ δ > 0.75, ◔ (0.5, 0.75], ◑ (0.25, 0.5],
◕ (0.1, 0.25], ● δ ≤ 0.1. (The study states efficacy ranges without saying which end is closed;
we close the lower end.)
Per fine-tuner, `retained` = 1 − relative reversal = 1 − (s(M_ed) − s(M_ed_ft)) / (s(M_ed) − s(M))
(`metrics.relative_reversal`; the study's "6.78 % of the editing effect is reversed" is a
retained 0.932), iconed on the efficacy scale after clipping to [0, 1]; NaN when the edit had no
effect (s(M_ed) = s(M)).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics import female_share, gender_delta, label_rates, relative_reversal
from editrobust.plugins import Param

from . import COMMON, NAME, NAME_LIST, NAMES, TableKind
from .debias import female_indicator
from .layout import ICON, TableRows
from .load import SAFETY, TableInputError, check_labels, get, source
from .refact import edit_scores, roles
from .spec import ScoreKey, edit_groups, edits

ICONS = ("○", "◔", "◑", "◕", "●")  # empty .. full: weakest .. strongest edit
SHARE_BOUNDS = (0.10, 0.25, 0.50, 0.75)
DELTA_BOUNDS = (0.10, 0.25, 0.50, 0.75)
BASE_GROUP = "Base"


def share_icon(value: float) -> str | None:
    """The study's efficacy levels: [0, .10) ○, [.10, .25) ◔, [.25, .50) ◑, [.50, .75) ◕, [.75, 1] ●."""
    if value is None or np.isnan(value):
        return None
    return ICONS[int(np.searchsorted(SHARE_BOUNDS, value, side="right"))]


def delta_icon(value: float) -> str | None:
    """The study's δ levels: δ ≤ .1 ●, (.1, .25] ◕, (.25, .5] ◑, (.5, .75] ◔, > .75 ○."""
    if value is None or np.isnan(value):
        return None
    return ICONS[len(DELTA_BOUNDS) - int(np.searchsorted(DELTA_BOUNDS, value, side="left"))]


def _mean_delta(frame: pd.DataFrame) -> float:
    female = female_indicator(frame)
    if "group" not in frame.columns:
        raise TableInputError(f"{source(frame)}: no 'group' column (the profession of each prompt)")
    deltas = [gender_delta(female_share(frame.loc[(frame["group"] == g) & female.notna(), "gender"].tolist()))
              for g in pd.unique(frame["group"])]
    return float(np.mean(deltas))


def _safe_share(frame: pd.DataFrame) -> float:
    check_labels(frame, "safety", SAFETY, source(frame))
    return label_rates(frame["safety"], SAFETY)["safe"]


# kind -> (edit strength of one variant's score frame, icon of that strength)
STRENGTH = {
    "refact": (lambda f: edit_scores(f)["efficacy"], share_icon),
    "unsafe": (_safe_share, share_icon),
    "debias": (_mean_delta, delta_icon),
}


def inputs(spec: Mapping) -> list[ScoreKey]:
    m = spec["model"]
    keys = []
    for task in spec["tasks"]:
        s = task.get("scorer", spec["scorer"])
        for e, p in edits(task):
            keys += [ScoreKey(m, variant(e), p, s) for variant in roles(spec["finetuners"]).values()]
    return keys


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    m, names = spec["model"], spec["names"]
    rows = TableRows(["task"])
    for task in spec["tasks"]:
        label = task["label"]
        if task["kind"] not in STRENGTH:
            raise TableInputError(f"task {label!r}: unknown kind {task['kind']!r} (known: {', '.join(STRENGTH)})")
        strength, icon = STRENGTH[task["kind"]]
        s = task.get("scorer", spec["scorer"])
        score = {}
        for role, variant in roles(spec["finetuners"]).items():
            score[role] = float(np.mean([strength(get(frames, ScoreKey(m, variant(e), p, s), "retention table"))
                                         for e, p in edits(task)]))

        def put(group: str, quantity: str, value: float, icon_of) -> None:
            rows.put(label, group, quantity, value)
            rows.put(label, group, quantity + ICON, icon_of(value))

        put(BASE_GROUP, "M", score["M"], icon)
        put(BASE_GROUP, "M_ed", score["M_ed"], icon)
        for f in spec["finetuners"]:
            group = names.get(f, f)
            put(group, "M_ft", score[f"{f}|M_ft"], icon)
            put(group, "M_ed_ft", score[f"{f}|M_ed_ft"], icon)
            retained = 1 - relative_reversal(score["M"], score["M_ed"], score[f"{f}|M_ed_ft"])
            put(group, "retained", retained, lambda v: share_icon(float(np.clip(v, 0, 1))) if not np.isnan(v) else None)
    return rows.frame()


class Retention(TableKind):
    """Table 6: edit strength of M, M_ed, M_ft, M_ed_ft as the study's five-level icons, and the share retained."""

    name = "retention"
    params = {
        **COMMON,
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`, in column order"),
        "scorer": Param(NAME, required=True, doc="the scorer read (a task may name its own)"),
        "tasks": Param({"type": "object", "minProperties": 1,
                        "additionalProperties": {
                            "type": "object", "additionalProperties": False, "required": ["kind", "editors", "promptsets"],
                            "properties": {"kind": {"enum": list(STRENGTH)}, "editors": NAME_LIST,
                                           "promptsets": NAME_LIST, "scorer": NAME}}},
                       required=True, doc="`{row label: {kind: refact/unsafe/debias, editors, promptsets, scorer}}`, "
                                          "rows in config order"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)

    @staticmethod
    def cells_of_edit(spec, editor, table):
        """The rows of the tasks that hold the edit."""
        return [task["label"] for task in spec["tasks"] if editor in task["editors"]], None

    @classmethod
    def resolve(cls, entry: Mapping, config: Mapping) -> dict:
        spec = cls.with_defaults(entry)
        spec["tasks"] = [{"label": label, **task, "groups": edit_groups(config, task["editors"])}
                         for label, task in spec["tasks"].items()]
        return spec
