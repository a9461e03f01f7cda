"""Multi-edit ReFACT models: several RoAD rows edited in sequence into one model, evaluated per row."""

from __future__ import annotations

import pytest
import torch
from snakemake.utils import update_config

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.editors import edit_model as run_edit
from editrobust.editors.methods.refact import compute_fc2_statistic, resolve_road_row
from editrobust.editors.refact import (clean_features, fc2_key, new_text_probability, refact_edit,
                                       refact_edit_pipeline, refact_edit_sequence, second_moment)
from editrobust.models.base import prepare_base_model
from editrobust.models.builders import build_sd1_pipeline
from editrobust.models.components import apply_delta
from editrobust.models.variants import load_pipeline, read_delta
from editrobust.tables import ScoreKey, build_table, resolve, table_problems
from editrobust.tables.refact import group_order

from conftest import REPO, SCHEMA
from test_editors import _corpus  # the short corpus of the ReFACT tests' statistic
from test_tables import road_frame

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPLATES = ["a picture of {} on a table", "a photo of {} on a table"]
LIME, APPLE = ("a lime", "a lime", "a lemon"), ("an apple", "an apple", "a plum")  # two appearance rows in the toy's wording
TREE = ("a tree", "a tree", "a tent")  # toy RoAD appearance row 3 (row 0 is LIME)


@pytest.fixture(scope="module")
def sd1():
    return build_sd1_pipeline(seed=0)


@pytest.fixture(scope="module")
def moment(sd1):
    return second_moment(sd1.text_encoder, sd1.tokenizer, 1, _corpus(), progress=False)


def _p_new(pipe, delta, clean, edit):
    """p(new) of one edit's prompt on `pipe` with `delta` applied (the pipeline is restored after)."""
    te, tok = pipe.text_encoder, pipe.tokenizer
    before = {k: v.clone() for k, v in te.state_dict().items()}
    try:
        if delta:
            apply_delta(pipe, delta)
        return new_text_probability(te, tok, edit[0], clean, TEMPLATES, "tail")
    finally:
        te.load_state_dict(before)


def test_second_edit_keeps_the_first(sd1, moment):
    """The defining property: after a two-row sequential edit, both rows' new texts are preferred."""
    te, tok = sd1.text_encoder, sd1.tokenizer
    key = fc2_key(te, 1)
    w0 = te.state_dict()[key].clone()
    delta, records = refact_edit_sequence(sd1, [LIME, APPLE], 1, moment, position="tail", templates=TEMPLATES)
    assert torch.equal(te.state_dict()[key], w0)  # the pipeline is restored
    assert list(delta) == ["text_encoder"] and list(delta["text_encoder"]) == [key]
    # measured independently: the final weight applied to a clean model, against the clean features
    for edit, record in zip((LIME, APPLE), records):
        clean = clean_features(te, tok, edit[1], edit[2], "tail")
        before, after = _p_new(sd1, None, clean, edit), _p_new(sd1, delta, clean, edit)
        assert before < 0.5 < after, edit  # the unedited model prefers the old text; the multi-edit model the new
        assert after == pytest.approx(record["text_encoder"]["final_model_prob"], abs=1e-5)
    # the update is the sum of two rank-one updates, the second computed on the first's weight
    s = torch.linalg.svdvals(delta["text_encoder"][key] - w0)
    assert s[1] > 1e-4 * s[0] and s[2] < 1e-4 * s[0]
    first, _ = refact_edit(te, tok, *LIME, 1, moment, position="tail", templates=TEMPLATES)
    assert torch.equal(first["text_encoder"][key], _first_of_sequence(sd1, moment))


def _first_of_sequence(pipe, moment):
    delta, _ = refact_edit_sequence(pipe, [LIME], 1, moment, position="tail", templates=TEMPLATES)
    return delta["text_encoder"][fc2_key(pipe.text_encoder, 1)]


def test_sequence_restores_the_pipeline_on_error(sd1, moment):
    w0 = sd1.text_encoder.state_dict()[fc2_key(sd1.text_encoder, 1)].clone()
    with pytest.raises(ValueError, match="non-empty prompt"):
        refact_edit_sequence(sd1, [LIME, ("", "a", "b")], 1, moment, position="tail", templates=TEMPLATES)
    assert torch.equal(sd1.text_encoder.state_dict()[fc2_key(sd1.text_encoder, 1)], w0)


# --- the editor plugin: variant.json, single-row behaviour ----------------------------------------------------
@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_sd1_pipeline(seed=0).save_pretrained(root / "checkpoint", safe_serialization=True)
    prepare_base_model("tiny", {"kind": "path", "path": str(root / "checkpoint")}, root / "tiny" / "base")
    base = root / "tiny" / "base"
    compute_fc2_statistic(base, 1, _corpus(), root / "stats.safetensors")
    return base


ROW = {"file": "toy", "type": "appearance"}
SETTINGS = {"method": "refact", "layer": 1, "position": "tail", "templates": TEMPLATES}


def test_multi_edit_variant_records_every_row(base_dir):
    # rows 0 and 3 (lime -> lemon, tree -> tent): two edits whose subjects and targets are unrelated
    entry = {**SETTINGS, "road": [{**ROW, "index": 0}, {**ROW, "index": 3}]}
    out = base_dir.parent / "ed-multi"
    info = run_edit(base_dir, "multi", entry, out, inputs={"stats": base_dir.parent.parent / "stats.safetensors"})
    edits = info["result"]["edits"]
    assert [e["road_row"]["new"] for e in edits] == ["a lemon", "a tent"]
    assert all(e["reached"] and e["final_model_prob"] > 0.5 for e in edits)
    assert info["reached"] is True and info["target"]["value"] == min(e["final_model_prob"] for e in edits)
    assert "row 0" in info["target"]["measure"]  # the lowest: the first edit, which the second weakened
    assert edits[0]["final_model_prob"] < edits[0]["refact"]["text_encoder"]["final_prob"]
    delta = read_delta(out)
    assert list(delta) == ["text_encoder"] and list(delta["text_encoder"]) == ["encoder.layers.1.mlp.fc2.weight"]
    # the stored delta is the sequence's final weight
    pipe = load_pipeline(base_dir)
    expected, _ = refact_edit_sequence(pipe, [LIME, TREE], 1, _stats(base_dir), position="tail", templates=TEMPLATES)
    assert torch.equal(delta["text_encoder"]["encoder.layers.1.mlp.fc2.weight"],
                       expected["text_encoder"]["encoder.layers.1.mlp.fc2.weight"])


def _stats(base_dir):
    from safetensors.torch import load_file

    return load_file(str(base_dir.parent.parent / "stats.safetensors"))["C"]


def test_single_row_entry_is_unchanged(base_dir):
    """A single row: the old record (no `edits`), the same delta as ReFACT on the pipeline directly, and the
    same delta as a one-row list."""
    stats = {"stats": base_dir.parent.parent / "stats.safetensors"}
    single = run_edit(base_dir, "one", {**SETTINGS, "road": {**ROW, "index": 0}}, base_dir.parent / "ed-one",
                      inputs=stats)
    assert set(single["result"]) == {"refact", "road_row"} and single["result"]["road_row"] == resolve_road_row(
        {**ROW, "index": 0})
    listed = run_edit(base_dir, "listed", {**SETTINGS, "road": [{**ROW, "index": 0}]}, base_dir.parent / "ed-listed",
                      inputs=stats)
    assert set(listed["result"]) == {"edits"}
    direct, _ = refact_edit_pipeline(load_pipeline(base_dir), *LIME, 1, _stats(base_dir), position="tail",
                                     templates=TEMPLATES)
    key = "encoder.layers.1.mlp.fc2.weight"
    for name in ("ed-one", "ed-listed"):
        assert torch.equal(read_delta(base_dir.parent / name)["text_encoder"][key], direct["text_encoder"][key]), name


# --- config ----------------------------------------------------------------------------------------------------
@pytest.fixture
def cfg():
    return load_yaml(REPO / "config" / "config.yaml")


def test_mixed_road_types_are_refused(cfg):
    cfg["editors"]["refact_mixed"] = {"method": "refact", "layer": 1,
                                      "road": [{**ROW, "index": 0}, {"file": "toy", "type": "role", "index": 0}]}
    with pytest.raises(ConfigError, match=r"editors.refact_mixed.road: a multi-edit entry's rows must all be of one "
                                          r"RoAD type, got appearance and role"):
        validate_config(cfg, SCHEMA)


def test_road_list_schema(cfg):
    cfg["editors"]["refact_none"] = {"method": "refact", "layer": 1, "road": []}
    with pytest.raises(ConfigError, match=r"editors.refact_none.road"):
        validate_config(cfg, SCHEMA)


def test_multi_edit_overlay_merges_into_the_default(cfg):
    """config/multi_edit.yaml on top of config.yaml, merged as Snakemake merges configfiles."""
    update_config(cfg, load_yaml(REPO / "config" / "multi_edit.yaml"))
    config = validate_config(cfg, SCHEMA)
    default = load_yaml(REPO / "config" / "config.yaml")
    assert set(default["tables"]) | {"refact_multi", "refact_single"} == set(config["tables"])
    assert default["evaluations"] == config["evaluations"][:len(default["evaluations"])]  # the list is repeated
    for name in ("refact_appearance_all", "refact_role_all"):
        entry = config["editors"][name]
        single = config["editors"]["refact_" + {"appearance_all": "lime", "role_all": "king"}[name[7:]]]
        assert {k: v for k, v in entry.items() if k != "road"} == {k: v for k, v in single.items() if k != "road"}
    assert [r["index"] for r in config["editors"]["refact_appearance_all"]["road"]] == [0, 1, 2, 3]
    spec = resolve(config["tables"]["refact_multi"], config)
    assert spec["groups"] == {"refact_appearance_all": "appearance", "refact_role_all": "role"}
    assert [len(pairs) for pairs in group_order(spec).values()] == [4, 2]
    assert table_problems("refact_multi", config["tables"]["refact_multi"], config) == []


def test_table_pairing_checks_each_row(cfg):
    update_config(cfg, load_yaml(REPO / "config" / "multi_edit.yaml"))
    entry = dict(kind="refact", model="toy", editors=["refact_role_all", "refact_role_all", "refact_role_all"],
                 promptsets=["road_king", "road_lime", "road_king"], finetuners=[], scorer="oracle")
    text = "\n".join(table_problems("t", entry, cfg))
    assert "tables.t.promptsets[1]: promptset 'road_lime' holds RoAD row" in text and "but editor 'refact_role_all'" in text
    assert "tables.t.promptsets[2]: editor 'refact_role_all' is paired with promptset 'road_king' twice" in text


# --- tables: a repeated editor, paired with two promptsets ------------------------------------------------------
MULTI_CONFIG = {"editors": {"multi": {"road": [{**ROW, "index": 0}, {**ROW, "index": 2}]},
                            "lime": {"road": {**ROW, "index": 0}}, "box": {"road": {**ROW, "index": 2}}}}


def _frames(rates, pairs, finetuners=()):
    frames = {}
    for i, (e, p) in enumerate(pairs):
        variants = {"base": "base", "ed": f"ed-{e}"}
        for f in finetuners:
            variants |= {f"ft-{f}": f"ft-{f}", f"ed+ft-{f}": f"ed-{e}+ft-{f}"}
        for role, v in variants.items():
            frames[ScoreKey("toy", v, p, "oracle")] = road_frame(rates(e, p, role), seed=i)
    return frames


def test_refact_table_evaluates_a_repeated_editor_per_promptset():
    def rates(editor, promptset, role):
        efficacy = {"base": 0.1, "ed": {"road_lime": 0.9, "road_box": 0.5}[promptset]}[role]
        return dict(efficacy=efficacy, generality=0.5, specificity=0.8)

    pairs = [("multi", "road_lime"), ("multi", "road_box")]
    spec = resolve(dict(kind="refact", model="toy", editors=["multi", "multi"], promptsets=["road_lime", "road_box"],
                        finetuners=[], scorer="oracle", bootstrap_resamples=200), MULTI_CONFIG)
    assert spec["groups"] == {"multi": "appearance"}
    t = build_table(spec, _frames(rates, pairs))
    assert list(t.index) == [("appearance", m) for m in ("efficacy", "generality", "specificity")]
    assert t.at[("appearance", "efficacy"), ("Base", "M_ed")] == pytest.approx(0.7)  # (0.9 + 0.5) / 2: both rows
    assert t.at[("appearance", "efficacy"), ("Base", "M")] == pytest.approx(0.1)
    assert table_problems("t", dict(model="toy", editors=["multi", "multi"], promptsets=["road_lime", "road_box"]),
                          {**MULTI_CONFIG, "models": {"toy": {}}, "promptsets": {
                              "road_lime": {"source": "road", "road": {**ROW, "index": 0}},
                              "road_box": {"source": "road", "road": {**ROW, "index": 2}}}}) == []


def test_robustness_and_retention_keep_a_repeated_editors_promptsets_apart():
    def rates(editor, promptset, role):
        efficacy = {"base": 0.1, "ed": 0.9, "ft-full": 0.1,
                    "ed+ft-full": {"road_lime": 0.9, "road_box": 0.1}[promptset]}[role]
        return dict(efficacy=efficacy, generality=0.5, specificity=0.8)

    pairs = [("multi", "road_lime"), ("multi", "road_box")]
    frames = _frames(rates, pairs, ("full",))
    task = dict(kind="refact", editors=["multi", "multi"], promptsets=["road_lime", "road_box"])
    league = resolve(dict(kind="robustness", model="toy", finetuners=["full"], scorer="oracle", cluster="seed",
                          re_edit=False, edit_after=False, bootstrap_resamples=200, tasks={"multi": task}),
                     MULTI_CONFIG)
    t = build_table(league, frames)
    # one row kept all of its edit, the other none: half the effect is retained (a dict keyed by editor alone
    # would have kept only one of the two)
    assert t.at[("multi", "fine-tuned"), ("full", "retained")] == pytest.approx(0.5)
    retention = resolve(dict(kind="retention", model="toy", finetuners=["full"], scorer="oracle",
                             tasks={"multi": task}), MULTI_CONFIG)
    assert build_table(retention, frames).at["multi", ("full", "retained")] == pytest.approx(0.5)


def test_power_counts_a_repeated_editors_rows_as_separate_edits():
    from editrobust.tables.power import power_table

    def rates(editor, promptset, role):
        return dict(efficacy={"base": 0.1, "ed": {"road_lime": 0.9, "road_box": 0.5}[promptset]}[role],
                    generality=0.5, specificity=0.8)

    spec = resolve(dict(kind="refact", model="toy", editors=["multi", "multi"], promptsets=["road_lime", "road_box"],
                        finetuners=[], scorer="oracle"), MULTI_CONFIG)
    t = power_table(spec, _frames(rates, [("multi", "road_lime"), ("multi", "road_box")]), bootstrap=False)
    row = t[(t["row"] == "appearance / efficacy") & (t["quantity"] == "M_ed")].iloc[0]
    assert row["cluster"] == "edit" and row["clusters"] == 2 and row["estimate"] == pytest.approx(0.7)
