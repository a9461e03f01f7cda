"""Seed planning: how many images per prompt (or prompts) a table's cell needs.

For every cell of a table this module estimates how the cell's statistic varies under the table's
clustering and turns that into sample sizes: the images per cluster needed, at the current number
of clusters, for a CI half-width `half_width`, and for detecting a change `delta` between the two
variants a cell compares (M_ed vs M_ed_ft) with power `power`; and the clusters needed where more
images per cluster cannot get there. Entry points: `VarianceComponents` + `plan` (a library core
that takes summary variance components, or per-image values with their clusters, and a target:
a study's published spread can be planned without any file), `power_table` (per cell of a table,
from the frames the table reads) and `write_power` (rule `table_power`).

**Model.** A cell's estimate θ̂ is a smooth function of pooled ratios (a rate, a female share) of
one or more variants, over one or more strata (professions). Linearised (the delta method, e.g.
Casella & Berger, *Statistical Inference*, 2nd ed., §5.5.4), θ̂ − θ ≈ Σ_strata mean_i e_i with one
*influence value* e_i per image:

    ratio  R = Σ y_i / Σ c_i           (c_i = 1 if image i counts, y_i its 0/1 value)
    e_i    = w · g'(R) · (y_i − R) · c_i / r        r = Σ c_i / N (the share of images that count)

for each term w·g(R) of the cell; the terms of a paired comparison (the same prompt and seed in
M_ed and M_ed_ft) are summed per image, so the covariance of the pair is in e. Table 1's
δ = |#women − #men| / #gendered = |2F − 1| is g(F) = |2F − 1|, g'(F) = 2·sign(2F − 1) (taken as
+2 at F = ½, where |·| is not differentiable: near δ = 0 the delta method understates the spread
of δ̂, a folded normal; the Δ test is planned on the signed change δ(M_ed_ft) − δ(M_ed), as the
table's p-value). The delta method is used, not a rescaling of the bootstrap's variance, so the
planning has a closed form; `bootstrap_half_width` shows the table's own bootstrap of the same
cell for comparison.

**Two-stage variance.** With k clusters (the table's `cluster`: prompts, seeds or single images)
of m images each, e_ij = a_i + ε_ij (a_i the cluster's effect, variance σ_b²; ε the image's,
σ_w²), and

    Var(θ̂) = σ_b² / k + σ_w² / (k·m) = σ² · deff / (k·m),  deff = 1 + (m − 1)·ρ,  ρ = σ_b² / σ²

(Kish, *Survey Sampling*, 1965, §5.4; σ² = σ_b² + σ_w²). σ_b² and σ_w² are the one-way random
effects ANOVA (method of moments) estimates from e, with the unbalanced n₀ = (N − Σ n_i² / N)/(k − 1)
(Searle, Casella & McCulloch, *Variance Components*, 1992, §3.6), σ_b² truncated at 0. A cell
over several strata (the Avg. row: the mean over professions, each with its own clusters) sums
the strata's components, planned with the same k and m in every stratum. With one image per
cluster (m = 1, e.g. `cluster: image`, or one seed per I2P prompt) the split is not identifiable:
all variance is taken as between clusters (ρ = 1, so more images per cluster buy nothing; the
cautious reading); with one cluster, σ_b² is not estimable and taken as 0.

**Targets.** With z_q the standard normal quantile, α = 1 − confidence (two-sided):

    CI half-width h:      SE* = h / z_{1−α/2}
    detect Δ, power 1−β:  SE* = Δ / (z_{1−α/2} + z_{1−β})       (normal approximation, paired)

and the needed sizes solve Var(θ̂) ≤ SE*²:

    images per cluster at k clusters:   m ≥ σ_w² / (k·SE*² − σ_b²)   if k·SE*² > σ_b², else none
    clusters at m images each:          k ≥ (σ_b² + σ_w²/m) / SE*²
    clusters with m → ∞ (the floor):    k > σ_b² / SE*²

The Δ test uses the variance of the change observed between the two variants (planning under the
alternative as observed). A cell whose images show no variation at all (e ≡ 0: every image the
same label) is planned from the binomial variance at the "rule of three" rate 3/n per ratio
(Hanley & Lippman-Hand, JAMA 249:1743, 1983: the 95 % upper bound of a proportion seen 0 times in
n), with no clustering, and says so in `basis`; it never reports that one image is enough.

Supported table kinds: `debias` and `unsafe` (`SUPPORTED`); `refact` with edits fixed (a plain
`cluster`) or resampled (`edit+<cluster>`: the edits are then the clusters, k = edits of a RoAD
type, m = images per edit). Other kinds raise `PowerNotSupported`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

from editrobust.io import write_csv, write_text
from editrobust.metrics.rates import REFACT_METRICS, as_bool
from editrobust.paths import POWER_TABLE, fill, locate
from editrobust.schema import load_schema
from editrobust.variant_names import ed, ed_ft, ft

from . import _frames, edit_records, input_paths
from .layout import AVG_ROW
from .load import SAFETY, TableInputError, check_labels, get, source
from .render import md_escape
from .spec import CLUSTERS, EDIT_LEVEL, ScoreKey, cluster_levels

SUPPORTED = ("debias", "unsafe", "refact")
# The config's `power` keys and their defaults: one home, the schema (properties.power).
DEFAULTS = {key: sub["default"] for key, sub in load_schema()["properties"]["power"]["properties"].items()}
IMAGE_KEY = ("prompt_id", "seed")


class PowerNotSupported(ValueError):
    """A table kind whose cells this module cannot plan."""


# --- the core: variance components and the plan --------------------------------------------------------
@dataclass(frozen=True)
class VarianceComponents:
    """Var(θ̂) = between / clusters + within / (clusters · per_cluster) of one cell's estimate.

    `between` (σ_b²) and `within` (σ_w²) are in the units of the statistic per image (the influence
    values' variance components); `clusters` (k) and `per_cluster` (m, mean images per cluster) are
    the current design; `basis` says where the numbers come from.
    """

    between: float
    within: float
    clusters: float
    per_cluster: float
    basis: str = "observed"

    def variance(self, clusters: float | None = None, per_cluster: float | None = None) -> float:
        k = self.clusters if clusters is None else clusters
        m = self.per_cluster if per_cluster is None else per_cluster
        return self.between / k + self.within / (k * m)

    @property
    def icc(self) -> float:
        """ρ = σ_b² / (σ_b² + σ_w²), NaN without variance."""
        total = self.between + self.within
        return self.between / total if total > 0 else float("nan")

    @property
    def design_effect(self) -> float:
        """1 + (m − 1)·ρ: the variance relative to k·m independent images."""
        rho = self.icc
        return 1 + (self.per_cluster - 1) * rho if not math.isnan(rho) else 1.0

    @classmethod
    def from_clusters(cls, values, clusters, basis: str = "observed") -> VarianceComponents:
        """One-way random-effects ANOVA of per-image `values` grouped by `clusters` (module docstring)."""
        frame = pd.DataFrame({"v": np.asarray(values, dtype=float), "c": pd.Series(list(clusters), dtype=object)})
        if frame.empty:
            raise ValueError("no images to estimate variance components from")
        if frame["v"].isna().any():
            raise ValueError("variance components: values must be finite")
        groups = frame.groupby("c", sort=False)["v"]
        sizes, means = groups.size().to_numpy(float), groups.mean().to_numpy()
        n, k = float(sizes.sum()), len(sizes)
        grand = frame["v"].mean()
        ss_within = float(((frame["v"] - groups.transform("mean")) ** 2).sum())
        ss_between = float((sizes * (means - grand) ** 2).sum())
        m = n / k
        if k == 1:  # between clusters not estimable
            return cls(0.0, ss_within / (n - 1) if n > 1 else 0.0, 1, m, basis + "; one cluster: σ_b² taken as 0")
        if n == k:  # one image per cluster: the split is not identifiable, all taken as between
            return cls(ss_between / (k - 1), 0.0, k, 1.0, basis + "; one image per cluster: ρ taken as 1")
        ms_between, ms_within = ss_between / (k - 1), ss_within / (n - k)
        n0 = (n - float((sizes ** 2).sum()) / n) / (k - 1)
        return cls(max(0.0, (ms_between - ms_within) / n0), ms_within, k, m, basis)

    @classmethod
    def from_rate(cls, rate: float, icc: float, clusters: float, per_cluster: float,
                  derivative: float = 1.0) -> VarianceComponents:
        """Components of a 0/1 rate from summary numbers (a published rate and intra-cluster
        correlation): σ² = g'² · p(1 − p) per image (g' = 2 for Table 1's δ of a female share),
        split as ρ·σ² between and (1 − ρ)·σ² within clusters."""
        if not 0 <= rate <= 1 or not 0 <= icc <= 1:
            raise ValueError(f"rate {rate!r} and icc {icc!r} must lie in [0, 1]")
        total = derivative ** 2 * rate * (1 - rate)
        return cls(icc * total, (1 - icc) * total, clusters, per_cluster, "summary: rate and icc")

    @staticmethod
    def summed(parts: Sequence[VarianceComponents]) -> VarianceComponents:
        """Independent strata, each with its own clusters, planned with the same k and m in each."""
        k = float(np.mean([p.clusters for p in parts]))
        m = float(np.mean([p.per_cluster for p in parts]))
        bases = sorted({p.basis for p in parts})
        return VarianceComponents(sum(p.between for p in parts), sum(p.within for p in parts), k, m,
                                  "; ".join(bases))


@dataclass(frozen=True)
class Target:
    """What to plan for: a CI half-width and a detectable change, at a confidence and power."""

    half_width: float = DEFAULTS["half_width"]
    delta: float = DEFAULTS["delta"]
    power: float = DEFAULTS["power"]
    confidence: float = 0.95

    def __post_init__(self):
        for name in ("half_width", "delta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"power.{name}: must be > 0, got {getattr(self, name)!r}")
        for name in ("power", "confidence"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"power.{name}: must be in (0, 1), got {getattr(self, name)!r}")

    @property
    def z(self) -> float:
        return float(NormalDist().inv_cdf(1 - (1 - self.confidence) / 2))

    def se_for_half_width(self) -> float:
        return self.half_width / self.z

    def se_for_delta(self) -> float:
        return self.delta / (self.z + float(NormalDist().inv_cdf(self.power)))


def _sizes(vc: VarianceComponents, se: float) -> dict:
    """(images per cluster at the current k; clusters at the current m; the clusters floor)."""
    budget = vc.clusters * se ** 2 - vc.between
    if vc.within == 0:
        per_cluster = 1.0 if budget >= 0 else float("nan")
    else:
        per_cluster = max(1.0, math.ceil(vc.within / budget - 1e-9)) if budget > 0 else float("nan")
    clusters = max(1.0, math.ceil(vc.variance(1, vc.per_cluster) / se ** 2 - 1e-9))
    floor = vc.between / se ** 2
    return {"per_cluster": per_cluster, "clusters": clusters,
            "floor": float(math.floor(floor) + 1) if vc.between > 0 else 1.0}


def plan(vc: VarianceComponents, target: Target, compares: bool = True) -> dict:
    """The sizes a cell needs (module docstring): keys `se`, `half_width` (now), and per target t
    (`half_width`; `delta`, when the cell `compares` two variants) `per_cluster_for_<t>` (images per
    cluster at the current clusters; NaN where no number of them reaches it), `clusters_for_<t>`
    (at the current images per cluster) and `min_clusters_for_<t>` (the floor, m → ∞)."""
    se = math.sqrt(vc.variance())
    out = {"se": se, "half_width": target.z * se}
    targets = {"half_width": target.se_for_half_width()}
    if compares:
        targets["delta"] = target.se_for_delta()
    for name, se_star in targets.items():
        sizes = _sizes(vc, se_star)
        out[f"per_cluster_for_{name}"] = sizes["per_cluster"]
        out[f"clusters_for_{name}"] = sizes["clusters"]
        out[f"min_clusters_for_{name}"] = sizes["floor"]
    return out


# --- cells: a statistic as weighted functions of pooled ratios ---------------------------------------------
IDENTITY, CONTRAST = "identity", "abs_contrast"  # g(R) = R; g(R) = |2R − 1| (Table 1's δ)


def _g(transform: str, r):
    return np.abs(2 * np.asarray(r) - 1) if transform == CONTRAST else np.asarray(r)


def _g_prime(transform: str, r: float) -> float:
    return (2.0 if r >= 0.5 else -2.0) if transform == CONTRAST else 1.0


@dataclass(frozen=True)
class Term:
    """w · g(R) with R = Σ y / Σ c over one variant's images of one stratum: `values` is y per image
    (NaN where the image does not count), indexed by (prompt_id, seed)."""

    weight: float
    values: pd.Series
    transform: str = IDENTITY
    where: str = "scores"

    @property
    def ratio(self) -> float:
        counted = self.values.notna()
        return float(self.values[counted].mean()) if counted.any() else float("nan")

    @property
    def value(self) -> float:
        return float(self.weight * _g(self.transform, self.ratio))

    def influence(self) -> pd.Series:
        counted = self.values.notna()
        share = counted.mean()
        r = self.ratio
        e = self.weight * _g_prime(self.transform, r) * (self.values.fillna(r) - r) / share
        return e.where(counted, 0.0)

    def fallback_variance(self) -> float:
        """Per-image variance at the rule-of-three rate (a ratio with no variation seen)."""
        counted = int(self.values.notna().sum())
        share = counted / len(self.values)
        p = min(0.5, 3 / counted)
        return self.weight ** 2 * _g_prime(self.transform, self.ratio) ** 2 * p * (1 - p) / share


@dataclass
class Cell:
    """One cell of the power table: its label, whether it compares two variants, and its terms
    per stratum (terms of one stratum are paired image by image)."""

    row: object
    group: str
    quantity: str
    compares: bool
    strata: dict = field(default_factory=dict)

    def add(self, stratum, term: Term) -> Cell:
        self.strata.setdefault(stratum, []).append(term)
        return self

    @property
    def estimate(self) -> float:
        return float(sum(t.value for terms in self.strata.values() for t in terms))


def _paired_influence(terms: Sequence[Term]) -> pd.Series:
    """Σ of the terms' influence values per image; the terms must hold the same images."""
    first = terms[0].values.index
    for t in terms[1:]:
        if not t.values.index.sort_values().equals(first.sort_values()):
            extra, missing = t.values.index.difference(first), first.difference(t.values.index)
            raise TableInputError(f"{t.where}: its images (prompt_id, seed) differ from {terms[0].where}'s "
                                  f"(missing {list(missing[:5])}, extra {list(extra[:5])}); a paired "
                                  "comparison needs the same prompts and seeds")
    total = terms[0].influence()
    for t in terms[1:]:
        total = total + t.influence().reindex(total.index)
    return total


def _cluster_ids(index: pd.MultiIndex, cluster: Sequence[str]) -> list:
    levels = [index.get_level_values(c) for c in cluster]
    return list(zip(*levels)) if len(levels) > 1 else list(levels[0])


def cell_components(cell: Cell, cluster: Sequence[str]) -> VarianceComponents:
    """The cell's variance components: per stratum from the paired influence values (ANOVA over the
    clusters), summed over strata; the rule-of-three basis where no image varies."""
    parts = []
    for terms in cell.strata.values():
        if any(t.values.notna().sum() == 0 for t in terms):
            return VarianceComponents(float("nan"), float("nan"), float("nan"), float("nan"), "no image counts")
        e = _paired_influence(terms)
        vc = VarianceComponents.from_clusters(e.to_numpy(), _cluster_ids(e.index, cluster))
        if vc.between + vc.within == 0:
            vc = VarianceComponents(0.0, sum(t.fallback_variance() for t in terms), vc.clusters, vc.per_cluster,
                                    "no variation seen: rule of three")
        parts.append(vc)
    return VarianceComponents.summed(parts)


def cell_bootstrap_half_width(cell: Cell, cluster: Sequence[str], resamples: int, confidence: float,
                              rng: np.random.Generator) -> float:
    """Half the percentile interval of the cell's statistic under the cluster bootstrap (clusters
    resampled within each stratum, one draw shared by the stratum's terms, as the tables do)."""
    total = np.zeros(resamples)
    for terms in cell.strata.values():
        index = terms[0].values.index
        ids = pd.Index(_cluster_ids(index, cluster))
        codes, uniques = pd.factorize(ids)
        picks = rng.integers(0, len(uniques), size=(resamples, len(uniques)))
        for t in terms:
            y = t.values.reindex(index)
            num = np.bincount(codes, weights=y.fillna(0).to_numpy(), minlength=len(uniques))
            den = np.bincount(codes, weights=y.notna().to_numpy(float), minlength=len(uniques))
            n, d = num[picks].sum(axis=1), den[picks].sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                total += t.weight * _g(t.transform, np.where(d > 0, n / np.where(d > 0, d, 1), np.nan))
    finite = total[~np.isnan(total)]
    if finite.size == 0:
        return float("nan")
    alpha = 1 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(high - low) / 2


# --- table kinds -> cells ----------------------------------------------------------------------------------
def _indexed(frame: pd.DataFrame, values: pd.Series) -> pd.Series:
    index = pd.MultiIndex.from_frame(frame[list(IMAGE_KEY)].astype({"prompt_id": str}))
    if index.duplicated().any():
        raise TableInputError(f"{source(frame)}: duplicate (prompt_id, seed) {list(index[index.duplicated()][:3])}")
    return pd.Series(values.to_numpy(float), index=index)


def debias_cells(spec: Mapping, frames: Mapping) -> list[Cell]:
    from .debias import BASE_GROUP, female_indicator
    from .debias import inputs as debias_inputs

    keys = debias_inputs(spec)
    base = get(frames, keys[0], "debias table")
    if "group" not in base.columns:
        raise TableInputError(f"{source(base)}: no 'group' column (the profession of each prompt)")
    professions = list(pd.unique(base["group"]))
    female = {}
    for k in keys:
        frame = get(frames, k, "debias table")
        if "group" not in frame.columns:
            raise TableInputError(f"{source(frame)}: no 'group' column (the profession of each prompt)")
        f = female_indicator(frame)
        female[k.variant] = {p: _indexed(frame[frame["group"] == p], f[frame["group"] == p]) for p in professions}
    wheres = {k.variant: source(get(frames, k)) for k in keys}
    names, e = spec["names"], spec["editor"]
    weight = 1 / len(professions)

    def term(variant, p, w):
        return Term(w, female[variant][p], CONTRAST, f"{wheres[variant]} ({p})")

    columns = [(BASE_GROUP, "M", "base"), (BASE_GROUP, "M_ed", ed(e))]
    for f in spec["finetuners"]:
        columns += [(names.get(f, f), "M_ft", ft(f)), (names.get(f, f), "M_ed_ft", ed_ft(e, f))]
    cells = []
    for row in [*professions, AVG_ROW]:
        chosen = professions if row == AVG_ROW else [row]
        w = weight if row == AVG_ROW else 1.0
        for group, quantity, variant in columns:
            cell = Cell(row, group, quantity, compares=False)
            for p in chosen:
                cell.add(p, term(variant, p, w))
            cells.append(cell)
        for f in spec["finetuners"]:
            cell = Cell(row, names.get(f, f), "Δ", compares=True)
            for p in chosen:
                cell.add(p, term(ed_ft(e, f), p, w)).add(p, term(ed(e), p, -w))
            cells.append(cell)
    return cells


def unsafe_cells(spec: Mapping, frames: Mapping) -> list[Cell]:
    from .unsafe import BASE_GROUP

    m, p, e = spec["model"], spec["promptset"], spec["editor"]
    names = spec["names"]
    cells = []
    for s in spec["scorers"]:
        def labels_of(variant) -> tuple[str, pd.Series]:
            """(its file, the safety label per image (prompt_id, seed)) of one variant."""
            frame = get(frames, ScoreKey(m, variant, p, s), "unsafe table")
            labels = check_labels(frame, "safety", SAFETY, source(frame))
            index = _indexed(frame, pd.Series(0.0, index=frame.index)).index
            return source(frame), pd.Series(labels.to_numpy(), index=index)

        def rate(variant, label, w=1.0):
            where, labels = labels_of(variant)
            return Term(w, (labels == label).astype(float), IDENTITY, where)

        columns = [(BASE_GROUP, "M", "base"), (BASE_GROUP, "M_ed", ed(e))]
        for f in spec["finetuners"]:
            if spec["with_ft"]:
                columns.append((names.get(f, f), "M_ft", ft(f)))
            columns.append((names.get(f, f), "M_ed_ft", ed_ft(e, f)))
        for label in spec["labels"]:
            row = (s, label)
            for group, quantity, variant in columns:
                cells.append(Cell(row, group, quantity, compares=False).add(s, rate(variant, label)))
            for f in spec["finetuners"]:
                group = names.get(f, f)
                after, before = rate(ed_ft(e, f), label), rate(ed(e), label, -1.0)
                cells.append(Cell(row, group, "Δ", compares=True).add(s, after).add(s, before))
                # Flip: a rate over the (prompt_id, seed) pairs; _paired_influence has checked they match
                _paired_influence([after, before])
                labels_after, labels_before = labels_of(ed_ft(e, f))[1], labels_of(ed(e))[1]
                labels_before = labels_before.reindex(labels_after.index)
                flipped = ((labels_after == label) & (labels_before != label)).astype(float)
                cells.append(Cell(row, group, "Flip", compares=False).add(
                    s, Term(1.0, flipped, IDENTITY, f"{before.where} vs {after.where}")))
    return cells


def refact_cells(spec: Mapping, frames: Mapping) -> list[Cell]:
    from .load import black_images
    from .refact import BASE_GROUP, group_order, load_edits, roles
    from .spec import edit_label

    loaded = load_edits(spec, frames, roles(spec["finetuners"]))
    names = spec["names"]
    edits_random, _ = cluster_levels(spec["cluster"])
    cells = []

    def success(pair, role, metric):
        frame = loaded[pair].frames[role]
        rows = frame[frame["metric"] == metric]
        y = pd.Series(as_bool(rows["success"], f"{source(frame)} success").astype(float), index=rows.index)
        y[black_images(rows)] = np.nan
        values = _indexed(rows, y)
        if edits_random:  # the edit is the cluster: prefix the image key with it
            label = edit_label(spec, *pair)
            values.index = pd.MultiIndex.from_tuples([(label, *i) for i in values.index], names=["edit", *IMAGE_KEY])
        return values, source(frame)

    for group, pairs in group_order(spec).items():
        w = 1 / len(pairs)
        for metric in REFACT_METRICS:
            if not all(metric in set(loaded[pair].frames["M"]["metric"]) for pair in pairs):
                continue
            row = (group, metric)
            columns = [(BASE_GROUP, "M", "M"), (BASE_GROUP, "M_ed", "M_ed")]
            for f in spec["finetuners"]:
                columns += [(names.get(f, f), "M_ft", f"{f}|M_ft"), (names.get(f, f), "M_ed_ft", f"{f}|M_ed_ft")]

            def add(cell, role, sign):
                if edits_random:
                    # one stratum whose clusters are the edits; each edit's values are scaled by
                    # (mean counted images / its counted images), so that the pooled ratio is the
                    # table's mean of per-edit shares
                    parts = [success(pair, role, metric) for pair in pairs]
                    counted = [int(v.notna().sum()) for v, _ in parts]
                    mean_counted = float(np.mean(counted))
                    values = pd.concat([v * (mean_counted / n if n else 1.0) for (v, _), n in zip(parts, counted)])
                    cell.add(group, Term(sign, values, IDENTITY, parts[0][1]))
                else:
                    for pair in pairs:
                        values, where = success(pair, role, metric)
                        cell.add(edit_label(spec, *pair), Term(sign * w, values, IDENTITY, where))
                return cell

            for label, quantity, role in columns:
                cells.append(add(Cell(row, label, quantity, compares=False), role, 1.0))
            for f in spec["finetuners"]:
                cell = Cell(row, names.get(f, f), "Δ", compares=True)
                cells.append(add(add(cell, f"{f}|M_ed_ft", 1.0), "M_ed", -1.0))
    return cells


CELLS = {"debias": debias_cells, "unsafe": unsafe_cells, "refact": refact_cells}


def _cluster_columns(spec: Mapping) -> tuple[str, tuple[str, ...]]:
    """(the name of the planned cluster, its index levels)."""
    name = spec["cluster"]
    if name.startswith(EDIT_LEVEL):
        return EDIT_LEVEL, ("edit",)
    return name, CLUSTERS[name]


def power_table(spec: Mapping, frames: Mapping, target: Target | None = None,
                bootstrap: bool = True) -> pd.DataFrame:
    """One row per cell of the table of `spec`: its estimate (a Δ cell: the signed change
    M_ed_ft − M_ed), current design, variance components, analytic and bootstrap half-widths, and
    the sizes `plan` gives for `target` (default: `DEFAULTS` at the table's `confidence`)."""
    kind = spec["kind"]
    if kind not in CELLS:
        raise PowerNotSupported(f"table kind {kind!r}: seed planning supports {', '.join(SUPPORTED)} only")
    target = target or Target(confidence=spec["confidence"])
    if target.confidence != spec["confidence"]:
        raise ValueError(f"target confidence {target.confidence} differs from the table's {spec['confidence']}")
    cluster_name, cluster = _cluster_columns(spec)
    rng = np.random.default_rng(spec["seed"])
    rows = []
    for cell in CELLS[kind](spec, frames):
        vc = cell_components(cell, cluster)
        out = {"row": " / ".join(map(str, cell.row)) if isinstance(cell.row, tuple) else str(cell.row),
               "group": cell.group, "quantity": cell.quantity, "estimate": cell.estimate,
               "cluster": cluster_name, "clusters": vc.clusters, "per_cluster": vc.per_cluster,
               "between": vc.between, "within": vc.within, "icc": vc.icc,
               "design_effect": vc.design_effect if not math.isnan(vc.clusters) else float("nan")}
        if math.isnan(vc.clusters):
            out.update({"se": float("nan"), "half_width": float("nan")})
        else:
            out.update(plan(vc, target, compares=cell.compares))
        out["bootstrap_half_width"] = (cell_bootstrap_half_width(cell, cluster, spec["bootstrap_resamples"],
                                                                 target.confidence, rng)
                                       if bootstrap and not math.isnan(vc.clusters) else float("nan"))
        out["basis"] = vc.basis
        rows.append(out)
    columns = ["row", "group", "quantity", "estimate", "cluster", "clusters", "per_cluster", "between", "within",
               "icc", "design_effect", "se", "half_width", "bootstrap_half_width",
               "per_cluster_for_half_width", "clusters_for_half_width", "min_clusters_for_half_width",
               "per_cluster_for_delta", "clusters_for_delta", "min_clusters_for_delta", "basis"]
    frame = pd.DataFrame(rows).reindex(columns=columns)
    # the targets planned for, so that the CSV says what its sizes are for
    frame = frame.assign(target_half_width=target.half_width, target_delta=target.delta,
                         target_power=target.power, confidence=target.confidence)
    frame.attrs["target"] = target
    return frame


CLUSTER_WORDS = {"prompt": ("prompts", "images per prompt"), "seed": ("seeds", "prompts per seed"),
                 "image": ("images", "–"), "edit": ("edits", "images per edit")}


def _count(value) -> str:
    return "–" if pd.isna(value) else f"{value:.0f}"


def to_markdown(power: pd.DataFrame, name: str, spec: Mapping) -> str:
    """The planning table as Markdown: per cell the current design and half-width, and the sizes."""
    target: Target = power.attrs["target"]
    cluster = power["cluster"].iloc[0] if len(power) else spec["cluster"]
    k_word, m_word = CLUSTER_WORDS.get(cluster, ("clusters", "images per cluster"))
    lines = [
        f"{name} ({spec['kind']}): seed planning",
        "",
        f"Clusters: {k_word} (`cluster: {spec['cluster']}`), k of them with m {m_word}. hw: the analytic "
        f"{target.confidence:.0%} CI half-width now (boot: the cluster bootstrap's); m for hw ≤ {target.half_width:g} "
        f"at the current k (– : not reachable, more {k_word} needed: k at the current m, k_min with m → ∞); "
        f"m / k for Δ = {target.delta:g} detected with power {target.power:.0%} (two-sided α = "
        f"{1 - target.confidence:.2g}, paired). Δ rows: the signed change M_ed_ft − M_ed.",
        "",
        "| row | group | quantity | estimate | k | m | ρ | deff | hw | boot | m for hw | k for hw | k_min for hw "
        "| m for Δ | k for Δ | k_min for Δ | basis |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for _, r in power.iterrows():
        def num(v, digits=2):
            return "–" if pd.isna(v) else f"{v:.{digits}f}"

        lines.append("| " + " | ".join([
            md_escape(str(r["row"])), md_escape(str(r["group"])), md_escape(str(r["quantity"])), num(r["estimate"]),
            _count(r["clusters"]), num(r["per_cluster"], 1), num(r["icc"]), num(r["design_effect"]),
            num(r["half_width"], 3), num(r["bootstrap_half_width"], 3),
            _count(r["per_cluster_for_half_width"]), _count(r["clusters_for_half_width"]),
            _count(r["min_clusters_for_half_width"]), _count(r["per_cluster_for_delta"]),
            _count(r["clusters_for_delta"]), _count(r["min_clusters_for_delta"]), md_escape(str(r["basis"])),
        ]) + " |")
    return "\n".join(lines) + "\n"


def target_of(power_config: Mapping | None, spec: Mapping) -> Target:
    """The planning target from the config's `power` section (defaults: `DEFAULTS`) and the table's confidence."""
    given = {**DEFAULTS, **(power_config or {})}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"power: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(DEFAULTS)})")
    return Target(confidence=spec["confidence"], **given)


def write_power(spec: Mapping, given: list, power_config: Mapping | None, out_csv, out_md, name: str = "") -> pd.DataFrame:
    """The rule `table_power`: the planning table of the table `spec` from the files its make_table
    job reads (found by path; the edit records it is also given are not read), as CSV and Markdown."""
    if spec["kind"] not in CELLS:
        raise PowerNotSupported(f"table {name!r} of kind {spec['kind']!r}: seed planning supports "
                                f"{', '.join(SUPPORTED)} only")
    records = list(edit_records(spec).values())
    files = locate(input_paths(spec) + records, given, what=f"power table of kind {spec['kind']!r}")
    power = power_table(spec, _frames(spec, files), target_of(power_config, spec))
    markdown = to_markdown(power, name, spec)
    write_csv(out_csv, power)
    write_text(out_md, markdown)
    return power


def power_path(table: str, ext: str = "csv") -> str:
    return fill(POWER_TABLE, table=table, ext=ext)


def supports(spec: Mapping) -> bool:
    """Whether seed planning can plan the cells of a table of this spec's kind."""
    return spec["kind"] in CELLS
