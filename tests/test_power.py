"""Seed planning (editrobust.tables.power): the sizes it plans deliver what they promise on
simulated data with known variance components, and the rule builds it for a table."""

from __future__ import annotations

import math
import subprocess
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import yaml

from editrobust.config import ConfigError, validate_config
from editrobust.tables import build_table, input_keys, resolve
from editrobust.tables.power import (
    IDENTITY,
    Cell,
    PowerNotSupported,
    Target,
    Term,
    VarianceComponents,
    cell_components,
    plan,
    power_table,
)

from conftest import write_edit_record

Z95 = NormalDist().inv_cdf(0.975)


def two_stage(rng, replicates, k, m, between, within, shift=0.0):
    """(replicates × k × m) values a_i + ε_ij + shift with Var a = between, Var ε = within."""
    a = rng.normal(0, math.sqrt(between), size=(replicates, k, 1))
    return shift + a + rng.normal(0, math.sqrt(within), size=(replicates, k, m))


# --- the core: components and plan ---------------------------------------------------------------------------

def test_anova_recovers_the_variance_components():
    rng = np.random.default_rng(1)
    values = two_stage(rng, 1, 200, 8, between=0.04, within=0.2)[0]
    vc = VarianceComponents.from_clusters(values.ravel(), np.repeat(np.arange(200), 8))
    assert vc.clusters == 200 and vc.per_cluster == 8
    assert vc.between == pytest.approx(0.04, rel=0.3) and vc.within == pytest.approx(0.2, rel=0.1)
    assert vc.design_effect == pytest.approx(1 + 7 * vc.icc)


def test_planned_images_per_cluster_give_the_requested_half_width():
    rng = np.random.default_rng(2)
    vc = VarianceComponents(between=0.002, within=0.25, clusters=40, per_cluster=4)
    target = Target(half_width=0.03)
    m = plan(vc, target, compares=False)["per_cluster_for_half_width"]
    assert m > 4  # the current design does not reach it
    sims = two_stage(rng, 2000, 40, int(m), 0.002, 0.25).mean(axis=(1, 2))
    empirical = Z95 * sims.std(ddof=1)
    assert empirical <= 0.03 * 1.06  # reached (up to simulation noise)...
    assert empirical >= 0.03 * 0.85  # ...and not by far more images than needed
    # the floor: with m → ∞ the half-width is z·σ_b/√k; asking for less needs more clusters
    tight = plan(vc, Target(half_width=Z95 * math.sqrt(0.002 / 40) * 0.9), compares=False)
    assert math.isnan(tight["per_cluster_for_half_width"]) and tight["min_clusters_for_half_width"] > 40


def test_planned_design_detects_the_change_with_the_requested_power():
    """Paired differences d_ij = Δ + a_i + ε_ij; a two-sided z-test on the cluster means at the
    planned m detects Δ in about 80 % of simulated experiments."""
    rng = np.random.default_rng(3)
    between, within, k, delta = 0.004, 0.5, 30, 0.1
    vc = VarianceComponents(between, within, clusters=k, per_cluster=2)
    out = plan(vc, Target(delta=delta, power=0.8), compares=True)
    m = int(out["per_cluster_for_delta"])
    exact = NormalDist().cdf(delta / math.sqrt(vc.variance(k, m)) - Z95)  # the power at the rounded-up m
    assert 0.8 <= exact < 0.86
    detected = 0
    experiments = 400
    for _ in range(experiments):
        means = two_stage(rng, 1, k, m, between, within, shift=delta)[0].mean(axis=1)
        z = means.mean() / (means.std(ddof=1) / math.sqrt(k))
        detected += abs(z) > Z95
    assert detected / experiments == pytest.approx(exact, abs=0.07)
    # clusters at the current m are a design that reaches the same power
    k_needed = out["clusters_for_delta"]
    assert NormalDist().cdf(delta / math.sqrt(vc.variance(k_needed, 2)) - Z95) >= 0.8


def test_more_between_prompt_variance_needs_more_prompts():
    target = Target(half_width=0.05, delta=0.1)
    low = plan(VarianceComponents(0.001, 0.2, 20, 5), target)
    high = plan(VarianceComponents(0.02, 0.2, 20, 5), target)
    for t in ("half_width", "delta"):
        assert high[f"clusters_for_{t}"] > low[f"clusters_for_{t}"]
        assert high[f"min_clusters_for_{t}"] > low[f"min_clusters_for_{t}"]
    # from data: the same images, prompts made more different
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 0.4, size=(20, 6))
    effects = rng.normal(0, 1, size=(20, 1))
    ids = np.repeat(np.arange(20), 6)
    mild = VarianceComponents.from_clusters((noise + 0.05 * effects).ravel(), ids)
    strong = VarianceComponents.from_clusters((noise + 0.3 * effects).ravel(), ids)
    assert strong.between > mild.between
    assert plan(strong, target)["clusters_for_half_width"] > plan(mild, target)["clusters_for_half_width"]


def test_summary_components_of_a_rate_reduce_to_the_binomial_without_clustering():
    vc = VarianceComponents.from_rate(0.3, icc=0.0, clusters=20, per_cluster=5)
    assert vc.variance() == pytest.approx(0.3 * 0.7 / 100)
    clustered = VarianceComponents.from_rate(0.3, icc=0.2, clusters=20, per_cluster=5)
    assert clustered.variance() == pytest.approx(vc.variance() * clustered.design_effect)


def test_bad_targets_name_the_key():
    with pytest.raises(ValueError, match="power.half_width"):
        Target(half_width=0)
    with pytest.raises(ValueError, match="power.power"):
        Target(power=1.2)


# --- cells from per-image 0/1 data ----------------------------------------------------------------------------

def binary_design(rng, k, m, logit_sd, base=0.3):
    """0/1 values of k prompts × m seeds, each prompt with its own rate (logit-normal)."""
    logits = np.log(base / (1 - base)) + rng.normal(0, logit_sd, size=(k, 1))
    return (rng.random((k, m)) < 1 / (1 + np.exp(-logits))).astype(float)


def as_term(values, weight=1.0):
    k, m = values.shape
    index = pd.MultiIndex.from_product([[f"p{i}" for i in range(k)], range(m)], names=["prompt_id", "seed"])
    return Term(weight, pd.Series(values.ravel(), index=index), IDENTITY)


def test_rate_cell_predicts_the_spread_of_its_estimate_across_replicate_studies():
    rng = np.random.default_rng(5)
    k, m = 25, 8
    vc = cell_components(Cell("r", "g", "M", False).add("s", as_term(binary_design(rng, k, m, 1.0))), ["prompt_id"])
    predicted = Z95 * math.sqrt(vc.variance())
    replicates = [binary_design(rng, k, m, 1.0).mean() for _ in range(1500)]
    assert predicted == pytest.approx(Z95 * np.std(replicates, ddof=1), rel=0.25)
    assert vc.icc > 0.05  # the prompts differ: the design effect is real


def test_degenerate_cell_gives_an_explicit_finite_answer():
    zeros = as_term(np.zeros((10, 4)))
    cell = Cell("r", "g", "Δ", True).add("s", zeros).add("s", as_term(np.zeros((10, 4)), weight=-1.0))
    vc = cell_components(cell, ["prompt_id"])
    assert "rule of three" in vc.basis and vc.within > 0
    out = plan(vc, Target())
    for key in ("per_cluster_for_half_width", "clusters_for_half_width", "per_cluster_for_delta", "clusters_for_delta"):
        assert math.isfinite(out[key]) and out[key] >= 1


# --- table kinds --------------------------------------------------------------------------------------------

PROFESSIONS = ["ceo", "nurse"]


def debias_frames(spec, rng, women_share=0.3, prompts=12, seeds=4):
    frames = {}
    for key in input_keys(spec):
        rows = [dict(prompt_id=f"{p}-{t}", seed=s, group=p, gender="woman" if rng.random() < women_share else "man")
                for p in PROFESSIONS for t in range(prompts) for s in range(seeds)]
        frames[key] = pd.DataFrame(rows)
    return frames


DEBIAS = dict(kind="debias", model="toy", editor="debias", finetuners=["lora"], promptset="p", scorer="oracle",
              bootstrap_resamples=300, cluster="prompt")


def test_debias_cells_match_the_table_and_the_bootstrap():
    spec = resolve(DEBIAS, {})
    frames = debias_frames(spec, np.random.default_rng(6))
    power = power_table(spec, frames)
    table = build_table(spec, frames)
    rows = power.set_index(["row", "group", "quantity"])
    for p in PROFESSIONS:
        assert rows.loc[(p, "Base", "M_ed"), "estimate"] == pytest.approx(table.at[p, ("Base", "M_ed")])
        # Δ is planned on the signed change; the table shows its size
        assert abs(rows.loc[(p, "lora", "Δ"), "estimate"]) == pytest.approx(table.at[p, ("lora", "Δ")])
    assert set(power["quantity"]) == {"M", "M_ed", "M_ft", "M_ed_ft", "Δ"}
    assert power.loc[power["quantity"] != "Δ", "per_cluster_for_delta"].isna().all()
    assert (power["clusters"] == 12).all() and (power["per_cluster"] == 4).all()
    # δ away from 0 (30 % women: δ ≈ 0.4): the delta method agrees with the cluster bootstrap (whose
    # percentile intervals are a little narrower with 12 clusters: its variance is (k − 1)/k of it)
    cells = power[power["basis"] == "observed"]
    ratio = cells["half_width"] / cells["bootstrap_half_width"]
    assert ratio.median() == pytest.approx(1.0, abs=0.2)


def test_unsafe_and_refact_are_planned_and_other_kinds_are_refused():
    rng = np.random.default_rng(7)
    spec = resolve(dict(kind="unsafe", model="toy", editor="e", finetuners=["full"], promptset="p",
                        scorers=["oracle"], bootstrap_resamples=200), {})
    labels = ["safe", "unsafe", "undecidable", "black"]
    frames = {key: pd.DataFrame([dict(prompt_id=f"q{i}", seed=s, safety=labels[rng.integers(0, 2)])
                                 for i in range(8) for s in range(5)]) for key in input_keys(spec)}
    power = power_table(spec, frames)
    assert set(power["quantity"]) == {"M", "M_ed", "M_ed_ft", "Δ", "Flip"}
    undecidable = power[power["row"] == "oracle / undecidable"]
    assert (undecidable["basis"] == "no variation seen: rule of three").all()
    assert power["per_cluster_for_half_width"].notna().any()

    from test_tables import EDITS_CONFIG, refact_frames

    spec = resolve(dict(kind="refact", model="toy", editors=["lime", "box", "king"],
                        promptsets=["road_lime", "road_box", "road_king"], finetuners=["lora"], scorer="oracle",
                        bootstrap_resamples=100), EDITS_CONFIG)
    frames = refact_frames(lambda e, role: dict(efficacy={"lime": 0.9, "box": 0.5, "king": 0.7}[e],
                                                generality=0.5, specificity=0.8))
    power = power_table(spec, frames)
    appearance = power.set_index(["row", "group", "quantity"]).loc[("appearance / efficacy", "Base", "M")]
    assert appearance["cluster"] == "edit" and appearance["clusters"] == 2
    assert appearance["estimate"] == pytest.approx(0.7)  # the mean of the two edits' shares

    with pytest.raises(PowerNotSupported, match="quality"):
        power_table({"kind": "quality", "confidence": 0.95}, {})


def test_power_config_is_validated(repo):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["power"] = {"half_width": -1}
    with pytest.raises(ConfigError, match=r"power\.half_width"):
        validate_config(cfg)
    cfg["power"] = {"delta": 0.2, "spread": 1}
    with pytest.raises(ConfigError, match=r"power\.spread: unknown key"):
        validate_config(cfg)
    cfg["power"] = {"delta": 0.2}
    assert validate_config(cfg)["power"] == {"half_width": 0.05, "delta": 0.2, "power": 0.8}


# --- the rule ---------------------------------------------------------------------------------------------

@pytest.mark.workflow
def test_rule_builds_the_power_table_of_each_supported_table(repo, snakemake_exe, tmp_path):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["promptsets"]["professions"] = {"source": "toy", "set": "professions", "images_per_prompt": 3}
    cfg["editors"]["debias"] = {"method": "uce_debias", "concepts": ["a ceo"]}
    cfg["tables"] = {"table1": {"kind": "debias", "model": "nano", "editor": "debias", "finetuners": [],
                                "promptset": "professions", "scorer": "oracle", "bootstrap_resamples": 50}}
    cfg["power"] = {"delta": 0.2}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(8)
    for v in ("base", "ed-debias"):
        path = tmp_path / f"results/scores/nano/{v}/professions/oracle.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([dict(prompt_id=f"{p}-{t}", seed=s, group=p, gender=rng.choice(["man", "woman"]))
                      for p in PROFESSIONS for t in range(3) for s in range(3)]).to_csv(path, index=False)
    write_edit_record(tmp_path, "nano", "debias")
    cmd = [snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(configfile),
           "--allowed-rules", "table_power", "power", "--cores", "1", "power"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    power = pd.read_csv(tmp_path / "results/tables/power/table1.csv")
    assert power["row"].tolist()[:2] == ["ceo", "ceo"] and len(power) == 3 * 2  # (2 professions + Avg.) × M, M_ed
    md = (tmp_path / "results/tables/power/table1.md").read_text()
    assert "Δ = 0.2" in md and "| row | group | quantity |" in md
    assert not list((tmp_path / "results").rglob("*.tmp"))
    assert not (tmp_path / "results/tables/table1.csv").exists()  # planning needs the scores only

