"""The robustness league table as a heatmap: the share of each edit kept, per fine-tuner.

Drawn from a `robustness` table's CSV (tables/robustness.py): one row per (task, remedy), one
column per fine-tuner, the colour the `retained` share (clipped to [0, 1]: red = back to M,
green = as edited), each cell printed with its bootstrap CI; an empty cell is a remedy the table
has no variant for (an edit-aware twin not configured). So the figure shows exactly the table's
numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from editrobust import paths
from editrobust.plugins import Param
from editrobust.tables.layout import HIGH, LOW

from . import COMMON, TableFigure, add_footnotes
from .bars import NOTE, _number, read_table
from .spec import FigureInputError

QUANTITY = "retained"


def league_values(table: pd.DataFrame, labels: list[str], where: str) -> pd.DataFrame:
    """One record per (row, fine-tuner): retained, lo, hi (NaN where the table has no cell)."""
    columns = [c for c in table.columns if c.endswith(":" + QUANTITY)]
    if not columns:
        raise FigureInputError(f"{where}: no '<fine-tuner>:{QUANTITY}' columns (not a robustness table?)")
    records = []
    for _, row in table.iterrows():
        name = " · ".join(str(row[c]) for c in labels)
        for column in columns:
            records.append(dict(row=name, finetuner=column.split(":", 1)[0], value=_number(row[column]),
                                lo=_number(row.get(column + LOW, "")), hi=_number(row.get(column + HIGH, ""))))
    return pd.DataFrame(records)


def build(spec: Mapping, files: Mapping[str, Path]):
    from matplotlib.figure import Figure

    path = files[paths.table(spec["table"])]
    table, labels = read_table(path)
    data = league_values(table, labels, str(path))
    rows, finetuners = list(pd.unique(data["row"])), list(pd.unique(data["finetuner"]))
    grid = data.pivot(index="row", columns="finetuner", values="value").reindex(index=rows, columns=finetuners)
    fig = Figure(figsize=(1.6 * len(finetuners) + 3.2, 0.42 * len(rows) + 1.4), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.clip(grid.to_numpy(dtype=float), 0, 1), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for _, cell in data.iterrows():
        if np.isnan(cell["value"]):
            continue
        text = f"{cell['value']:.2f}"
        if not (np.isnan(cell["lo"]) or np.isnan(cell["hi"])):
            text += f"\n[{cell['lo']:.2f}, {cell['hi']:.2f}]"
        ax.text(finetuners.index(cell["finetuner"]), rows.index(cell["row"]), text, ha="center", va="center",
                fontsize=6.5)
    ax.set_xticks(range(len(finetuners)), finetuners, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, label="share of the edit kept (1 = as edited, 0 = as M)", shrink=0.8)
    add_footnotes(fig, sorted({n for n in table.get(NOTE, pd.Series(dtype=str)) if n}))
    fig.suptitle(spec.get("title") or f"{spec['table']}: share of the edit kept after fine-tuning (bootstrap CIs)",
                 fontsize=10)
    return fig, data


class League(TableFigure):
    """The robustness league table as a heatmap of the share of each edit kept, with CIs."""

    name = "league"
    table_kinds = ("robustness",)
    wrong_kind = ", not robustness"
    params = {
        **COMMON,
        "table": Param({"$ref": "#/$defs/name"}, required=True, doc="a table of kind `robustness`"),
    }
    run = staticmethod(build)
