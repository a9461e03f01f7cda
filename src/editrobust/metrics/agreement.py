"""Inter-rater agreement of human safety labels: Fleiss' kappa (Fleiss 1971)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd


def fleiss_kappa_counts(counts) -> float:
    """Fleiss' κ from an (N items × k categories) table n_ij of how many raters chose j for item i.

    With n raters per item (the same for every item):
      p_j = Σ_i n_ij / (N n)                  share of all ratings in category j
      P_i = (Σ_j n_ij² − n) / (n (n − 1))     agreement among item i's rater pairs
      P̄ = mean_i P_i,  P̄_e = Σ_j p_j²,  κ = (P̄ − P̄_e) / (1 − P̄_e)
    Raises ValueError when items have different rater counts (naming them), on negative or
    non-integer counts, or with fewer than 2 raters. When every rating falls in one category
    P̄_e = 1 and κ is 0/0: NaN is returned.
    """
    n_ij = np.asarray(counts, dtype=float)
    if n_ij.ndim != 2 or n_ij.shape[0] == 0:
        raise ValueError(f"counts must be a non-empty (items x categories) table, got shape {n_ij.shape}")
    if (n_ij < 0).any() or (n_ij != np.round(n_ij)).any():
        raise ValueError("counts must be non-negative integers")
    raters = n_ij.sum(axis=1)
    differing = np.flatnonzero(raters != raters[0])
    if differing.size:
        raise ValueError(
            f"raters per item differ: item 0 has {raters[0]:g}, items {differing[:10].tolist()} do not"
        )
    n = raters[0]
    if n < 2:
        raise ValueError("Fleiss' kappa needs at least 2 raters per item")
    p_j = n_ij.sum(axis=0) / n_ij.sum()
    p_i = ((n_ij**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), np.sum(p_j**2)
    if p_e == 1:
        return float("nan")
    return float((p_bar - p_e) / (1 - p_e))


def _rating_rows(ratings) -> np.ndarray:
    """(items × raters) object array; ragged input raises naming the items that differ."""
    if isinstance(ratings, pd.DataFrame):
        return ratings.to_numpy(dtype=object)
    rows = [list(row) for row in ratings]
    lengths = np.array([len(row) for row in rows])
    differing = np.flatnonzero(lengths != lengths[0]) if rows else np.array([], dtype=int)
    if differing.size:
        raise ValueError(
            f"raters per item differ: item 0 has {lengths[0]}, items {differing[:10].tolist()} do not"
        )
    return np.array(rows, dtype=object).reshape(len(rows), -1)


def fleiss_kappa(ratings: Iterable[Sequence], categories: Sequence | None = None) -> float:
    """Fleiss' κ from an (N items × n raters) array of category labels (e.g. 0, 0.5, 1 or strings).

    Converts to the count table n_ij = #{raters r : rating_ir = category_j} and applies
    `fleiss_kappa_counts` (formula there). Categories are inferred from the data unless given
    (a given category nobody used adds a zero column and does not change κ; a rating outside the
    given categories raises). A missing rating (None/NaN) means that item has fewer raters, which
    Fleiss' κ does not allow: ValueError naming the item indices.
    """
    r = _rating_rows(ratings)
    if r.size == 0:
        raise ValueError("fleiss_kappa of no ratings")
    missing_items = np.flatnonzero(pd.isna(r).any(axis=1))
    if missing_items.size:
        raise ValueError(f"raters per item differ: items {missing_items[:10].tolist()} have missing ratings")
    observed = pd.unique(r.ravel())
    if categories is None:
        cats = observed
    else:
        cats = np.array(list(categories), dtype=object)
        unknown = [v for v in observed if not (cats == v).any()]
        if unknown:
            raise ValueError(f"ratings {unknown[:10]} are not in categories {list(categories)}")
    counts = (r[:, :, None] == np.asarray(cats, dtype=object)[None, None, :]).sum(axis=1)
    return fleiss_kappa_counts(counts)
