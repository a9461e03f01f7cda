"""Table 5 as printed: the safety label rates of every scorer side by side.

The study's Table 5 puts the scorers (Human, the zero-shot classifier, the safety checker) in
column groups, one column per label each scorer gives, and the variants in rows:

    Base        M, M_ed
    <F>         [M_ft,] M_ed_ft, Δ, Flip        for each fine-tuner F

Every number is the `unsafe` kind's (tables/unsafe.py: the label's rate, Δ = |rate(M_ed) −
rate(M_ed_ft)|, Flip = the share of (prompt, seed) pairs labelled L after fine-tuning but not
before, with the same bootstrap CIs): this kind only lays them out per scorer. A scorer shows the
labels it gives (`labels`, e.g. no `undecidable` for the automatic ones); the default is every
safety label.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from editrobust.plugins import Param

from . import COMMON, NAME, NAME_LIST, NAMES, TableKind, unsafe
from .layout import HIGH, LOW, TableRows
from .load import SAFETY, TableInputError
from .marks import UNEDITED

LABEL_LIST = {"type": "array", "minItems": 1, "items": {"enum": list(SAFETY)}}


def scorer_labels(spec: Mapping, scorer: str) -> list[str]:
    return list(spec["labels"].get(scorer, SAFETY))


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    unknown = [s for s in spec["labels"] if s not in spec["scorers"]]
    if unknown:
        raise TableInputError(f"labels given for scorer(s) {unknown} the table does not show ({spec['scorers']})")
    names = spec["names"]
    rows = TableRows(["group", "variant"])
    for s in spec["scorers"]:
        # One scorer at a time through the unsafe table: the same numbers, CIs and checks.
        part = unsafe.build({**spec, "scorers": [s], "labels": scorer_labels(spec, s), "mcnemar": False}, frames)
        for (_, label), cells in part.iterrows():
            for group, quantity in part.columns:
                if quantity.endswith((LOW, HIGH)):
                    continue
                low, high = (group, quantity + LOW), (group, quantity + HIGH)
                ci = (cells[low], cells[high]) if low in part.columns and not pd.isna(cells[low]) else None
                rows.put((group, quantity), names.get(s, s), names.get(label, label), cells[(group, quantity)], ci)
    return rows.frame()


class SafetyRates(TableKind):
    """The study's Table 5: safety label rates, Δ and Flip per scorer (columns) and variant (rows)."""

    name = "safety_rates"
    params = {
        **COMMON,
        "editor": Param(NAME, required=True, doc="the edit E"),
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`, in row order"),
        "promptset": Param(NAME, required=True, doc="a name from `promptsets`"),
        "scorers": Param(NAME_LIST, required=True,
                         doc="scorers with a `safety` label, one column group each (e.g. human, zero-shot, checker)"),
        "labels": Param({"type": "object", "additionalProperties": LABEL_LIST}, {},
                        doc="{scorer: the labels shown}; a scorer not named shows every safety label"),
        "with_ft": Param({"type": "boolean"}, False, doc="also show M_ft"),
        "names": Param({"type": "object", "additionalProperties": {"type": "string"}}, {},
                       doc="display names of fine-tuners, scorers and labels, e.g. `{zs_safety: Zero-shot, black: "
                           "Black Image}`"),
    }
    inputs = staticmethod(unsafe.inputs)
    run = staticmethod(build)

    @staticmethod
    def cells_of_edit(spec, editor, table):
        """Every row of an edited variant (the rows of M and M_ft are unedited)."""
        return [r for r in table.index if r[1] not in UNEDITED], None
