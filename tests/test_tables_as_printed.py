"""The study's tables as printed (Tables 2, 3, 5 and §1's headline drop), and checkpoints saved only
for the variants a figure draws."""

from __future__ import annotations

import numpy as np
import pytest

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.report import FIGURES
from editrobust.report.spec import persistence_points
from editrobust.tables import ScoreKey, TableInputError, build_table, kind_of, resolve
from editrobust.tables.edit_drop import average_drop, drop
from editrobust.tables.marks import apply_marks
from editrobust.workflow import Rules, declared_checkpoints

from conftest import REPO, SCHEMA
from test_tables import road_frame, safety_frame

# --- Table 2 (human labels) ------------------------------------------------------------------------------
# The study's Table 2, Human rows, as label counts of its 50 I2P images: M, M_ed and M_ed_ft (Full-Size).
BASE = {"safe": 28, "unsafe": 10, "undecidable": 4, "black": 8}  # 0.56 0.20 0.08 0.16
# (M_ed label, M_ed_ft label): count. M_ed = 36 safe, 2 unsafe, 5 undecidable, 7 black (0.72 0.04 0.10
# 0.14); M_ed_ft = 39 safe, 8 unsafe, 3 undecidable, 0 black (0.78 0.16 0.06 0.00); into safe 5 pairs,
# into unsafe 7, into undecidable 3, into black none: the printed Flip 0.10 0.14 0.06 0.00.
PAIRS = {("safe", "safe"): 34, ("safe", "unsafe"): 2, ("unsafe", "unsafe"): 1, ("unsafe", "safe"): 1,
         ("undecidable", "safe"): 2, ("undecidable", "unsafe"): 3, ("black", "safe"): 2, ("black", "unsafe"): 2,
         ("black", "undecidable"): 3}
LABELS = ["safe", "unsafe", "undecidable", "black"]


def study_frames(scorer="human", model="sd14", finetuner="full", with_ft=False):
    before = [b for (b, _), n in PAIRS.items() for _ in range(n)]
    after = [a for (_, a), n in PAIRS.items() for _ in range(n)]
    base = [label for label, n in BASE.items() for _ in range(n)]
    frames = {ScoreKey(model, "base", "i2p50", scorer): safety_frame(base),
              ScoreKey(model, "ed-erase", "i2p50", scorer): safety_frame(before),
              ScoreKey(model, f"ed-erase+ft-{finetuner}", "i2p50", scorer): safety_frame(after)}
    if with_ft:
        frames[ScoreKey(model, f"ft-{finetuner}", "i2p50", scorer)] = safety_frame(base[::-1])
    return frames


def test_table2_with_human_labels_reproduces_the_printed_full_size_columns():
    spec = resolve(dict(kind="unsafe", model="sd14", editor="erase", finetuners=["full"], promptset="i2p50",
                        scorers=["human"], mcnemar=False, ci=False, names={"full": "Full-Size"}), {})
    t = build_table(spec, study_frames())
    # the printed columns, and no McNemar column
    assert list(t.columns) == [("Base", "M"), ("Base", "M_ed"), ("Full-Size", "M_ed_ft"), ("Full-Size", "Δ"),
                               ("Full-Size", "Flip")]
    printed = {"safe": (0.56, 0.72, 0.78, 0.06, 0.10), "unsafe": (0.20, 0.04, 0.16, 0.12, 0.14),
               "undecidable": (0.08, 0.10, 0.06, 0.04, 0.06), "black": (0.16, 0.14, 0.00, 0.14, 0.00)}
    for label, row in printed.items():
        assert t.loc[("human", label)].to_numpy() == pytest.approx(row), label
    # with the default the p column comes back: the as-printed switch is the only difference
    with_p = build_table(resolve({**spec, "mcnemar": True}, {}), study_frames())
    assert ("Full-Size", "p (McNemar)") in with_p.columns
    assert with_p.drop(columns=[("Full-Size", "p (McNemar)")]).equals(t)


def test_table3_flux_has_the_studys_columns_with_one_finetuner():
    spec = resolve(dict(kind="unsafe", model="flux", editor="erase", finetuners=["lora_flux"], promptset="i2p50",
                        scorers=["human"], with_ft=True, mcnemar=False, ci=False, names={"lora_flux": "LoRA"}), {})
    t = build_table(spec, study_frames(model="flux", finetuner="lora_flux", with_ft=True))
    assert [q for _, q in t.columns] == ["M", "M_ed", "M_ft", "M_ed_ft", "Δ", "Flip"]
    assert {g for g, _ in t.columns} == {"Base", "LoRA"}


# --- Table 5: the scorers side by side ---------------------------------------------------------------
def table5_spec(**over):
    entry = dict(kind="safety_rates", model="sd14", editor="erase", finetuners=["full"], promptset="i2p50",
                 scorers=["human", "zs"], labels={"zs": ["safe", "unsafe", "black"]}, bootstrap_resamples=200,
                 names={"full": "Full Size", "human": "Human", "zs": "Zero-shot", "black": "Black Image"})
    return resolve({**entry, **over}, {})


def table5_frames():
    frames = study_frames("human")
    automatic = {ScoreKey(k.model, k.variant, k.promptset, "zs"): f.assign(
        safety=f["safety"].replace({"undecidable": "unsafe"})) for k, f in frames.items()}
    return {**frames, **automatic}


def test_table5_lays_out_the_unsafe_tables_numbers_per_scorer():
    spec = table5_spec()
    t = build_table(spec, table5_frames())
    assert list(t.index) == [("Base", "M"), ("Base", "M_ed"), ("Full Size", "M_ed_ft"), ("Full Size", "Δ"),
                             ("Full Size", "Flip")]
    shown = [c for c in t.columns if not c[1].endswith((" lo", " hi"))]
    assert shown == [("Human", "safe"), ("Human", "unsafe"), ("Human", "undecidable"), ("Human", "Black Image"),
                     ("Zero-shot", "safe"), ("Zero-shot", "unsafe"), ("Zero-shot", "Black Image")]
    assert t.at[("Full Size", "Flip"), ("Human", "unsafe")] == pytest.approx(0.14)
    # every cell (and CI) is the unsafe table's for that scorer, label and variant: a transposition
    for scorer, name, labels in (("human", "Human", LABELS), ("zs", "Zero-shot", ["safe", "unsafe", "black"])):
        unsafe = build_table(resolve(dict(kind="unsafe", model="sd14", editor="erase", finetuners=["full"],
                                          promptset="i2p50", scorers=[scorer], labels=labels, mcnemar=False,
                                          bootstrap_resamples=200, names=spec["names"]), {}), table5_frames())
        for label in labels:
            for group, quantity in unsafe.columns:
                row = (group, quantity.removesuffix(" lo").removesuffix(" hi"))
                suffix = quantity[len(row[1]):]
                value = t.at[row, (name, spec["names"].get(label, label) + suffix)]
                assert value == pytest.approx(unsafe.at[(scorer, label), (group, quantity)]), (scorer, label, quantity)


def test_table5_marks_only_edited_rows_and_rejects_labels_of_an_unshown_scorer():
    spec = table5_spec(ci=False)
    t = build_table(spec, table5_frames())
    kind = kind_of(spec)
    marked = apply_marks(t, {"erase": "ed-erase missed"}, lambda e: kind.cells_of_edit(spec, e, t))
    mark_columns = [c for c in marked.columns if c[1].endswith(" mark")]
    assert mark_columns and marked.loc[("Base", "M"), mark_columns].isna().all()
    assert (marked.loc[("Base", "M_ed"), mark_columns] == "†").all()
    with pytest.raises(TableInputError, match=r"labels given for scorer\(s\) \['checker'\]"):
        build_table(table5_spec(labels={"checker": ["safe"]}), table5_frames())


# --- §1's headline: the average drop of editing performance ----------------------------------------------
EDITORS = {"editors": {"lime": {"road": {"type": "appearance"}}, "box": {"road": {"type": "appearance"}},
                       "king": {"road": {"type": "role"}}}}
FOUR = ["full", "lora", "dora", "dreambooth"]
# success rates (efficacy, generality, specificity) of M_ed and of M_ed_ft per fine-tuner
APPEARANCE_ED = (0.9, 0.6, 0.9)  # P(M_ed) = 0.8
APPEARANCE_AFTER = {"full": (0.8, 0.5, 0.8),         # P = 0.7: drop 12.5 % of 0.8
                    "lora": (0.9, 0.6, 0.9),         # P = 0.8: no drop
                    "dora": (0.7, 0.4, 0.7),         # P = 0.6: 25 %
                    "dreambooth": (0.85, 0.55, 0.9)}  # P = 2.3 / 3: 4.1667 %
ROLE_ED, ROLE_AFTER = (1.0, 0.5, 0.6), (0.9, 0.5, 0.6)  # P 0.7 -> 2 / 3 under every fine-tuner: 4.7619 %


def drop_frames():
    frames = {}
    for i, (editor, promptset) in enumerate([("lime", "road_lime"), ("box", "road_box"), ("king", "road_king")]):
        ed_rates, after = (ROLE_ED, {f: ROLE_AFTER for f in FOUR}) if editor == "king" else (APPEARANCE_ED, dict(APPEARANCE_AFTER))
        if editor == "box":  # box and lime differ, their mean is the appearance cell: (0.9 + 0.7) / 2 = 0.8
            after["full"] = (0.7, 0.5, 0.8)
        elif editor == "lime":
            after["full"] = (0.9, 0.5, 0.8)
        variants = {f"ed-{editor}": ed_rates, **{f"ed-{editor}+ft-{f}": after[f] for f in FOUR}}
        for variant, rates in variants.items():
            frames[ScoreKey("sd14", variant, promptset, "refact")] = road_frame(
                dict(zip(("efficacy", "generality", "specificity"), rates)), seed=i)
    return frames


def drop_spec(**over):
    entry = dict(kind="edit_drop", model="sd14", editors=["lime", "box", "king"],
                 promptsets=["road_lime", "road_box", "road_king"], finetuners=FOUR, scorer="refact", ci=False)
    return resolve({**entry, **over}, EDITORS)


def test_average_drop_is_the_mean_over_finetuners_of_the_drop_relative_to_m_ed():
    t = build_table(drop_spec(), drop_frames())
    headline = t[("Average", "drop")]
    # appearance: (12.5 + 0 + 25 + 4.1667) / 4; role: 4.7619 under each of the four
    assert headline[("appearance", "editing performance")] == pytest.approx((12.5 + 0 + 25 + 100 / 24) / 4)
    assert headline[("role", "editing performance")] == pytest.approx(100 / 21)
    assert t.at[("appearance", "editing performance"), ("Base", "M_ed")] == pytest.approx(0.8)
    assert t.at[("appearance", "editing performance"), ("dora", "drop")] == pytest.approx(25.0)
    # the per-metric rows: efficacy after full is the mean over lime and box, 0.8, a drop of 1/9 of 0.9
    assert t.at[("appearance", "efficacy"), ("full", "M_ed_ft")] == pytest.approx(0.8)
    assert t.at[("appearance", "efficacy"), ("full", "drop")] == pytest.approx(100 / 9)
    assert list(t.index) == [(g, m) for g in ("appearance", "role")
                             for m in ("efficacy", "generality", "specificity", "editing performance")]
    # absolute: percentage points, (10 + 0 + 20 + 3.333) / 4
    absolute = build_table(drop_spec(measure="absolute"), drop_frames())
    assert absolute.at[("appearance", "editing performance"), ("Average", "drop")] == pytest.approx(100 / 12)
    # the metrics averaged are the table's: efficacy alone
    efficacy = build_table(drop_spec(metrics=["efficacy"]), drop_frames())
    assert efficacy.at[("role", "editing performance"), ("Average", "drop")] == pytest.approx(10.0)


def test_drop_sign_and_the_function_by_hand():
    assert drop(0.8, 0.6, "relative") == pytest.approx(25.0) and drop(0.8, 0.6, "absolute") == pytest.approx(20.0)
    assert drop(0.5, 0.6, "relative") == pytest.approx(-20.0)  # fine-tuning strengthened the edit: negative
    assert average_drop(0.8, {"a": 0.7, "b": 0.8, "c": 0.6, "d": 0.8 - 1 / 30}) == pytest.approx((12.5 + 25 + 100 / 24) / 4)
    with pytest.raises(ValueError, match="at least one fine-tuner"):
        average_drop(0.8, {})


def test_drop_cis_contain_the_estimate_and_a_missing_metric_is_named():
    t = build_table(drop_spec(ci=True, bootstrap_resamples=200), drop_frames())
    for row in [("appearance", "efficacy"), ("role", "generality")]:
        for group in ("full", "Average"):
            lo, value, hi = (t.at[row, (group, q)] for q in ("drop lo", "drop", "drop hi"))
            assert lo - 1e-9 <= value <= hi + 1e-9, (row, group)
    # the editing-performance row mixes separate draws: no CI
    assert np.isnan(t.at[("appearance", "editing performance"), ("Average", "drop lo")])
    frames = drop_frames()
    key = ScoreKey("sd14", "ed-king", "road_king", "refact")
    frames[key] = frames[key][frames[key]["metric"] != "specificity"]
    with pytest.raises(TableInputError, match="no specificity images for the role edits"):
        build_table(drop_spec(), frames)


def test_edit_drop_config_checks_name_the_key():
    cfg = load_yaml(REPO / "config" / "config.yaml")
    cfg["tables"] = {"drop": {"kind": "edit_drop", "model": "toy", "editors": ["refact_lime"],
                              "promptsets": ["road_lime"], "finetuners": ["full"], "scorer": "oracle",
                              "measure": "ratio"}}
    with pytest.raises(ConfigError, match=r"tables\.drop\.measure"):
        validate_config(cfg, SCHEMA)


# --- checkpoints only where a figure draws them --------------------------------------------------------
def test_declared_checkpoints_are_the_outputs_besides_the_final_variant():
    outputs = ["results/models/m/ed-e+ft-f@20/variant.json", "results/models/m/ed-e+ft-f@100/variant.json",
               "results/models/m/ed-e+ft-f/variant.json"]
    assert declared_checkpoints(outputs, outputs[-1]) == [20, 100]
    assert declared_checkpoints(outputs[-1:], outputs[-1]) == []


def toy_config() -> dict:
    return validate_config(load_yaml(REPO / "config" / "config.yaml"), SCHEMA)


def test_toy_checkpoints_are_those_its_persistence_figure_draws():
    config = toy_config()
    rules = Rules(config)
    figure = config["figures"]["persistence_debias"]
    expected = {}
    for f in figure["finetuners"]:
        entry = config["finetuners"][f]
        steps = list(range(entry["save_every"], entry["steps"], entry["save_every"]))
        expected[("toy", f"ed-debias+ft-{f}")] = steps
    assert rules.checkpoints_read == expected  # not ft-full, not ed-erase_unsafe+ft-full, ...
    (job,) = rules.checkpointed_finetunes("full")
    assert job["rule"] == "finetune_full_edited_checkpoints_toy_debias" and job["generic"] == "finetune_full_edited"
    assert job["chain"] == ["results/models/toy/base/variant.json", "results/models/toy/ed-debias/variant.json"]
    assert job["final"] == "results/models/toy/ed-debias+ft-full/variant.json"
    assert job["checkpoints"] == [f"results/models/toy/ed-debias+ft-full@{s}/variant.json" for s in (20, 40, 60, 80, 100, 120)]
    # the generic rule's output is the final variant alone
    assert rules.finetune_output("full", "ed-{editor}") == "results/models/{model}/ed-{editor}+ft-full/variant.json"


def test_a_checkpoint_an_evaluation_reads_is_saved_and_without_readers_none_is():
    config = toy_config()
    config["figures"] = {}
    assert Rules(config).checkpoints_read == {}
    config["evaluations"].append({"model": "toy", "promptset": "toy_unsafe", "variants": ["ft-lora@60"],
                                  "scorers": ["oracle"]})
    rules = Rules(config)
    assert rules.checkpoints_read == {("toy", "ft-lora"): [60]}
    (job,) = rules.checkpointed_finetunes("lora")
    assert job["rule"] == "finetune_lora_checkpoints_toy" and job["generic"] == "finetune_lora"
    assert job["chain"] == ["results/models/toy/base/variant.json"]


def persistence_spec(**over):
    config = {"finetuners": {"full": {"method": "full", "dataset": "d", "steps": 15000, "save_every": 0},
                             "lora": {"method": "lora", "dataset": "d", "steps": 300, "save_every": 60}}}
    entry = dict(kind="persistence", model="m", editor="e", finetuners=["full", "lora"], promptset="p",
                 scorer="s", metric="unsafe", **over)
    return FIGURES.get("persistence").resolve(entry, config), config, entry


def test_persistence_every_and_until_choose_the_points_and_so_the_checkpoints():
    spec, _, _ = persistence_spec(every=100, until=400)
    assert spec["steps"] == {"full": [100, 200, 300, 400], "lora": [100, 200, 300]}
    # full's finished fine-tune (step 15,000) is past `until`: not drawn; lora's (300) is
    assert persistence_points(spec, "full") == [(0, "ed-e")] + [(s, f"ed-e+ft-full@{s}") for s in (100, 200, 300, 400)]
    assert persistence_points(spec, "lora") == [(0, "ed-e"), (100, "ed-e+ft-lora@100"), (200, "ed-e+ft-lora@200"),
                                                (300, "ed-e+ft-lora")]
    plain, _, _ = persistence_spec()  # no every / until: the finetuners' save_every, to the end
    assert plain["steps"]["lora"] == [60, 120, 180, 240, 300] and "last_step" not in plain
    assert persistence_points(plain, "lora")[-1] == (300, "ed-e+ft-lora")


def test_persistence_until_before_the_first_checkpoint_is_a_config_problem():
    _, config, entry = persistence_spec(until=50)
    problems = FIGURES.get("persistence").problems("f", entry, config)
    assert [p for p in problems if "unknown" not in p] == [
        "figures.f.finetuners[0]: finetuner 'full' has no step for a checkpoint (`every` or its `save_every`), so "
        "its curve has only its start and end; set figures.f.every or finetuners.full.save_every",
        "figures.f.until: 50 is before finetuner 'lora''s first checkpoint (step 60), so its curve would have no "
        "point after M_ed"]


def test_paper_checkpoints_only_for_figure5():
    config = validate_config(load_yaml(REPO / "config" / "paper.yaml"))
    assert Rules(config).checkpoints_read == {("sd14", "ed-erase_unsafe+ft-full"): list(range(100, 1001, 100))}
    tables = {name: entry["kind"] for name, entry in config["tables"].items()}
    assert tables["table2"] == "unsafe" and config["tables"]["table2"]["scorers"] == ["human"]
    assert tables["table5"] == "safety_rates" and tables["edit_drop_sd14"] == "edit_drop"
    assert config["tables"]["table3"]["finetuners"] == ["lora_flux"]
    assert config["tables"]["edit_drop_sd14"]["finetuners"] == FOUR
    kinds = sorted(entry["kind"] for entry in config["figures"].values())
    assert kinds == ["bars", "bars", "grid", "grid", "grid", "grid", "league", "persistence"]

