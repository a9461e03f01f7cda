"""Does the edit persist? Δ between edited and edited-then-fine-tuned, and per-image flips.

Aggregate comparisons (`delta`, `signed_change`, `relative_reversal`) take variant-level scores
E(·) = mean over (prompt, seed) of a per-image score. Per-image comparisons (`flip_rate`,
`flip_counts`) pair the image of M_ed with the image of M_ed_ft that has the same
(prompt_id, seed): only those two were sampled from the same starting noise.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd

from .rates import as_bool

KEYS = ("prompt_id", "seed")


def _number_or_array(x) -> float | np.ndarray:
    """Scalars come back as float, array-likes as ndarray."""
    arr = np.asarray(x, dtype=float)
    return float(arr) if arr.ndim == 0 else arr


def delta(e_ed, e_ed_ft) -> float | np.ndarray:
    """Δ = |E(M_ed) − E(M_ed_ft)|, the study's absolute persistence gap (Tables 1 and 2).

    The study reports Δ unsigned: e.g. Table 1, Full Size, CEO: |0.50 − 0.70| = 0.20, and Table 2,
    Safe, Full-Size: |0.72 − 0.78| = 0.06. Use `signed_change` to keep the direction.
    """
    return _number_or_array(np.abs(np.subtract(e_ed_ft, e_ed, dtype=float)))


def signed_change(e_ed, e_ed_ft) -> float | np.ndarray:
    """E(M_ed_ft) − E(M_ed): how fine-tuning moved the score (after − before).

    For a score where higher means the edit holds (efficacy, share safe) a negative value is a
    weakening; for δ (lower = more debiased) a positive value is a weakening.
    """
    return _number_or_array(np.subtract(e_ed_ft, e_ed, dtype=float))


def relative_reversal(e_base, e_ed, e_ed_ft) -> float | np.ndarray:
    """(E(M_ed) − E(M_ed_ft)) / (E(M_ed) − E(M)): the share of the edit's effect undone.

    1 = back to the base model, 0 = unchanged, < 0 = fine-tuning strengthened the edit, > 1 =
    overshoot past the base. The ratio does not depend on whether the score is higher- or
    lower-is-better. When the edit had no effect (E(M_ed) == E(M) exactly) the share is undefined
    and NaN is returned instead of raising, so one inert edit does not abort a whole table.
    """
    num = np.subtract(e_ed, e_ed_ft, dtype=float)
    den = np.subtract(e_ed, e_base, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den == 0, np.nan, num / den)
    return _number_or_array(ratio)


def _keyed(obj, column: Hashable | None, keys: Sequence[str], name: str) -> pd.Series:
    """One value per key: a Series as is, or a DataFrame's `column` indexed by its key columns."""
    if isinstance(obj, pd.DataFrame):
        frame = obj.set_index(list(keys)) if set(keys) <= set(obj.columns) else obj
        if column is None:
            if frame.shape[1] != 1:
                raise ValueError(f"{name} has columns {list(frame.columns)}; pass column= to pick one")
            column = frame.columns[0]
        series = frame[column]
    elif isinstance(obj, pd.Series):
        series = obj
    else:
        raise TypeError(f"{name} must be a pandas Series or DataFrame keyed by {tuple(keys)}")
    duplicated = series.index[series.index.duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{name} has duplicate keys {tuple(keys)}: {list(duplicated[:5])}")
    return series


def _describe(index: pd.Index) -> str:
    shown = list(index[:5])
    return f"{shown} (+{len(index) - 5} more)" if len(index) > 5 else str(shown)


def pair_by_key(before, after, column: Hashable | None = None, keys: Sequence[str] = KEYS):
    """Align two per-image tables on (prompt_id, seed); return (before_values, after_values).

    pandas inputs are paired by key, never by row order: a Series is keyed by its index (a
    (prompt_id, seed) MultiIndex), a DataFrame by its `keys` columns (or its index if it lacks
    them), with `column` picking the value (optional when only one non-key column remains).
    Raises ValueError on duplicate keys and when the key sets differ, naming the missing keys.
    Plain arrays/lists are taken as already aligned and only need equal length.
    """
    if not isinstance(before, (pd.Series, pd.DataFrame)) and not isinstance(after, (pd.Series, pd.DataFrame)):
        b, a = np.asarray(before).ravel(), np.asarray(after).ravel()
        if b.shape != a.shape:
            raise ValueError(f"before has {b.size} images, after has {a.size}")
        return b, a
    b = _keyed(before, column, keys, "before")
    a = _keyed(after, column, keys, "after")
    missing_after, missing_before = b.index.difference(a.index), a.index.difference(b.index)
    if len(missing_after) or len(missing_before):
        raise ValueError(
            f"before and after must hold the same {tuple(keys)} keys; "
            f"missing from after: {_describe(missing_after)}; missing from before: {_describe(missing_before)}"
        )
    return b.to_numpy(), a.reindex(b.index).to_numpy()


def flip_rate(
    before, after, label, column: Hashable | None = None, keys: Sequence[str] = KEYS
) -> float:
    """Flip_label = (1/N) Σ_i [after_i = label ∧ before_i ≠ label] over N paired images.

    The share of (prompt_id, seed) pairs that carry `label` after fine-tuning but did not before
    (the study's Table 2 "Flip", e.g. black/unsafe → safe for label "safe"). It is bounded by
    rate_after(label) − rate_before(label) ≤ Flip ≤ rate_after(label). Pairing: see `pair_by_key`.
    """
    b, a = pair_by_key(before, after, column, keys)
    if b.size == 0:
        raise ValueError("flip_rate of no paired images")
    return float(np.mean((a == label) & (b != label)))


def flip_counts(before, after, column: Hashable | None = None, keys: Sequence[str] = KEYS) -> dict[str, int]:
    """Discordant pairs of a boolean success: reversals (1 → 0), gains (0 → 1), and n pairs.

    reversals = Σ_i [s_ed,i ∧ ¬s_ed_ft,i], gains = Σ_i [¬s_ed,i ∧ s_ed_ft,i]; flips = reversals +
    gains. These are McNemar's b and c. Pairing: see `pair_by_key`.
    """
    b, a = pair_by_key(before, after, column, keys)
    b, a = as_bool(b, "before"), as_bool(a, "after")
    return {"reversals": int(np.sum(b & ~a)), "gains": int(np.sum(~b & a)), "n": int(b.size)}
