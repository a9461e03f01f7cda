"""Edits are checked before anything builds on them: an edit that changes nothing while its
target was not met is refused; one that runs but misses its target is stored and marked, and
the mark shows in the tables that use it."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from editrobust.editors import EditFailed, edit_model
from editrobust.editors import refact as refact_algorithm
from editrobust.editors.methods.refact import compute_fc2_statistic
from editrobust.models.base import prepare_base_model
from editrobust.tables import ScoreKey, make_table, resolve

pytestmark = pytest.mark.usefixtures("one_thread")

ROW = {"file": "toy", "type": "appearance", "index": 0}  # "a lime" -> "a lemon"


@pytest.fixture(scope="module")
def tiny(tiny_sd1, tmp_path_factory):
    """A local 2-layer SD1.x-shaped model (kind: path) and its layer-0/1 fc2 statistics."""
    root = tmp_path_factory.mktemp("checks")
    tiny_sd1.save_pretrained(root / "checkpoint", safe_serialization=True)
    base = root / "results/models/tiny/base"
    prepare_base_model("tiny", {"kind": "path", "path": str(root / "checkpoint")}, base)
    texts = ["a lime", "a photo of a ceo", "blood splatter", "a lemon on a table"] * 5
    stats = {layer: root / f"C{layer}.safetensors" for layer in (0, 1)}
    for layer, path in stats.items():
        compute_fc2_statistic(base, layer, texts, path)
    return root, base, stats


def test_refact_at_a_layer_that_cannot_reach_the_feature_fails_before_optimising(tiny, monkeypatch):
    root, base, stats = tiny

    def never(*args, **kwargs):
        raise AssertionError("the value optimisation ran")

    monkeypatch.setattr(refact_algorithm, "optimize_value", never)
    out = base.parent / "ed-late"
    entry = {"method": "refact", "road": ROW, "layer": 1, "position": "subject_last"}
    with pytest.raises(EditFailed, match=r"editors.late \(ReFACT, layer 1, position subject_last\): layer 1 is the "
                                         r"text encoder's last \(of 2\).*Use a layer below 1, or position eos or tail"):
        edit_model(base, "late", entry, out, inputs={"stats": stats[1]})
    assert not out.exists()


def test_an_edit_below_its_target_is_stored_marked_and_shown_in_a_table(tiny, caplog):
    root, base, stats = tiny
    out = base.parent / "ed-short"
    # one Adam step cannot take a random encoder's p(new) from about 0.5 to 0.9
    entry = {"method": "refact", "road": ROW, "layer": 0, "position": "subject_last", "v_max_grad_steps": 2,
             "min_final_prob": 0.9}
    with caplog.at_level(logging.WARNING):
        info = edit_model(base, "short", entry, out, inputs={"stats": stats[0]})
    assert info["reached"] is False and info["target"]["measure"] == "ReFACT's final p(new)"
    assert info["target"]["value"] < 0.9 == info["target"]["threshold"] and info["relative_change"] > 1e-6
    assert json.loads((out / "variant.json").read_text())["reached"] is False
    assert "editors.short (method refact) missed its target: ReFACT's final p(new)" in caplog.text
    # the same edit with on_missed_target: error is refused, and nothing is written
    with pytest.raises(EditFailed, match=r"missed its target.*\(on_missed_target: error\)"):
        edit_model(base, "strict", {**entry, "on_missed_target": "error"}, base.parent / "ed-strict",
                   inputs={"stats": stats[0]})
    assert not (base.parent / "ed-strict").exists()

    # a refact table over this edit: its M_ed cells carry the mark and the footnote names the edit
    frames = {}
    for variant in ("base", "ed-short"):
        key = ScoreKey("tiny", variant, "road", "oracle")
        rows = [dict(prompt_id=f"{m}-0", seed=s, file=f"{m}{s}.png", metric=m, success=(variant != "base") * (s % 2))
                for m in ("efficacy", "generality", "specificity") for s in range(4)]
        path = root / key.path
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
        frames[key] = path
    spec = resolve({"kind": "refact", "model": "tiny", "editors": ["short"], "promptsets": ["road"], "finetuners": [],
                    "scorer": "oracle", "bootstrap_resamples": 20}, {"editors": {"short": entry}})
    given = [*frames.values(), out / "variant.json"]
    tables = root / "results/tables"
    table = make_table(spec, given, tables / "t.csv", tables / "t.md", tables / "t.tex", name="t")
    assert (table[("Base", "M_ed mark")] == "†").all() and ("Base", "M mark") not in table.columns
    md = (tables / "t.md").read_text()
    assert "| appearance | efficacy | 0.00 [0.00, 0.00] | 0.50 [" in md and "] † |" in md
    assert "† ed-short missed its target: ReFACT's final p(new)" in md


def test_an_update_that_changes_nothing_is_refused(tiny):
    _, base, _ = tiny
    out = base.parent / "ed-frozen"
    # λ dwarfs the edit: the closed form returns the old weights (to float rounding)
    entry = {"method": "uce_erase", "edit_concepts": ["a lime"], "guide_concepts": ["a lemon"], "lamb": 1e12}
    with pytest.raises(EditFailed, match=r"editors.frozen \(method uce_erase\): the edit changed nothing "
                                         r"\(largest relative change .* in unet\..*attn2.to_k.weight.*\) although its "
                                         r"target was not met.*Likely cause: the closed form kept"):
        edit_model(base, "frozen", entry, out)
    assert not out.exists()


def test_a_remedy_that_changes_nothing_is_stored_as_a_missed_target(tiny, caplog):
    """Applied to a variant other than the base (a re-edit of a fine-tuned model), an edit that
    cannot move it is a result to report, not a broken edit; on_missed_target: error still refuses it."""
    _, base, _ = tiny
    parent = base.parent / "ed-noop"
    edit_model(base, "noop", {"method": "uce_erase", "edit_concepts": ["a lime"], "guide_concepts": ["a lime"]}, parent)
    entry = {"method": "uce_erase", "edit_concepts": ["a lime"], "guide_concepts": ["a lemon"], "lamb": 1e12}
    out = base.parent / "ed-noop+ed-frozen"
    with caplog.at_level(logging.WARNING):
        info = edit_model(parent, "frozen", entry, out)
    assert info["reached"] is False and info["relative_change"] <= 1e-6 and info["parent"] == "ed-noop"
    assert "the edit of a fine-tuned model changed nothing" in caplog.text
    with pytest.raises(EditFailed, match="the edit changed nothing"):
        edit_model(parent, "frozen", {**entry, "on_missed_target": "error"}, base.parent / "ed-noop+ed-strict")
    assert not (base.parent / "ed-noop+ed-strict").exists()


def test_an_edit_whose_target_is_already_met_is_recorded_not_refused(tiny):
    _, base, _ = tiny
    out = base.parent / "ed-same"
    # erasing a concept towards itself: its keys already give the guide's values
    info = edit_model(base, "same", {"method": "uce_erase", "edit_concepts": ["a lime"], "guide_concepts": ["a lime"]},
                      out)
    assert info["reached"] is True and info["target"]["already_met"] is True
    # float32 rounding of the closed form's solve only (1.0e-6 was seen on 2 threads under load)
    assert info["relative_change"] < 1e-5
