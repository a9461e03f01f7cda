"""Metrics: defining properties, and the study's published Tables 1 and 2 where derivable."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from editrobust.metrics import (
    avg_std,
    bootstrap_ci,
    delta,
    female_share,
    fleiss_kappa,
    fleiss_kappa_counts,
    flip_counts,
    flip_rate,
    gender_delta,
    label_rates,
    mcnemar,
    pair_by_key,
    paired_bootstrap_ci,
    refact_scores,
    relative_reversal,
    signed_change,
    success_rate,
)

# --- Study Table 1 (SD1.4 gender debiasing, δ per profession) --------------------------------
# Rows: CEO, Teacher, Housekeeper, Farmer, Lawyer, Hairdresser.
# Columns as printed: Base (M, M_ed), then per fine-tuner (M_ft, M_ed_ft, Δ).
T1_BASE = {"M": [0.88, 0.56, 0.94, 0.98, 0.45, 0.83], "M_ed": [0.5, 0.53, 0.58, 0.52, 0.52, 0.63]}
T1_FT = {
    "full": {
        "M_ft": [0.93, 0.57, 0.95, 0.94, 0.55, 0.7],
        "M_ed_ft": [0.7, 0.55, 0.43, 0.72, 0.63, 0.62],
        "delta": [0.20, 0.02, 0.15, 0.20, 0.11, 0.01],
    },
    "dora": {
        "M_ft": [0.74, 0.51, 0.92, 0.9, 0.59, 0.62],
        "M_ed_ft": [0.63, 0.44, 0.74, 0.58, 0.47, 0.43],
        "delta": [0.13, 0.09, 0.16, 0.06, 0.05, 0.20],
    },
    "lora": {
        "M_ft": [0.93, 0.59, 0.91, 0.97, 0.44, 0.8],
        "M_ed_ft": [0.42, 0.24, 0.61, 0.45, 0.45, 0.78],
        "delta": [0.08, 0.29, 0.03, 0.07, 0.07, 0.15],
    },
    "dreambooth": {
        "M_ft": [0.94, 0.48, 0.97, 0.96, 0.62, 0.7],
        "M_ed_ft": [0.49, 0.51, 0.74, 0.54, 0.58, 0.7],
        "delta": [0.01, 0.02, 0.16, 0.02, 0.06, 0.07],
    },
}
# Avg. Δ row (3 decimals in the paper). The extracted text also shows "0.113" under Full Size's
# 0.115; that second line is an extraction artefact (the text itself says all three are 0.115).
T1_AVG_DELTA = {"full": 0.115, "dora": 0.115, "lora": 0.115, "dreambooth": 0.057}
# Avg.(std.) row, 2 decimals.
T1_AVG_STD = {
    ("base", "M"): (0.77, 0.22),
    ("base", "M_ed"): (0.55, 0.05),
    ("full", "M_ft"): (0.77, 0.19),
    ("full", "M_ed_ft"): (0.61, 0.11),
    ("dora", "M_ft"): (0.71, 0.17),
    ("dora", "M_ed_ft"): (0.55, 0.12),
    ("lora", "M_ft"): (0.77, 0.21),
    ("lora", "M_ed_ft"): (0.49, 0.18),
    ("dreambooth", "M_ft"): (0.78, 0.21),
    ("dreambooth", "M_ed_ft"): (0.59, 0.10),
}

# --- Study Table 2 (human labels, unsafe content removal) ------------------------------------
T2_LABELS = ("safe", "unsafe", "undecidable", "black")
T2_RATES = {  # share of images per label
    "M": [0.56, 0.20, 0.08, 0.16],
    "M_ed": [0.72, 0.04, 0.10, 0.14],
    "full": [0.78, 0.16, 0.06, 0.00],
    "lora": [0.66, 0.14, 0.12, 0.08],
    "dora": [0.84, 0.10, 0.06, 0.00],
}
T2_DELTA = {
    "full": [0.06, 0.12, 0.04, 0.14],
    "lora": [0.06, 0.10, 0.02, 0.06],
    "dora": [0.12, 0.06, 0.06, 0.14],
}
T2_FLIP = {
    "full": [0.10, 0.14, 0.06, 0.00],
    "lora": [0.10, 0.12, 0.12, 0.10],
    "dora": [0.12, 0.08, 0.06, 0.00],
}


def r2(x):
    """Round as the paper prints (2 decimals)."""
    return np.round(x, 2).tolist()


# --- Table 1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ft", list(T1_FT))
def test_table1_delta_column(ft):
    d = delta(T1_BASE["M_ed"], T1_FT[ft]["M_ed_ft"])
    assert r2(d) == T1_FT[ft]["delta"]
    assert round(float(np.mean(d)), 3) == T1_AVG_DELTA[ft]


@pytest.mark.parametrize("column", list(T1_AVG_STD))
def test_table1_avg_std_row(column):
    group, name = column
    values = T1_BASE[name] if group == "base" else T1_FT[group][name]
    mean, std = avg_std(values)
    assert (round(mean, 2), round(std, 2)) == T1_AVG_STD[column]


def test_avg_std_uses_sample_std():
    # Population std (ddof=0) would print 0.20 for M, not the published 0.22.
    assert round(float(np.std(T1_BASE["M"])), 2) == 0.20
    assert avg_std([1.0, 3.0]) == (2.0, math.sqrt(2))
    assert math.isnan(avg_std([0.4])[1])


def test_table1_delta_recomputed_from_labels():
    # δ from per-image labels: 32 images with 8 women -> F = 0.25 -> δ = 0.5.
    labels = ["woman"] * 8 + ["man"] * 24 + [None, float("nan")]
    assert female_share(labels) == 0.25
    assert gender_delta(female_share(labels)) == 0.5


# --- Table 2 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ft", list(T2_DELTA))
def test_table2_delta_from_rates(ft):
    d = r2(delta(T2_RATES["M_ed"], T2_RATES[ft]))
    published = list(T2_DELTA[ft])
    if ft == "dora":
        # Typo in the paper: "Can't decide" goes 0.10 -> 0.06, so Δ = 0.04, printed as 0.06.
        assert d[2] == 0.04 and published[2] == 0.06
        d, published = d[:2] + d[3:], published[:2] + published[3:]
    assert d == published


def test_table2_rates_are_label_rates():
    # 50 images per model (rates are multiples of 0.02); label_rates gives back each row.
    for rates in T2_RATES.values():
        labels = [lab for lab, r in zip(T2_LABELS, rates) for _ in range(round(r * 50))]
        assert r2(list(label_rates(labels, T2_LABELS).values())) == rates


def test_table2_flip_within_bounds_of_its_definition():
    # Flip(label) = share that became `label`, so rate_after − rate_before ≤ Flip ≤ rate_after.
    # Exception: LoRA's black-image Flip 0.10 exceeds its black rate 0.08, impossible under this
    # definition (a typo in the paper, or a different flip definition for that cell).
    before = np.array(T2_RATES["M_ed"])
    for ft, flips in T2_FLIP.items():
        after = np.array(T2_RATES[ft])
        for i, label in enumerate(T2_LABELS):
            if (ft, label) == ("lora", "black"):
                assert flips[i] > after[i]
                continue
            assert after[i] - before[i] - 1e-9 <= flips[i] <= after[i] + 1e-9, (ft, label)


# --- rates -------------------------------------------------------------------------------------


def test_female_share_excludes_ungendered_and_rejects_unknown():
    assert female_share(["Woman", "female", "man", None]) == pytest.approx(2 / 3)
    assert math.isnan(female_share([None, None]))
    with pytest.raises(ValueError, match="unknown gender"):
        female_share(["woman", "wman"])


def test_gender_delta_scale():
    assert gender_delta(0.5) == 0.0
    assert gender_delta(0.0) == gender_delta(1.0) == 1.0
    np.testing.assert_allclose(gender_delta(np.array([0.25, 0.75])), [0.5, 0.5])
    with pytest.raises(ValueError):
        gender_delta(1.2)


def test_success_rate_and_refact_scores():
    assert success_rate([True, False, True, True]) == 0.75
    assert success_rate([1, 0]) == 0.5
    with pytest.raises(ValueError):
        success_rate([1, 0.5])
    df = pd.DataFrame(
        {
            "metric": ["efficacy"] * 4 + ["generality"] * 5 + ["specificity"] * 2,
            "success": [True, True, True, False] + [True, False, False, False, False] + [True, True],
        }
    )
    assert refact_scores(df) == {"efficacy": 0.75, "generality": 0.2, "specificity": 1.0}
    assert math.isnan(refact_scores(df[df.metric != "specificity"])["specificity"])
    with pytest.raises(ValueError, match="unknown ReFACT"):
        refact_scores(df.assign(metric="validity"))


def test_label_rates_sum_to_one_and_reject_unknown():
    rates = label_rates(["safe", "safe", "black", "unsafe"])
    assert rates == {"safe": 0.5, "unsafe": 0.25, "undecidable": 0.0, "black": 0.25}
    assert sum(rates.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in categories"):
        label_rates(["safe", "nsfw"])


# --- persistence ---------------------------------------------------------------------------------


def test_delta_signed_change_relative_reversal():
    assert delta(0.72, 0.78) == pytest.approx(0.06)
    assert signed_change(0.72, 0.78) == pytest.approx(0.06)
    assert signed_change(0.78, 0.72) == pytest.approx(-0.06)
    # Edit moved 0.2 -> 0.8; fine-tuning took back 0.15 of it: 25% reversed.
    assert relative_reversal(0.2, 0.8, 0.65) == pytest.approx(0.25)
    # Same share for a lower-is-better score (δ: 0.8 -> 0.2 -> 0.35).
    assert relative_reversal(0.8, 0.2, 0.35) == pytest.approx(0.25)
    assert math.isnan(relative_reversal(0.5, 0.5, 0.7))
    out = relative_reversal([0.2, 0.5], [0.8, 0.5], [0.2, 0.6])
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1])


def keyed(labels, order=None):
    """Per-image table keyed by (prompt_id, seed): 2 prompts × len/2 seeds."""
    n = len(labels)
    df = pd.DataFrame(
        {"prompt_id": np.repeat(["p0", "p1"], n // 2), "seed": np.tile(np.arange(n // 2), 2), "label": labels}
    )
    return df if order is None else df.iloc[order]


def test_flip_rate_hand_example():
    before = keyed(["black", "unsafe", "safe", "safe", "undecidable", "black"])
    after = keyed(["safe", "safe", "safe", "unsafe", "safe", "black"])
    # Became safe and was not: (p0,0), (p0,1), (p1,1) -> 3/6. Became unsafe: (p1,0) -> 1/6.
    assert flip_rate(before, after, "safe") == 0.5
    assert flip_rate(before, after, "unsafe") == pytest.approx(1 / 6)
    assert flip_rate(before, after, "black") == 0.0


def test_flip_rate_pairs_by_key_not_row_order():
    before = keyed(["black", "unsafe", "safe", "safe", "undecidable", "black"])
    after = keyed(["safe", "safe", "safe", "unsafe", "safe", "black"], order=[5, 3, 0, 4, 1, 2])
    assert flip_rate(before, after, "safe") == 0.5
    as_series = after.set_index(["prompt_id", "seed"])["label"]
    assert flip_rate(before, as_series, "safe") == 0.5


def test_flip_rate_rejects_mismatched_and_duplicate_keys():
    before = keyed(["safe"] * 6)
    after = keyed(["safe"] * 6)
    after.loc[after.index[-1], "seed"] = 99
    expected = r"missing from after: \[\('p1', 2\)\].*missing from before: \[\('p1', 99\)\]"
    with pytest.raises(ValueError, match=expected):
        flip_rate(before, after, "safe")
    with pytest.raises(ValueError, match="duplicate keys"):
        flip_rate(before, pd.concat([before, before.iloc[:1]]), "safe")


def test_flip_rate_properties_on_random_labels():
    rng = np.random.default_rng(1)
    before = keyed(rng.choice(T2_LABELS, 200).tolist())
    after = keyed(rng.choice(T2_LABELS, 200).tolist())
    flips = {lab: flip_rate(before, after, lab) for lab in T2_LABELS}
    rb, ra = label_rates(before.label, T2_LABELS), label_rates(after.label, T2_LABELS)
    for lab in T2_LABELS:
        assert ra[lab] - rb[lab] - 1e-12 <= flips[lab] <= ra[lab] + 1e-12
    # Every changed image counts once, under its new label.
    assert sum(flips.values()) == pytest.approx(np.mean(before.label.to_numpy() != after.label.to_numpy()))


def test_flip_counts():
    before = keyed([True, True, False, False, True, False])
    after = keyed([False, True, True, False, False, False])
    assert flip_counts(before, after) == {"reversals": 2, "gains": 1, "n": 6}
    b, a = pair_by_key(before, after)
    assert list(b) == [True, True, False, False, True, False]


# --- McNemar -------------------------------------------------------------------------------------


def test_mcnemar_exact_known_value():
    before = [True] * 10 + [False] * 2 + [True] * 5
    after = [False] * 10 + [True] * 2 + [True] * 5
    res = mcnemar(before, after)
    expected = 2 * (1 + 12 + 66) / 2**12  # 2·P(X ≤ 2 | n = 12, p = 1/2)
    assert (res["b"], res["c"], res["method"]) == (10, 2, "exact")
    assert res["p_value"] == pytest.approx(expected) and round(res["p_value"], 4) == 0.0386
    swapped = mcnemar(after, before)
    assert (swapped["b"], swapped["c"]) == (2, 10)
    assert swapped["p_value"] == res["p_value"] and swapped["statistic"] == res["statistic"]


def test_mcnemar_chi_square_and_edge_cases():
    before = [True] * 30 + [False] * 10
    after = [False] * 30 + [True] * 10
    res = mcnemar(before, after)
    assert res["method"] == "chi2"
    assert res["statistic"] == pytest.approx((20 - 1) ** 2 / 40)
    assert res["p_value"] == pytest.approx(math.erfc(math.sqrt(res["statistic"] / 2)))
    assert res["p_value"] == pytest.approx(0.002663, abs=1e-6)  # chi2(1).sf(9.025)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0  # no discordant pairs
    tie = mcnemar([True] * 15 + [False] * 15, [False] * 15 + [True] * 15)
    assert (tie["statistic"], tie["p_value"]) == (0.0, 1.0)


# --- bootstrap -----------------------------------------------------------------------------------


def gender_table(n_prompts=6, n_seeds=32, p_female=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "prompt_id": np.repeat([f"prof{i}" for i in range(n_prompts)], n_seeds),
            "seed": np.tile(np.arange(n_seeds), n_prompts),
            "female": rng.random(n_prompts * n_seeds) < p_female,
        }
    )


def profession_delta(g):
    return gender_delta(g["female"].mean())


def test_bootstrap_reproducible_and_contains_estimate():
    df = gender_table()
    first = bootstrap_ci(df, "female", seed=3)
    assert first == bootstrap_ci(df, "female", seed=3)
    many = gender_table(n_prompts=40)  # with 6 prompts nearby seeds can hit the same quantiles
    assert bootstrap_ci(many, "female", seed=3) != bootstrap_ci(many, "female", seed=4)
    est, low, high = first
    assert est == pytest.approx(df["female"].mean())
    assert low <= est <= high
    est, low, high = bootstrap_ci(df, profession_delta, weight="clusters")
    assert est == pytest.approx(np.mean([profession_delta(g) for _, g in df.groupby("prompt_id")]))
    assert low <= est <= high


def test_bootstrap_narrows_with_more_data_and_degenerate_is_zero_width():
    _, lo_small, hi_small = bootstrap_ci(gender_table(n_prompts=6), "female")
    _, lo_big, hi_big = bootstrap_ci(gender_table(n_prompts=60), "female")
    assert hi_big - lo_big < hi_small - lo_small
    constant = gender_table().assign(female=True)
    assert bootstrap_ci(constant, "female") == (1.0, 1.0, 1.0)


def test_bootstrap_is_fast():
    df = gender_table()
    start = time.perf_counter()
    bootstrap_ci(df, profession_delta, n_resamples=2000, weight="clusters")
    assert time.perf_counter() - start < 0.5


def test_paired_bootstrap():
    before = gender_table(seed=0)
    after = gender_table(seed=1, p_female=0.6)
    est, low, high = paired_bootstrap_ci(before, after, "female")
    assert est == pytest.approx(after["female"].mean() - before["female"].mean())
    assert low <= est <= high
    assert (est, low, high) == paired_bootstrap_ci(before, after, "female")
    # Identical before/after: every per-prompt difference is 0.
    assert paired_bootstrap_ci(before, before, "female") == (0.0, 0.0, 0.0)
    # Table 1's average Δ: mean over professions of |δ_ed_ft − δ_ed|.
    abs_delta = lambda b, a: delta(profession_delta(b), profession_delta(a))  # noqa: E731
    est, low, high = paired_bootstrap_ci(before, after, abs_delta, weight="clusters")
    by_prompt = zip(before.groupby("prompt_id"), after.groupby("prompt_id"))
    assert est == pytest.approx(np.mean([abs_delta(b, a) for (_, b), (_, a) in by_prompt]))
    assert low <= est <= high
    with pytest.raises(ValueError, match="only one of"):
        paired_bootstrap_ci(before, after[after.prompt_id != "prof0"], "female")


# --- Fleiss' kappa -------------------------------------------------------------------------------

# Fleiss (1971): 10 subjects, 14 raters, 5 categories; κ = 0.210.
FLEISS_1971 = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_textbook_example():
    assert round(fleiss_kappa_counts(FLEISS_1971), 3) == 0.210


def test_fleiss_kappa_ratings_match_counts():
    rng = np.random.default_rng(0)
    categories = [0, 0.25, 0.5, 0.75, 1]
    ratings = np.array([rng.permutation(np.repeat(categories, row)) for row in FLEISS_1971])
    expected = fleiss_kappa_counts(FLEISS_1971)
    assert fleiss_kappa(ratings) == pytest.approx(expected)
    assert fleiss_kappa(ratings, categories=categories + [2]) == pytest.approx(expected)  # unused category


def test_fleiss_kappa_perfect_agreement_and_errors():
    assert fleiss_kappa([["safe"] * 3, ["unsafe"] * 3, ["safe"] * 3]) == 1.0
    assert math.isnan(fleiss_kappa([[1, 1], [1, 1]]))  # one category only: κ undefined
    with pytest.raises(ValueError, match=r"items \[1\] have missing"):
        fleiss_kappa([[0, 1, 1], [0, np.nan, 1]])
    with pytest.raises(ValueError, match=r"raters per item differ.*items \[2\]"):
        fleiss_kappa_counts([[1, 2], [3, 0], [1, 1]])
    with pytest.raises(ValueError, match="not in categories"):
        fleiss_kappa([[0, 1], [1, 1]], categories=[0, 0.5])
