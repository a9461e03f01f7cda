"""Cluster bootstrap of pooled ratios, vectorised and shared across the variants of one table.

Every statistic in the tables is a pooled ratio θ = Σ num / Σ den over the images of one cell
(a rate: successes / images; a female share: women / gendered images), or a smooth function of
such ratios (δ, differences, means over professions or edits). Each cell's images are summed per
cluster (prompt, seed or image; see spec.CLUSTERS) once; a resample draws C clusters with
replacement and recomputes θ from the resampled sums. For one cell and weight "images" this is
exactly `metrics.stats.bootstrap_ci` (same draw from the same seed; tested), but it also gives the
resampled values themselves, so that:

- paired comparisons (M_ed vs M_ed_ft) reuse the *same* draw for both variants: a resampled
  prompt brings its before and after images together, as in `metrics.stats.paired_bootstrap_ci`;
- means over strata (professions) resample every stratum's clusters independently
  (a stratified bootstrap: the six professions are the fixed estimand, not a sample of them);
- means over units that are a sample of a population (ReFACT's edits: the study's 90 RoAD rows
  stand for edits in general) resample the units too, and the clusters within each unit drawn
  (a two-stage bootstrap, `draw_units` / `mean_of_units`): the interval then carries which edits
  there are, not only the seed noise of these edits;
- a two-sided bootstrap p-value comes from the same resamples as the CI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .load import TableInputError


@dataclass(frozen=True)
class Pooled:
    """Per-cluster sums of one cell: θ = Σ_c num_c / Σ_c den_c."""

    clusters: pd.Index
    num: np.ndarray
    den: np.ndarray

    @property
    def estimate(self) -> float:
        den = self.den.sum()
        return float(self.num.sum() / den) if den else float("nan")

    def resampled(self, picks: np.ndarray) -> np.ndarray:
        """θ for each row of `picks` (an (R × C) matrix of cluster positions); NaN where Σ den = 0."""
        num, den = self.num[picks].sum(axis=1), self.den[picks].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def pooled(frame: pd.DataFrame, value: pd.Series, cluster: Sequence[str], clusters: pd.Index | None = None,
           where: str = "scores") -> Pooled:
    """Sum `value` (0/1 per image; NaN = the image does not count, e.g. no person) per cluster.

    With `clusters` given (the reference variant's), the sums are aligned to them, and a variant
    whose images fall in other clusters is an error naming them: pairing needs the same prompts.
    """
    keys = [frame[c] for c in cluster]
    counted = value.notna().astype(float)
    grouped = pd.DataFrame({"num": value.fillna(0).astype(float), "den": counted}).groupby(keys, sort=True).sum()
    index = grouped.index
    if clusters is not None:
        extra, missing = index.difference(clusters), clusters.difference(index)
        if len(extra) or len(missing):
            raise TableInputError(
                f"{where}: its {'/'.join(cluster)} clusters differ from the reference variant's "
                f"(missing: {list(missing[:5])}; extra: {list(extra[:5])}); paired statistics need the same prompts and seeds"
            )
        grouped = grouped.reindex(clusters)
        index = clusters
    return Pooled(index, grouped["num"].to_numpy(), grouped["den"].to_numpy())


def draw(rng: np.random.Generator, n_clusters: int, n_resamples: int) -> np.ndarray:
    """(R × C) cluster positions, drawn with replacement (the same draw as metrics.stats)."""
    return rng.integers(0, n_clusters, size=(n_resamples, n_clusters))


@dataclass(frozen=True)
class UnitDraw:
    """A bootstrap draw over units (edits), each with its own clusters (seeds), shared by every
    variant of a table so that differences between variants are paired.

    Each resample r has n slots; slot k holds unit `picks[r, k]` (all units in order when units
    are fixed). `slots[u]` are the (rows, columns) of the slots that hold unit u, and `within[u]`
    one row of cluster positions per such slot (a fresh draw per slot, so a unit drawn twice gets
    two independent resamples of its seeds), or None where a unit keeps all its images.
    """

    picks: np.ndarray
    slots: tuple
    within: tuple


def draw_units(rng: np.random.Generator, sizes: Sequence[int], n_resamples: int, resample_units: bool = True,
               resample_within: bool = True) -> UnitDraw:
    """A (two-stage) draw over units with `sizes[u]` clusters each: units with replacement (or
    all of them, in order), then each slot's clusters with replacement (or all of them)."""
    n = len(sizes)
    if resample_units:
        picks = rng.integers(0, n, size=(n_resamples, n))
    else:
        picks = np.broadcast_to(np.arange(n), (n_resamples, n))
    slots, within = [], []
    for u, size in enumerate(sizes):
        rows, cols = np.nonzero(picks == u)
        slots.append((rows, cols))
        within.append(rng.integers(0, size, size=(len(rows), size)) if resample_within else None)
    return UnitDraw(picks, tuple(slots), tuple(within))


def mean_of_units(draw: UnitDraw, cells: Sequence[Pooled]) -> np.ndarray:
    """The mean over units of each unit's θ, for every resample of `draw` (cells[u] is unit u's
    per-cluster sums, aligned to the clusters the draw was made for)."""
    values = np.empty(draw.picks.shape)
    for u, cell in enumerate(cells):
        rows, cols = draw.slots[u]
        values[rows, cols] = cell.resampled(draw.within[u]) if draw.within[u] is not None else cell.estimate
    return values.mean(axis=1)


def interval_of(spec: Mapping):
    """A table's `ci(samples)`: the percentile interval of a cell's resamples at the table's
    `confidence`, or None without `ci: true` or without resamples."""
    with_ci, confidence = bool(spec["ci"]), spec["confidence"]
    return lambda samples: interval(samples, confidence) if with_ci and samples is not None else None


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the resampled values (resamples with an undefined θ are dropped)."""
    finite = samples[~np.isnan(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = 1 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def abs_interval(low: float, high: float) -> tuple[float, float]:
    """The image of a CI [low, high] of a signed change d under |·|: a CI of |d| at least as sure.

    If the signed interval contains 0 the unsigned one starts at 0; percentiles of resampled |d|
    instead would almost never reach 0 and would overstate every Δ.
    """
    if np.isnan(low) or np.isnan(high):
        return float("nan"), float("nan")
    if low <= 0 <= high:
        return 0.0, float(max(-low, high))
    return float(min(abs(low), abs(high))), float(max(abs(low), abs(high)))


def p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of H0: the signed change is 0.

    p = min(1, 2 · min(#{d_r ≤ 0} + 1, #{d_r ≥ 0} + 1) / (R + 1)): the smallest α at which the
    percentile interval excludes 0, with the +1 that keeps a finite number of resamples from
    reporting p = 0.
    """
    finite = samples[~np.isnan(samples)]
    if finite.size == 0:
        return float("nan")
    below, above = np.sum(finite <= 0), np.sum(finite >= 0)
    return float(min(1.0, 2 * (min(below, above) + 1) / (finite.size + 1)))
