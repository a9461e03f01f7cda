"""The study's Figure 3: bars of M, M_ed, M_ft and M_ed_ft per fine-tuner, with CI whiskers.

Drawn from a table's CSV (results/tables/<table>.csv, see tables/render.flat): its value columns
are "group:quantity", with M and M_ed in group "Base" and M_ft, M_ed_ft in one group per
fine-tuner, and the bootstrap CI bounds as "quantity lo" / "quantity hi". So the bars show
exactly the table's numbers and intervals (one bootstrap, computed once by the tables stage).
One panel per table row (refact: RoAD type × metric; debias: profession and Avg.; unsafe:
scorer × label), or the rows listed in `rows`; within a panel one cluster of bars per fine-tuner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from editrobust import paths
from editrobust.plugins import Param
from editrobust.tables.debias import NO_GENDER_ROW
from editrobust.tables.layout import HIGH, LOW, MARK, STD_ROW
from editrobust.tables.marks import NOTE_COLUMN, SYMBOL

from . import COMMON, TableFigure, add_footnotes
from .spec import BAR_TABLE_KINDS, FigureInputError

BASE_GROUP = "Base"
# Rows drawn only when asked for by name: the std. row, and Table 1's share of images without a gender
NOT_PANELS = (STD_ROW, NO_GENDER_ROW)
NOTE = NOTE_COLUMN[1]  # the table CSV's footnote column (tables/marks.py)
ROLES = ("M", "M_ed", "M_ft", "M_ed_ft")
COLORS = {"M": "#9e9e9e", "M_ed": "#1f77b4", "M_ft": "#ffbf66", "M_ed_ft": "#d62728"}
Y_LABELS = {"refact": "success rate", "debias": "δ (0 = balanced)", "unsafe": "share of images"}


def read_table(path) -> tuple[pd.DataFrame, list[str]]:
    """The table CSV and its row-label columns (the columns without a "group:" prefix)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise FigureInputError(f"table not found: {path}") from None
    labels = [c for c in table.columns if ":" not in c and c != NOTE]
    if not labels:
        raise FigureInputError(f"{path}: no row-label columns (is it a table CSV?)")
    return table, labels


def _number(text: str) -> float:
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return math.nan


def bar_values(table: pd.DataFrame, labels: Sequence[str], rows: Sequence[str] | None, where: str) -> pd.DataFrame:
    """One record per (panel, fine-tuner, role): value, lo, hi (NaN where the table has none).

    Panels are the table rows (their labels joined by " · "), the std. and no-gender rows excluded
    unless `rows` names them; M and M_ed
    (group Base) are repeated in every fine-tuner's cluster so each cluster reads on its own.
    """
    columns = set(table.columns)
    groups = list(dict.fromkeys(c.split(":", 1)[0] for c in table.columns if ":" in c))
    finetuners = [g for g in groups if g != BASE_GROUP]
    if f"{BASE_GROUP}:M_ed" not in columns or not finetuners:
        raise FigureInputError(f"{where}: needs columns {BASE_GROUP}:M_ed and <fine-tuner>:M_ed_ft (not a table of "
                               "the four variants?)")
    panel_names = [" · ".join(str(r[c]) for c in labels) for _, r in table.iterrows()]
    if rows:
        unknown = [r for r in rows if r not in panel_names]
        if unknown:
            raise FigureInputError(f"{where}: no row {unknown[0]!r} (rows: {', '.join(panel_names)})")
    records = []
    for panel, (_, row) in zip(panel_names, table.iterrows()):
        if (rows and panel not in rows) or (not rows and row[labels[0]] in NOT_PANELS):
            continue
        for f in finetuners:
            for role in ROLES:
                group = BASE_GROUP if role in ("M", "M_ed") else f
                column = f"{group}:{role}"
                if column not in columns:
                    continue
                records.append(dict(panel=panel, finetuner=f, role=role, value=_number(row[column]),
                                    lo=_number(row.get(column + LOW, "")), hi=_number(row.get(column + HIGH, "")),
                                    mark=row.get(column + MARK, "")))
    if not records:
        raise FigureInputError(f"{where}: no rows to draw")
    return pd.DataFrame(records)


def build(spec: Mapping, files: Mapping[str, Path]):
    from matplotlib.figure import Figure

    path = files[paths.table(spec["table"])]
    table, labels = read_table(path)
    data = bar_values(table, labels, spec.get("rows"), str(path))
    marked_panels = set(data.loc[data["mark"] != "", "panel"])
    panels = list(pd.unique(data["panel"]))
    finetuners = list(pd.unique(data["finetuner"]))
    n_cols = min(spec["columns"], len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    width = max(3.2, 0.45 * len(finetuners) * len(ROLES) * 0.5 + 1.2)
    fig = Figure(figsize=(width * n_cols, 2.8 * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    bar = 0.8 / len(ROLES)
    for ax, panel in zip(axes, panels):
        cells = data[data["panel"] == panel]
        for j, role in enumerate(ROLES):
            part = cells[cells["role"] == role].set_index("finetuner").reindex(finetuners)
            if part["value"].isna().all():
                continue
            x = np.arange(len(finetuners)) + (j - (len(ROLES) - 1) / 2) * bar
            values = part["value"].to_numpy()
            has_ci = ~(part["lo"].isna() | part["hi"].isna()).to_numpy()
            err = np.vstack([np.where(has_ci, values - part["lo"].to_numpy(), 0),
                             np.where(has_ci, part["hi"].to_numpy() - values, 0)])
            ax.bar(x, values, bar, color=COLORS[role], label=role,
                   yerr=np.clip(err, 0, None) if has_ci.any() else None, capsize=2, error_kw={"lw": 0.8})
        ax.set_xticks(np.arange(len(finetuners)), finetuners, fontsize=8)
        ax.set_title(f"{panel} {SYMBOL}" if panel in marked_panels else panel, fontsize=9)
        ax.set_ylabel(Y_LABELS.get(spec.get("table_kind"), "value"), fontsize=8)
        ax.set_ylim(0, max(1.0, float(np.nanmax(cells[["value", "hi"]].to_numpy(dtype=float))) * 1.05))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=len(ROLES), fontsize=8, frameon=False)
    notes = sorted({n for n in table.get(NOTE, pd.Series(dtype=str)) if n})
    add_footnotes(fig, notes)
    fig.suptitle(spec.get("title") or f"{spec['table']}: M, M_ed, M_ft, M_ed_ft per fine-tuner (bootstrap CIs)", fontsize=10)
    return fig, data


class Bars(TableFigure):
    """The study's Figure 3 from a table: bars of M, M_ed, M_ft and M_ed_ft per fine-tuner, CI whiskers."""

    name = "bars"
    table_kinds = BAR_TABLE_KINDS
    wrong_kind = f"; bars draw tables of kind {', '.join(BAR_TABLE_KINDS)} (columns M, M_ed, M_ft, M_ed_ft)"
    params = {
        **COMMON,
        "table": Param({"$ref": "#/$defs/name"}, required=True,
                       doc=f"a table of kind {', '.join(BAR_TABLE_KINDS)}: its M, M_ed (group Base), M_ft and M_ed_ft "
                           "per fine-tuner, whiskers from its CI columns"),
        "rows": Param({"type": "array", "minItems": 1, "items": {"type": "string"}},
                      doc="the table rows drawn (labels joined by ' · ', e.g. `appearance · efficacy`, `Avg.`; "
                          "default: all but std.)"),
        "columns": Param({"type": "integer", "minimum": 1}, 3, doc="panels per row of the figure"),
    }
    run = staticmethod(build)

    @classmethod
    def resolve(cls, entry: Mapping, config: Mapping) -> dict:
        return {**cls.with_defaults(entry), "table_kind": (config.get("tables") or {})[entry["table"]]["kind"]}

