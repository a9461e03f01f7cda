"""Agreement of each automatic scorer with the human labels (the study's Appendix D.2).

For every image the humans labelled (the `human` scorer's file, per variant: M, M_ed and each
M_ed_ft), the automatic scorer's label of the same (prompt_id, seed) is paired with it; pooled
over variants, each scorer gets
  images     the number of paired images,
  agreement  P̄, the share of images on which the scorer and the human label agree,
  κ          Fleiss' κ of the two "raters" (`metrics.fleiss_kappa`; Landis–Koch: 0.61–0.80
             substantial), which discounts the agreement expected by chance.
When the human file also holds one column per annotator (`rater_<name>`), a first row
"human (inter-rater)" gives their Fleiss' κ (the study reports 0.717) and mean pairwise agreement;
when it holds the human scorer's per-image-set `fleiss_kappa` instead, that row gives their
image-weighted mean.
With `ci: true` both get percentile CIs resampling prompts (a prompt brings all its images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from editrobust.metrics import fleiss_kappa
from editrobust.metrics.persistence import KEYS
from editrobust.plugins import Param
from editrobust.variant_names import ed, ed_ft

from . import COMMON, NAME, NAME_LIST, NAMES, TableKind, resample
from .layout import TableRows
from .load import SAFETY, TableInputError, check_labels, get, source
from .spec import CLUSTERS, ScoreKey

RATER_PREFIX = "rater_"
INTER_RATER = "human (inter-rater)"


def variants(spec: Mapping) -> list[str]:
    return ["base", ed(spec["editor"])] + [ed_ft(spec["editor"], f) for f in spec["finetuners"]]


def inputs(spec: Mapping) -> list[ScoreKey]:
    m, p, human = spec["model"], spec["promptset"], spec["human"]
    return [ScoreKey(m, v, p, s) for v in variants(spec) for s in [human, *spec["scorers"]]]


def fleiss_parts(ratings: np.ndarray, categories: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Per item: P_i (agreement among its rater pairs) and n_ij (raters per category)."""
    counts = (ratings[:, :, None] == np.asarray(categories, dtype=object)[None, None, :]).sum(axis=1)
    n = ratings.shape[1]
    return ((counts**2).sum(axis=1) - n) / (n * (n - 1)), counts


def resampled_kappa(ratings: np.ndarray, clusters: pd.Series, categories: Sequence, picks: np.ndarray):
    """(P̄, κ) for every resample of clusters: both are ratios of per-cluster sums (see resample.py)."""
    p_i, counts = fleiss_parts(ratings, categories)
    sums = pd.DataFrame(counts, columns=range(len(categories)))
    sums["p_i"], sums["items"] = p_i, 1.0
    per_cluster = sums.groupby(clusters.to_numpy(), sort=True).sum()
    items = per_cluster["items"].to_numpy()[picks].sum(axis=1)
    p_bar = per_cluster["p_i"].to_numpy()[picks].sum(axis=1) / items
    share = per_cluster[list(range(len(categories)))].to_numpy()[picks].sum(axis=1) / (items * ratings.shape[1])[:, None]
    p_e = (share**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(p_e < 1, (p_bar - p_e) / (1 - p_e), np.nan)
    return p_bar, kappa


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    m, p, human = spec["model"], spec["promptset"], spec["human"]
    column = spec["label"]
    cluster = CLUSTERS[spec["cluster"]]
    with_ci, conf = bool(spec["ci"]), spec["confidence"]
    rng = np.random.default_rng(spec["seed"])
    categories = list(SAFETY) if column == "safety" else None

    human_frames = []
    for v in variants(spec):
        h = get(frames, ScoreKey(m, v, p, human), "human_agreement table")
        if categories is not None:
            check_labels(h, column, categories, source(h))
        human_frames.append(h.assign(_variant=v))
    humans = pd.concat(human_frames, ignore_index=True)
    cats = categories or sorted(map(str, pd.unique(humans[column].dropna())))
    cluster_ids = humans[list(cluster)].astype(str).agg("|".join, axis=1)
    n_clusters = cluster_ids.nunique()
    picks = resample.draw(rng, n_clusters, spec["bootstrap_resamples"]) if with_ci else None
    rows = TableRows(["scorer"])

    def put(row: str, ratings: np.ndarray) -> None:
        rows.put(row, "", "images", float(len(ratings)))
        p_i, _ = fleiss_parts(ratings, cats)
        kappa = fleiss_kappa(ratings.tolist(), categories=cats)
        if with_ci:
            p_bar, kappas = resampled_kappa(ratings, cluster_ids, cats, picks)
            rows.put(row, "", "agreement", float(p_i.mean()), resample.interval(p_bar, conf))
            rows.put(row, "", "κ", kappa, resample.interval(kappas, conf))
        else:
            rows.put(row, "", "agreement", float(p_i.mean()))
            rows.put(row, "", "κ", kappa)

    raters = [c for c in humans.columns if c.startswith(RATER_PREFIX)]
    if len(raters) >= 2:
        ratings = humans[raters].astype(object).to_numpy()
        if pd.isna(ratings).any():
            raise TableInputError(f"human labels: missing ratings in columns {raters}")
        put(INTER_RATER, ratings)
    elif "fleiss_kappa" in humans.columns:
        # The human scorer records each image set's κ on its rows (scoring/human.py); report their
        # image-weighted mean (the individual ratings are not in the score file).
        per_set = humans.groupby("_variant", sort=False)["fleiss_kappa"].first().astype(float)
        sizes = humans.groupby("_variant", sort=False).size().reindex(per_set.index)
        nan_ci = (np.nan, np.nan) if with_ci else None
        rows.put(INTER_RATER, "", "images", float(len(humans)))
        rows.put(INTER_RATER, "", "agreement", np.nan, nan_ci)
        rows.put(INTER_RATER, "", "κ", float(np.average(per_set, weights=sizes)), nan_ci)

    for s in spec["scorers"]:
        paired = []
        for v, h in zip(variants(spec), human_frames):
            auto = get(frames, ScoreKey(m, v, p, s), "human_agreement table")
            if categories is not None:
                check_labels(auto, column, categories, source(auto))
            joined = h[[*KEYS, column]].merge(auto[[*KEYS, column]], on=list(KEYS), how="left",
                                               suffixes=("_human", "_auto"), validate="one_to_one")
            unlabelled = joined[joined[f"{column}_auto"].isna()]
            if len(unlabelled):
                raise TableInputError(f"{source(auto)}: no label for (prompt_id, seed) "
                                      f"{unlabelled[list(KEYS)].head(3).values.tolist()} that {source(h)} labels")
            paired.append(joined)
        joined = pd.concat(paired, ignore_index=True)
        put(s, joined[[f"{column}_human", f"{column}_auto"]].astype(object).to_numpy())
    return rows.frame()


class HumanAgreement(TableKind):
    """Agreement and Fleiss' κ of each automatic scorer with the human labels (the study's Appendix D.2)."""

    name = "human_agreement"
    params = {
        **COMMON,
        "editor": Param(NAME, required=True, doc="the edit E: its images of M, M_ed and each M_ed_ft are compared"),
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`"),
        "promptset": Param(NAME, required=True, doc="a name from `promptsets`"),
        "scorers": Param(NAME_LIST, required=True, doc="the automatic scorers compared with the humans"),
        "human": Param(NAME, "human", doc="the human scorer"),
        "label": Param({"type": "string"}, "safety", doc="the label column compared"),
        "digits": Param(COMMON["digits"].schema, 3, doc=COMMON["digits"].doc),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)
