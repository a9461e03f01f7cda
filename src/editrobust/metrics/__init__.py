"""Metrics: pure functions from per-image score tables to the study's numbers.

rates        δ (gender), ReFACT efficacy/generality/specificity, label shares
persistence  Δ, relative reversal, Flip (paired by prompt_id and seed)
stats        McNemar, cluster bootstrap CIs, mean ± std rows
agreement    Fleiss' kappa for human labels
"""

from .agreement import fleiss_kappa, fleiss_kappa_counts
from .persistence import (
    delta,
    flip_counts,
    flip_rate,
    pair_by_key,
    relative_reversal,
    signed_change,
)
from .rates import female_share, gender_delta, label_rates, refact_scores, success_rate
from .stats import avg_std, bootstrap_ci, mcnemar, paired_bootstrap_ci

__all__ = [
    "avg_std",
    "bootstrap_ci",
    "delta",
    "female_share",
    "fleiss_kappa",
    "fleiss_kappa_counts",
    "flip_counts",
    "flip_rate",
    "gender_delta",
    "label_rates",
    "mcnemar",
    "pair_by_key",
    "paired_bootstrap_ci",
    "refact_scores",
    "relative_reversal",
    "signed_change",
    "success_rate",
]
