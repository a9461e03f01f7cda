"""Table 7: image quality (CLIP score, FID) of M, each M_ed, each M_ft and each M_ed_ft.

Rows follow the study: (variant, method) = (M, -), (M_ed, editor), (M_ft, fine-tuner),
(M_ed_ft, editor + fine-tuner) for every editor and fine-tuner of the entry; columns are the
entry's `metrics` (default clip_score, fid) read from results/quality/<model>/<variant>/<set>.csv.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from editrobust.plugins import Param
from editrobust.variant_names import ed, ed_ft, ft

from . import COMMON, NAME, NAMES, TableKind
from .layout import TableRows
from .load import get, quality_metrics, source
from .spec import QualityKey

METRIC_NAMES = {"clip_score": "CLIP Score", "fid": "FID"}
DEFAULT_METRICS = ("clip_score", "fid")


def _rows(spec: Mapping) -> list[tuple[tuple[str, str], str]]:
    """((variant label, method label), variant) in the study's order."""
    names = spec["names"]
    out = [(("M", "-"), "base")]
    out += [(("M_ed", names.get(e, e)), ed(e)) for e in spec["editors"]]
    out += [(("M_ft", names.get(f, f)), ft(f)) for f in spec["finetuners"]]
    out += [(("M_ed_ft", f"{names.get(e, e)} + {names.get(f, f)}"), ed_ft(e, f))
            for e in spec["editors"] for f in spec["finetuners"]]
    return out


def inputs(spec: Mapping) -> list[QualityKey]:
    return [QualityKey(spec["model"], variant, spec["quality_set"]) for _, variant in _rows(spec)]


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    metrics = list(spec["metrics"])
    rows = TableRows(["model", "method"])
    for row, variant in _rows(spec):
        frame = get(frames, QualityKey(spec["model"], variant, spec["quality_set"]), "quality table")
        values = quality_metrics(frame, metrics, source(frame, variant))
        for metric in metrics:
            rows.put(row, "", METRIC_NAMES.get(metric, metric), values[metric])
    return rows.frame()


class Quality(TableKind):
    """Table 7: image quality (CLIP score, FID) of M, each M_ed, each M_ft and each M_ed_ft."""

    name = "quality"
    params = {
        **COMMON,
        "quality_set": Param(NAME, required=True, doc="the file `results/quality/<model>/<variant>/<quality_set>.csv`"),
        "editors": Param(NAMES, required=True, doc="names from `editors`"),
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`"),
        "metrics": Param({"type": "array", "minItems": 1, "items": {"type": "string"}}, list(DEFAULT_METRICS),
                         doc="the metrics shown"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)

    @staticmethod
    def cells_of_edit(spec, editor, table):
        """The rows of M_ed and each M_ed_ft of the edit."""
        label = spec["names"].get(editor, editor)
        return [r for r in table.index if r[0] in ("M_ed", "M_ed_ft")
                and (r[1] == label or r[1].startswith(label + " + "))], None
