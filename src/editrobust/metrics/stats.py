"""Uncertainty and summaries: McNemar's test, cluster bootstrap CIs, mean ± std rows.

Implemented with numpy and the standard library only (no scipy/statsmodels dependency).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from .persistence import KEYS, flip_counts

EXACT_BELOW = 25  # b + c below this: exact binomial test; from here on: chi-square approximation


def _binomial_two_sided_p(b: int, c: int) -> float:
    """Exact two-sided p of b vs c under H0 p = 1/2: min(1, 2 · P(X ≤ min(b, c))), X ~ Bin(b+c, 1/2)."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def mcnemar(before, after, column: Hashable | None = None, keys: Sequence[str] = KEYS) -> dict:
    """McNemar's test of a paired boolean success before/after fine-tuning.

    b = pairs 1 → 0 (reversals), c = pairs 0 → 1 (gains); only the discordant pairs inform the test.
    - b + c < 25: exact two-sided binomial test, p = min(1, 2 · Σ_{k ≤ min(b,c)} C(b+c, k) / 2^(b+c)),
      statistic = min(b, c), method "exact".
    - otherwise: continuity-corrected χ² = (|b − c| − 1)² / (b + c), p = P(χ²₁ > x) = erfc(√(x/2)),
      method "chi2". The corrected difference is clipped at 0 so that b = c gives χ² = 0 and p = 1
      (statsmodels does not clip and reports 1/(b+c) there).
    Swapping before and after swaps b and c and leaves statistic and p unchanged. Inputs are paired
    as in `pair_by_key` (pandas by (prompt_id, seed), arrays by position).
    """
    counts = flip_counts(before, after, column, keys)
    b, c = counts["reversals"], counts["gains"]
    if b + c < EXACT_BELOW:
        p_value = _binomial_two_sided_p(b, c)
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": p_value, "method": "exact"}
    stat = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return {"b": b, "c": c, "statistic": stat, "p_value": math.erfc(math.sqrt(stat / 2)), "method": "chi2"}


Weight = Literal["images", "clusters"]


def _cluster_weights(sizes: np.ndarray, weight: Weight) -> np.ndarray:
    if weight == "images":
        return sizes.astype(float)
    if weight == "clusters":
        return np.ones(len(sizes))
    raise ValueError(f"weight must be 'images' or 'clusters', got {weight!r}")


def _percentile_ci(values: np.ndarray, weights: np.ndarray, n_resamples: int, alpha: float, seed: int):
    """Estimate and percentile CI of the weighted mean Σ w_c v_c / Σ w_c, resampling clusters.

    Each resample draws C clusters with replacement; all resamples are one (n_resamples × C) index
    matrix, so the whole bootstrap is two fancy-indexed sums.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    estimate = float(np.sum(weights * values) / np.sum(weights))
    picks = np.random.default_rng(seed).integers(0, len(values), size=(n_resamples, len(values)))
    w = weights[picks]
    resampled = np.sum(w * values[picks], axis=1) / np.sum(w, axis=1)
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return estimate, float(low), float(high)


def _per_cluster(df: pd.DataFrame, statistic: str | Callable, cluster: str) -> tuple[pd.Series, pd.Series]:
    """(value per cluster, rows per cluster), indexed by cluster id in sorted order."""
    if df.empty:
        raise ValueError("bootstrap of an empty table")
    groups = df.groupby(cluster, sort=True)
    if isinstance(statistic, str):
        values = groups[statistic].mean().astype(float)
    else:
        values = pd.Series({key: float(statistic(group)) for key, group in groups}, dtype=float)
    return values, groups.size()


def bootstrap_ci(
    df: pd.DataFrame,
    statistic: str | Callable[[pd.DataFrame], float],
    cluster: str = "prompt_id",
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    weight: Weight = "images",
) -> tuple[float, float, float]:
    """(estimate, low, high): percentile bootstrap CI, resampling prompts (clusters) with replacement.

    The statistic is computed once per cluster, v_c = statistic(rows of cluster c) (a str names a
    column, whose per-cluster mean is used), and the estimate is the weighted mean over clusters
    θ = Σ_c w_c v_c / Σ_c w_c, with w_c = number of images (`weight="images"`: the image-level
    mean when v_c is a within-cluster mean, e.g. a success or label rate) or w_c = 1
    (`weight="clusters"`: a mean over prompts, e.g. Table 1's average δ over professions).
    Resample r draws C clusters with replacement and recomputes θ; [low, high] are its α/2 and
    1 − α/2 quantiles. Seeded numpy Generator: the same seed gives the same CI.

    Only clusters are resampled, not the seeds within them: the spread of the per-cluster values
    v_c already contains the seed-to-seed noise, so resampling seeds again would count it twice and
    overstate the variance (Davison & Hinkley 1997, §3.8). It also keeps each v_c fixed, so all
    resamples are one matrix operation. With few clusters (6 professions) the CI is rough and
    somewhat narrow (the bootstrap variance carries a (C − 1)/C factor); report C with it.
    A NaN v_c makes the CI NaN.
    """
    values, sizes = _per_cluster(df, statistic, cluster)
    weights = _cluster_weights(sizes.to_numpy(), weight)
    return _percentile_ci(values.to_numpy(), weights, n_resamples, alpha, seed)


def _mean_change(column: str) -> Callable[[pd.DataFrame, pd.DataFrame], float]:
    return lambda before, after: after[column].mean() - before[column].mean()


def paired_bootstrap_ci(
    before_df: pd.DataFrame,
    after_df: pd.DataFrame,
    statistic_diff: str | Callable[[pd.DataFrame, pd.DataFrame], float],
    cluster: str = "prompt_id",
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    weight: Weight = "images",
) -> tuple[float, float, float]:
    """(estimate, low, high) for a before/after comparison, resampling the same prompts for both.

    d_c = statistic_diff(before rows of c, after rows of c) is computed per cluster (a str names
    a column and gives d_c = mean_after − mean_before, the per-prompt `signed_change`), then
    θ = Σ_c w_c d_c / Σ_c w_c and its CI as in `bootstrap_ci`. Because a resampled prompt brings
    its before and after images together, the pairing (same prompt, same seeds) is kept and the
    CI of the difference is narrower than from two independent bootstraps.
    Both tables must hold the same clusters with the same number of images each (ValueError
    naming the offending clusters otherwise). Example: Table 1's average Δ over professions is
    `statistic_diff = lambda b, a: abs(δ(a) − δ(b))` with `weight="clusters"`.
    """
    if isinstance(statistic_diff, str):
        statistic_diff = _mean_change(statistic_diff)
    if before_df.empty:
        raise ValueError("bootstrap of an empty table")
    before_sizes = before_df.groupby(cluster).size()
    after_sizes = after_df.groupby(cluster).size()
    mismatched = before_sizes.index.symmetric_difference(after_sizes.index)
    if len(mismatched):
        raise ValueError(f"clusters present in only one of before/after: {list(mismatched[:5])}")
    unequal = before_sizes.index[before_sizes != after_sizes.reindex(before_sizes.index)]
    if len(unequal):
        raise ValueError(f"clusters with different image counts before/after: {list(unequal[:5])}")
    after_groups = dict(list(after_df.groupby(cluster, sort=True)))
    before_groups = before_df.groupby(cluster, sort=True)
    values = np.array([float(statistic_diff(group, after_groups[key])) for key, group in before_groups])
    weights = _cluster_weights(before_sizes.to_numpy(), weight)
    return _percentile_ci(values, weights, n_resamples, alpha, seed)


def avg_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, sample std) over e.g. professions: x̄ = Σx/n, s = √(Σ(x − x̄)² / (n − 1)).

    ddof=1 is what reproduces the study's Table 1 Avg.(std.) row: M's δ column
    0.88, 0.56, 0.94, 0.98, 0.45, 0.83 gives 0.77 ± 0.22 (population std would give 0.20), and
    M_ed's 0.5, 0.53, 0.58, 0.52, 0.52, 0.63 gives 0.55 ± 0.05. The std is NaN for fewer than
    two values.
    """
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        raise ValueError("avg_std of no values")
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else float("nan")
    return float(np.mean(arr)), std
