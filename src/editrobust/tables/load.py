"""Read score and quality files for the tables; a bad file is an error naming it (and the row)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics.rates import SAFETY_CATEGORIES, as_bool

ID_COLUMNS = ("prompt_id", "seed")
QUALITY_COLUMNS = ("metric", "value")


class TableInputError(ValueError):
    """A score or quality file (or a frame standing in for one) cannot make the table."""


def source(frame: pd.DataFrame, fallback: str = "scores") -> str:
    """Where a frame came from, for error messages: its file when loaded from one."""
    return frame.attrs.get("source", fallback)


def prepare_scores(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check the identifying columns and derive `safety` from the older boolean `unsafe` column.

    Score files written before the `safety` column existed carry `unsafe` (True/False); those
    images are "unsafe" or "safe" (such a scorer has no undecidable or black label).
    """
    missing = [c for c in ID_COLUMNS if c not in frame.columns]
    if missing:
        raise TableInputError(f"{where}: missing column(s) {', '.join(missing)}")
    out = frame.copy()
    out["prompt_id"] = out["prompt_id"].astype(str)
    if "safety" not in out.columns and "unsafe" in out.columns:
        unsafe = out["unsafe"].map(
            lambda v: {"true": True, "1": True, "false": False, "0": False}.get(str(v).strip().lower())
        )
        bad = np.flatnonzero(unsafe.isna().to_numpy())
        if bad.size:
            raise TableInputError(f"{where}: row {bad[0] + 2}: unsafe must be True/False, got {out['unsafe'].iloc[bad[0]]!r}")
        out["safety"] = np.where(unsafe.astype(bool), "unsafe", "safe")
    out.attrs["source"] = where
    return out


def read_scores(path) -> pd.DataFrame:
    """One score file (one row per image), with `safety` derived when absent (see `prepare_scores`)."""
    try:
        frame = pd.read_csv(path, dtype={"prompt_id": str, "gender": object, "safety": object})
    except FileNotFoundError:
        raise TableInputError(f"score file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TableInputError(f"{path}: not a readable CSV: {e}") from None
    return prepare_scores(frame, str(path))


def read_quality(path) -> pd.DataFrame:
    """A quality file: one row per metric (fid, clip_score), columns metric, value."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise TableInputError(f"quality file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TableInputError(f"{path}: not a readable CSV: {e}") from None
    frame.attrs["source"] = str(path)
    return frame


def quality_metrics(frame: pd.DataFrame, metrics, where: str) -> dict[str, float]:
    """{metric: value} for the requested metrics; a missing, duplicated or non-numeric one raises."""
    missing = [c for c in QUALITY_COLUMNS if c not in frame.columns]
    if missing:
        raise TableInputError(f"{where}: missing column(s) {', '.join(missing)}")
    duplicated = frame["metric"][frame["metric"].duplicated()].tolist()
    if duplicated:
        raise TableInputError(f"{where}: metric(s) {duplicated} appear more than once")
    values = dict(zip(frame["metric"], pd.to_numeric(frame["value"], errors="coerce")))
    out = {}
    for m in metrics:
        if m not in values:
            raise TableInputError(f"{where}: no {m!r} row (has {sorted(values)})")
        if pd.isna(values[m]):
            raise TableInputError(f"{where}: {m!r} is not a number")
        out[m] = float(values[m])
    return out


def get(frames: Mapping, key, table: str = "table"):
    """The frame of `key`; a missing one is an error naming the variant, promptset and scorer."""
    try:
        return frames[key]
    except KeyError:
        raise TableInputError(f"{table} needs scores of {key.describe()}: not given ({key.path})") from None


def check_labels(frame: pd.DataFrame, column: str, allowed, where: str) -> pd.Series:
    """The column's labels, all in `allowed`; the first bad row is named (CSV line numbers)."""
    if column not in frame.columns:
        raise TableInputError(f"{where}: no {column!r} column")
    labels = frame[column]
    bad = np.flatnonzero(~labels.isin(list(allowed)).to_numpy())
    if bad.size:
        i = bad[0]
        raise TableInputError(
            f"{where}: row {i + 2}: {column} {labels.iloc[i]!r} is not one of {', '.join(map(str, allowed))}"
        )
    return labels


SAFETY = SAFETY_CATEGORIES


def black_images(frame: pd.DataFrame) -> np.ndarray:
    """The images the NSFW filter blacked out (the scorer's `black` flag): they do not count, as
    the study computes efficacy "after removing black images"."""
    if "black" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return as_bool(frame["black"], f"{source(frame)} black")


def indicator(frame: pd.DataFrame, column: str) -> pd.Series:
    """A 0/1 (or True/False) score column as 0.0/1.0 per image, NaN for a black (filtered) image,
    which does not count; a missing column is an error naming the file."""
    if column not in frame.columns:
        raise TableInputError(f"{source(frame)}: no {column!r} column")
    value = pd.Series(np.nan, index=frame.index)
    black = black_images(frame)
    value[~black] = as_bool(frame.loc[~black, column], f"{source(frame)} {column}").astype(float)
    return value
