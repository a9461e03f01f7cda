"""The shape every table builder returns, and the spelling its columns follow.

A table is a DataFrame whose columns are a two-level MultiIndex (group, quantity), e.g.
("Base", "M_ed") or ("lora", "Δ"), in the study's left-to-right order, and whose index holds the
row labels (one or more levels, e.g. profession, or (scorer, label)). Cells are numbers. By
convention a quantity q may come with:
  "q lo", "q hi"   its confidence interval (the renderers print "q [lo, hi]"),
  "q icon"         a text icon for it (Table 6; printed before the number),
  "q mark"         a mark after it ("†": the cell depends on an edit that missed its own target;
                   the table's footnote, in `table.attrs["notes"]`, says which and how).
A row labelled STD_ROW holds standard deviations (printed "±x", as the study's Avg.(std.) rows).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd

LOW, HIGH, ICON, MARK = " lo", " hi", " icon", " mark"
AVG_ROW, STD_ROW = "Avg.", "std."


class TableRows:
    """Collects cells row by row, keeping the order in which rows and columns first appear."""

    def __init__(self, index_names: Sequence[str]):
        self.index_names = list(index_names)
        self.rows: dict[Hashable, dict] = {}
        self.columns: dict[tuple[str, str], None] = {}

    def put(self, row: Hashable, group: str, quantity: str, value, ci: tuple[float, float] | None = None) -> None:
        cells = self.rows.setdefault(row, {})
        self._set(cells, (group, quantity), value)
        if ci is not None:
            self._set(cells, (group, quantity + LOW), ci[0])
            self._set(cells, (group, quantity + HIGH), ci[1])

    def _set(self, cells: dict, column: tuple[str, str], value) -> None:
        self.columns.setdefault(column, None)
        cells[column] = value

    def frame(self) -> pd.DataFrame:
        columns = pd.MultiIndex.from_tuples(list(self.columns), names=["group", "quantity"])
        labels = list(self.rows)
        if len(self.index_names) > 1:
            index = pd.MultiIndex.from_tuples(labels, names=self.index_names)
        else:
            index = pd.Index(labels, name=self.index_names[0], dtype=object)
        data = [[self.rows[r].get(c, np.nan) for c in columns] for r in labels]
        return pd.DataFrame(data, index=index, columns=columns)

