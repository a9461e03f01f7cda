"""RoAD, the ReFACT edit dataset (`road/RoAD_validation.csv`, `road/RoAD_test.csv`).

Format (one row per edit, columns in this order; technion-cs-nlp/ReFACT at 8b6df79: the
validation file has 10 rows, 5 Role + 5 Appearance; the test file 90 rows, 41 Role + 49 Appearance):

    Type, Prompt, Oracle, Old, New,
    Positive{i}, Positive_oracle{i}, Positive_old{i}, Positive_new{i}    for i = 1..5
    Negative{i}, Negative_new{i}                                         for i = 1..5

`Type` is "Role" or "Appearance". The validation file lacks the five `Positive_oracle{i}` columns
(30 columns); the test file has all 35. The subject is `Prompt`; the edit turns `Old` into `New`.
Cells may be quoted and contain commas, and the files end without a newline, so always parse
them with a CSV reader.

Evaluation (ReFACT's): an image of each prompt is scored by a CLIP pair scorer on two
texts [text_old, text_new]:

    efficacy     image of Prompt       texts [Old, New]                        success: p(new) > p(old)
    generality   image of Positive{i}  texts [Positive_old{i}, Positive_new{i}]  success: p(new) > p(old)
    specificity  image of Negative{i}  texts [Negative{i}, Negative_new{i}]      success: p(old) > p(new)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from editrobust.io import read_text_csv

N_EXAMPLES = 5  # positives and negatives per row
TYPES = ("role", "appearance")
ROAD_COLUMNS: tuple[str, ...] = (
    ("Type", "Prompt", "Oracle", "Old", "New")
    + tuple(c for i in range(1, N_EXAMPLES + 1)
            for c in (f"Positive{i}", f"Positive_oracle{i}", f"Positive_old{i}", f"Positive_new{i}"))
    + tuple(c for i in range(1, N_EXAMPLES + 1) for c in (f"Negative{i}", f"Negative_new{i}"))
)
# Only the test file has these (they are prompts for ReFACT's "oracle" baseline, not needed to score).
ORACLE_COLUMNS = tuple(f"Positive_oracle{i}" for i in range(1, N_EXAMPLES + 1))
VALIDATION_COLUMNS = tuple(c for c in ROAD_COLUMNS if c not in ORACLE_COLUMNS)
# Cells that every row needs: without them there is nothing to edit or to score.
REQUIRED_CELLS = ("Prompt", "Old", "New")


class RoadError(ValueError):
    pass


class RoadIndexError(RoadError, IndexError):
    """A row index outside the selection (catchable as RoadError or IndexError)."""


def read_road(path: str | Path) -> pd.DataFrame:
    """Read a RoAD CSV (validation or test layout) with every cell lower-cased, as ReFACT does.

    Header names are matched case-insensitively and renamed to `ROAD_COLUMNS` spelling; extra
    columns are kept. Cells are strings; an empty cell is "". The index is 0-based, so data row
    n of the file (1-based, header not counted) has index n-1.
    """
    path = Path(path)
    df = read_text_csv(path, RoadError, "RoAD file")

    canonical = {c.lower(): c for c in ROAD_COLUMNS}
    df = df.rename(columns=lambda c: canonical.get(str(c).strip().lower(), c))
    required = list(VALIDATION_COLUMNS)
    if any(c in df.columns for c in ORACLE_COLUMNS):  # test layout: then all five are required
        required = list(ROAD_COLUMNS)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise RoadError(f"{path}: missing RoAD column(s) {', '.join(missing)} "
                        f"(found: {', '.join(map(str, df.columns))})")

    if df.empty:
        raise RoadError(f"{path}: no data rows")
    df = df.apply(lambda col: col.str.lower()).reset_index(drop=True)
    for i, row in df.iterrows():
        where = f"{path}: data row {i + 1} (1-based, header not counted)"
        for col in REQUIRED_CELLS:
            if not row[col].strip():
                raise RoadError(f"{where}: empty {col!r}")
        if row["Type"].strip() not in TYPES:
            raise RoadError(f"{where}: column 'Type' is {row['Type']!r}; expected one of {', '.join(TYPES)}")
    return df


def select_rows(df: pd.DataFrame, type: str | None = None, indices: int | Iterable[int] | None = None) -> pd.DataFrame:
    """Rows of `type` ("role"/"appearance", any case; None = all), then `indices` (0-based positions
    within that selection; None = all). The original index is kept so rows can be traced to the file."""
    what = "rows"
    if type is not None:
        t = type.strip().lower()
        what = f"{t!r} rows"
        if t not in TYPES:
            raise RoadError(f"unknown RoAD type {type!r}; expected one of {', '.join(TYPES)}")
        df = df[df["Type"].str.strip().str.lower() == t]
    if indices is None:
        return df
    idx = [indices] if isinstance(indices, numbers.Integral) else [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < len(df)]
    if bad:
        raise RoadIndexError(f"RoAD row index {bad[0]} out of range: {len(df)} {what} available "
                             f"(valid indices 0..{len(df) - 1})")
    return df.iloc[idx]


def _cell(row: Mapping, col: str) -> str:
    v = row.get(col, "")
    return "" if pd.isna(v) else str(v)


def road_promptset(row: Mapping | pd.Series, prompt_id_prefix: str) -> pd.DataFrame:
    """The evaluation prompts of one RoAD row, in the promptset CSV format (see promptsets.py).

    Columns: prompt_id (`{prefix}-efficacy`, `{prefix}-generality{i}`, `{prefix}-specificity{i}`
    with i the RoAD column number, so ids stay stable when a cell is empty), prompt, metric,
    text_old, text_new (the pair the CLIP scorer compares) and group (= metric). Success means the
    image matches text_new for efficacy and generality, and text_old for specificity.
    Empty Positive{i}/Negative{i} cells are skipped.
    """
    def item(suffix, metric, prompt, old, new):
        return dict(prompt_id=f"{prompt_id_prefix}-{suffix}", prompt=prompt, metric=metric,
                    text_old=old, text_new=new, group=metric)

    rows = [item("efficacy", "efficacy", _cell(row, "Prompt"), _cell(row, "Old"), _cell(row, "New"))]
    for i in range(1, N_EXAMPLES + 1):
        if _cell(row, f"Positive{i}").strip():
            rows.append(item(f"generality{i}", "generality", _cell(row, f"Positive{i}"),
                             _cell(row, f"Positive_old{i}"), _cell(row, f"Positive_new{i}")))
    for i in range(1, N_EXAMPLES + 1):
        if _cell(row, f"Negative{i}").strip():
            # The image should still show the negative itself: text_old is the negative prompt.
            rows.append(item(f"specificity{i}", "specificity", _cell(row, f"Negative{i}"),
                             _cell(row, f"Negative{i}"), _cell(row, f"Negative_new{i}")))
    for r in rows:
        if not (r["prompt"].strip() and r["text_old"].strip() and r["text_new"].strip()):
            raise RoadError(f"RoAD row {prompt_id_prefix!r}: prompt {r['prompt_id']!r} lacks a text to compare "
                            f"(text_old={r['text_old']!r}, text_new={r['text_new']!r})")
    return pd.DataFrame(rows)
