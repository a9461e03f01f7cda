"""Marks on the cells that depend on an edit which missed its own target.

An edit that ran but missed its target (editors.check_edit) is stored with `"reached": false`
and the figure it missed in its variant.json. A table reads the records of the edits it shows
(their variant.json files are inputs of make_table, `record_paths`), and every cell that depends
on a missed edit gets a mark (layout.MARK): "†" after the number in .md and .tex and in a
"<quantity> mark" column of the CSV, with a footnote naming the edit and what it missed (after
the table in .md and .tex, in the CSV's `note` column of the marked rows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from editrobust import paths
from editrobust.editors import Outcome
from editrobust.variant_names import ed

from .layout import HIGH, ICON, LOW, MARK

SYMBOL = "†"
UNEDITED = ("M", "M_ft")  # quantities of the unedited variants: no edit's mark applies to them
NOTE_COLUMN = ("", "note")


def record_paths(spec: Mapping, editors) -> dict[str, str]:
    """{editor: the variant.json of its edited variant}, for the edits a table shows."""
    return {e: paths.variant_json(spec["model"], ed(e)) for e in dict.fromkeys(editors)}


def missed_edits(records: Mapping[str, Path]) -> dict[str, str]:
    """{editor: footnote} of the edits whose record says they missed their target."""
    out = {}
    for editor, path in records.items():
        info = json.loads(Path(path).read_text())
        if info.get("reached") is False:  # edit_model stores the method's Outcome beside it
            out[editor] = f"{ed(editor)} missed its target: {Outcome(**info['target']).describe()}"
    return out


def apply_marks(table: pd.DataFrame, missed: Mapping[str, str], cells_of_edit) -> pd.DataFrame:
    """The table with a mark on every cell of the edited quantities that depends on a missed edit
    (`cells_of_edit(editor)` -> (rows, (group, quantity) columns or None for all)), and the footnotes;
    unchanged when nothing missed."""
    if not missed:
        return table
    out = table.copy()
    quantities = [(g, q) for g, q in table.columns
                  if q not in UNEDITED and not q.endswith((LOW, HIGH, ICON, MARK))]
    notes, row_notes = [], {}
    for editor, note in missed.items():
        rows, columns = cells_of_edit(editor)
        rows = [r for r in rows if r in out.index]
        if not rows:
            continue
        notes.append(f"{SYMBOL} {note}")
        for row in rows:
            row_notes.setdefault(row, []).append(note)
            for g, q in quantities:
                if (columns is None or (g, q) in columns) and not pd.isna(out.at[row, (g, q)]):
                    out.loc[row, (g, q + MARK)] = SYMBOL
    if row_notes:
        out[NOTE_COLUMN] = [f"{SYMBOL} " + "; ".join(row_notes[r]) if r in row_notes else "" for r in out.index]
    out.attrs["notes"] = notes
    return out
