"""The robustness league table, the remedy variants it reads, and edit-aware fine-tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from editrobust import variant_names as vn
from editrobust.tables import ScoreKey, TableInputError, build_table, input_paths, resolve, to_markdown
from editrobust.tables.robustness import REMEDIES, Robustness

from test_tables import EDITS_CONFIG, gender_frame, road_frame

FINETUNERS = ("lora", "full")


def unsafe_frame(safe_share: float, prompts: int = 4, seeds: int = 25, black: int = 0, correct: float = 1.0):
    """Images of which exactly `safe_share` are safe (the rest unsafe), plus `black` blacked-out ones."""
    n = prompts * seeds
    safe = round(safe_share * n)
    rows = [dict(prompt_id=f"p{i % prompts}", seed=i // prompts, file=f"{i}.png",
                 safety="safe" if i < safe else "unsafe", black=0, correct=int(i < round(correct * n)))
            for i in range(n)]
    rows += [dict(prompt_id=f"p{i % prompts}", seed=i // prompts, file=f"b{i}.png", safety="black", black=1,
                  correct=0) for i in range(black)]
    return pd.DataFrame(rows)


def spec_of(tasks, **extra):
    entry = dict(kind="robustness", model="toy", finetuners=list(FINETUNERS), scorer="oracle", cluster="seed",
                 tasks=tasks, bootstrap_resamples=300, **extra)
    return resolve(entry, {**EDITS_CONFIG, "finetuners": {"lora": {}, "full": {}, "full_keep": {"keep_edit_frozen": True}}})


def test_remedy_variants_are_names_the_workflow_builds():
    spec = spec_of({"Erase": dict(kind="unsafe", editors=["erase"], promptsets=["unsafe"])},
                   edit_aware={"full": "full_keep"})
    from editrobust.tables.robustness import remedy_variants

    assert remedy_variants(spec, "erase", "full") == {
        "fine-tuned": "ed-erase+ft-full", "re-edited": "ed-erase+ft-full+ed-erase",
        "edit-aware": "ed-erase+ft-full_keep", "edited after": "ft-full+ed-erase"}
    assert "edit-aware" not in remedy_variants(spec, "erase", "lora")  # no twin: no cell
    for variant in remedy_variants(spec, "erase", "full").values():
        assert vn.parse(variant).shape in vn.BUILT_SHAPES
        assert vn.problems("t", variant, {"erase": {}}, {"full": {"steps": 1}, "full_keep": {"steps": 1}}) == []
    assert vn.parse("ed-erase+ft-full+ed-erase").parent == vn.parse("ed-erase+ft-full")


def test_retained_share_and_its_ci_for_an_eraser():
    # safe share: M 0.2, M_ed 0.9; after lora 0.55 (half the effect kept), re-edited 0.9, edited after 0.85
    share = {"base": 0.2, "ed-erase": 0.9, "ed-erase+ft-lora": 0.55, "ed-erase+ft-lora+ed-erase": 0.9,
             "ft-lora+ed-erase": 0.85, "ed-erase+ft-full": 0.9, "ed-erase+ft-full+ed-erase": 0.9,
             "ft-full+ed-erase": 0.9, "ed-erase+ft-full_keep": 0.9}
    frames = {ScoreKey("toy", v, "unsafe", "oracle"): unsafe_frame(s, black=7 if v == "base" else 0)
              for v, s in share.items()}
    # the collateral promptset: the safe concepts' accuracy, 0.8 for M, 0.6 after re-editing lora
    for v in share:
        frames[ScoreKey("toy", v, "safe", "oracle")] = unsafe_frame(1.0, correct=0.6 if v == "ed-erase+ft-lora+ed-erase"
                                                                    else 0.8)
    spec = spec_of({"Erase": dict(kind="unsafe", editors=["erase"], promptsets=["unsafe"],
                                  collateral=dict(promptset="safe", column="correct"))},
                   edit_aware={"full": "full_keep"})
    assert sorted(set(input_paths(spec))) == sorted({k.path for k in frames})
    t = build_table(spec, frames)
    assert list(t.index) == [("Erase", r) for r in REMEDIES]
    # black images do not count: M's safe share is 0.2 although 7 more images are black
    assert t.at[("Erase", "fine-tuned"), ("Edit", "M")] == pytest.approx(0.2)
    assert t.at[("Erase", "fine-tuned"), ("lora", "retained")] == pytest.approx(0.5)  # 1 − (0.9 − 0.55) / 0.7
    lo, hi = t.at[("Erase", "fine-tuned"), ("lora", "retained lo")], t.at[("Erase", "fine-tuned"), ("lora", "retained hi")]
    assert lo < 0.5 < hi and hi - lo < 0.6
    assert t.at[("Erase", "re-edited"), ("lora", "retained")] == pytest.approx(1.0)
    assert t.at[("Erase", "edited after"), ("lora", "retained")] == pytest.approx(1 - 0.05 / 0.7)
    assert t.at[("Erase", "re-edited"), ("lora", "collateral")] == pytest.approx(0.75)  # 0.6 / 0.8
    assert t.at[("Erase", "fine-tuned"), ("lora", "collateral")] == pytest.approx(1.0)
    assert t.at[("Erase", "edit-aware"), ("full", "retained")] == pytest.approx(1.0)
    assert np.isnan(t.at[("Erase", "edit-aware"), ("lora", "retained")])  # LoRA has no edit-aware twin
    # the strength of the re-edited model with its CI, beside M_ed's: the question "is it restored?"
    assert t.at[("Erase", "re-edited"), ("lora", "s")] == pytest.approx(0.9)
    assert "0.50 [" in to_markdown(t)


def test_debias_strength_is_the_mean_delta_and_an_inert_edit_has_no_share():
    # δ per profession as the study's Table 1: the edit lowers δ, a fine-tune raises it back part way
    base, edited, tuned = [0.9] * 6, [0.3] * 6, [0.6] * 6
    deltas = {"base": base, "ed-debias": edited, "ed-debias+ft-lora": tuned, "ed-debias+ft-lora+ed-debias": edited,
              "ft-lora+ed-debias": edited, "ed-debias+ft-full": edited, "ed-debias+ft-full+ed-debias": edited,
              "ft-full+ed-debias": edited}
    frames = {ScoreKey("toy", v, "prof", "oracle"): gender_frame(d).assign(correct=1) for v, d in deltas.items()}
    spec = spec_of({"Debias": dict(kind="debias", editors=["debias"], promptsets=["prof"])})
    t = build_table(spec, frames)
    assert t.at[("Debias", "fine-tuned"), ("Edit", "M")] == pytest.approx(0.9)
    assert t.at[("Debias", "fine-tuned"), ("lora", "retained")] == pytest.approx(0.5)  # 1 − (0.3 − 0.6) / (0.3 − 0.9)
    assert t.at[("Debias", "fine-tuned"), ("full", "retained")] == pytest.approx(1.0)
    assert t.at[("Debias", "fine-tuned"), ("lora", "collateral")] == pytest.approx(1.0)
    # an edit that changed nothing: no share (NaN), not a division error
    inert = {v: gender_frame(base).assign(correct=1) for v in deltas}
    t = build_table(spec, {ScoreKey("toy", v, "prof", "oracle"): f for v, f in inert.items()})
    assert np.isnan(t.at[("Debias", "fine-tuned"), ("lora", "retained")])


def test_refact_rows_average_edits_and_use_specificity_as_collateral():
    efficacy = {"base": 0.1, "ed": 0.9, "ed+ft": 0.5, "re": 0.9, "after": 0.8}
    frames = {}
    for e in ("lime", "box"):
        for f in FINETUNERS:
            for role, v in {"base": "base", "ed": f"ed-{e}", "ed+ft": f"ed-{e}+ft-{f}", "re": vn.re_edit(e, f),
                            "after": vn.ft_ed(f, e)}.items():
                spec_rate = 0.4 if role == "re" else 0.8
                frames[ScoreKey("toy", v, f"road_{e}", "oracle")] = road_frame(
                    dict(efficacy=efficacy[role], generality=0.5, specificity=spec_rate), seeds=20)
    spec = spec_of({"Appearance": dict(kind="refact", editors=["lime", "box"], promptsets=["road_lime", "road_box"])})
    t = build_table(spec, frames)
    assert t.at[("Appearance", "fine-tuned"), ("lora", "retained")] == pytest.approx(0.5)
    assert t.at[("Appearance", "re-edited"), ("lora", "collateral")] == pytest.approx(0.5)  # specificity 0.4 / 0.8
    assert ("Appearance", "edit-aware") not in t.index  # no twin configured for any fine-tuner


def test_missing_scores_name_the_variant_and_bad_twins_are_config_errors():
    spec = spec_of({"Erase": dict(kind="unsafe", editors=["erase"], promptsets=["unsafe"])})
    with pytest.raises(TableInputError, match=r"ed-erase\+ft-lora\+ed-erase"):
        build_table(spec, {ScoreKey("toy", v, "unsafe", "oracle"): unsafe_frame(0.5)
                           for v in ("base", "ed-erase", "ed-erase+ft-lora")})
    config = {"models": {"toy": {}}, "editors": {"erase": {}}, "promptsets": {"unsafe": {}},
              "scorers": {"oracle": {}}, "finetuners": {"lora": {}, "full": {}}}
    entry = dict(kind="robustness", model="toy", finetuners=["lora"], scorer="oracle", edit_aware={"lora": "full"},
                 tasks={"Erase": dict(kind="unsafe", editors=["erase"], promptsets=["unsafe"],
                                      collateral=dict(promptset="nowhere", column="correct"))})
    problems = Robustness.problems("league", entry, config)
    assert any("edit_aware.lora" in p and "keep_edit_frozen" in p for p in problems)
    assert any("collateral.promptset" in p and "nowhere" in p for p in problems)


# --- the remedies through Snakemake on the nano toy world --------------------------------------------------
REMEDY_TARGETS = ["results/models/nano/ed-erase+ft-lora+ed-erase/variant.json",
                  "results/models/nano/ft-full+ed-refact_lime/variant.json",
                  "results/models/nano/ed-erase+ft-full_keep/variant.json",
                  "results/models/nano/ed-erase+ft-full/variant.json"]


@pytest.fixture(scope="module")
def remedies(tmp_path_factory, repo, snakemake_exe):
    import yaml

    from test_workflow import run

    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["finetuners"]["full"]["lr"] = 1e-3  # two steps that visibly move the weights
    cfg["finetuners"]["full_keep"] = {**cfg["finetuners"]["full"], "keep_edit_frozen": True}
    work = tmp_path_factory.mktemp("nano_remedies")
    configfile = work / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    run(snakemake_exe, repo, work, "--cores", "2", *REMEDY_TARGETS, configfile=configfile)
    return work


@pytest.mark.workflow
def test_re_editing_and_editing_after_a_finetune_compose_onto_the_finetuned_model(remedies):
    import json

    import torch
    from safetensors.torch import load_file

    from editrobust.models.variants import load_pipeline, variant_chain

    models = remedies / "results/models/nano"
    info = json.loads((models / "ed-erase+ft-lora+ed-erase/variant.json").read_text())
    assert info["parent"] == "ed-erase+ft-lora" and info["name"] == "ed-erase+ft-lora+ed-erase"
    assert [p.name for p in variant_chain(models / "ed-erase+ft-lora+ed-erase")] == [
        "base", "ed-erase", "ed-erase+ft-lora", "ed-erase+ft-lora+ed-erase"]
    # the re-edit's tensors are what the composed model holds (they are applied last)
    delta = load_file(models / "ed-erase+ft-lora+ed-erase/unet.safetensors")
    unet = load_pipeline(models / "ed-erase+ft-lora+ed-erase").unet.state_dict()
    assert delta and all(torch.equal(unet[k], v) for k, v in delta.items())
    # ReFACT after a fine-tune reads the statistic of the fine-tuned model's text encoder
    after = json.loads((models / "ft-full+ed-refact_lime/variant.json").read_text())
    assert after["parent"] == "ft-full"
    assert list((remedies / "results/stats/nano/ft-full").glob("fc2_second_moment_L1_*.safetensors"))


@pytest.mark.workflow
def test_edit_aware_finetuning_keeps_exactly_the_edited_tensors(remedies):
    import json

    import torch
    from safetensors.torch import load_file

    models = remedies / "results/models/nano"
    edit = load_file(models / "ed-erase/unet.safetensors")
    kept = load_file(models / "ed-erase+ft-full_keep/unet.safetensors")
    plain = load_file(models / "ed-erase+ft-full/unet.safetensors")
    info = json.loads((models / "ed-erase+ft-full_keep/variant.json").read_text())
    assert info["kept_frozen"] == sorted(f"unet.{k}" for k in edit)
    assert all(torch.equal(kept[k], v) for k, v in edit.items())  # the edit, bit for bit
    assert not all(torch.equal(plain[k], v) for k, v in edit.items())  # a plain fine-tune moves them
    base = load_file(next((models / "base/unet").glob("*.safetensors")))
    assert any(not torch.equal(kept[k], base[k]) for k in kept if k not in edit)  # the rest of the UNet trained


def test_edit_aware_twins_hold_nothing_an_adapter_trains():
    """LoRA / DoRA train adapter matrices, never a tensor an edit wrote: keep_edit_frozen holds none."""
    import torch

    from editrobust.finetune.loop import hold_frozen

    lora = [("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight",
             torch.nn.Parameter(torch.zeros(2, 2)))]
    named, held = hold_frozen(lora, {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                                     "text_encoder.text_model.encoder.layers.1.mlp.fc2.weight"}, "v")
    assert named == lora and held == [] and lora[0][1].requires_grad


def test_league_figure_draws_the_tables_cells(tmp_path):
    from editrobust.report import build_figure, resolve as resolve_figure
    from editrobust.tables import flat, write_table

    frames = {ScoreKey("toy", v, "unsafe", "oracle"): unsafe_frame(s) for v, s in {
        "base": 0.2, "ed-erase": 0.9, "ed-erase+ft-lora": 0.55, "ed-erase+ft-lora+ed-erase": 0.9,
        "ft-lora+ed-erase": 0.85, "ed-erase+ft-full": 0.9, "ed-erase+ft-full+ed-erase": 0.9,
        "ft-full+ed-erase": 0.9}.items()}
    spec = spec_of({"Erase": dict(kind="unsafe", editors=["erase"], promptsets=["unsafe"])})
    table = build_table(spec, frames)
    out = tmp_path / "results/tables"
    out.mkdir(parents=True)
    write_table(table, spec, out / "league.csv", out / "league.md", out / "league.tex", name="league")
    config = {"tables": {"league": {"kind": "robustness"}}}
    fig, data = build_figure(resolve_figure({"kind": "league", "table": "league"}, config), root=tmp_path)
    cell = data[(data["row"] == "Erase · fine-tuned") & (data["finetuner"] == "lora")].iloc[0]
    assert cell["value"] == pytest.approx(0.5) and cell["lo"] < 0.5 < cell["hi"]
    assert len(data) == 3 * 2 and flat(table).shape[0] == 3  # 3 remedies (no edit-aware twin) × 2 fine-tuners
