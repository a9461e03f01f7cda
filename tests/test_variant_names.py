"""The variant grammar: names parse into steps and back; the workflow's shapes and its errors."""

from __future__ import annotations

import pytest

from editrobust import variant_names as vn


@pytest.mark.parametrize("name", ["base", "ed-e", "ft-f", "ed-e+ft-f", "ed-e+ft-f@20", "ft-f@5", "ft-f+ed-e",
                                  "ed-e+ft-f+ed-e", "ed-a+ed-b", "ed-a_1+ft-lora_r8"])
def test_names_round_trip(name):
    assert str(vn.parse(name)) == name


def test_steps_parent_and_chain():
    v = vn.parse("ed-e+ft-f@20")
    assert v.editors == ["e"] and v.finetuners == ["f"] and v.checkpoint == 20 and v.shape == ("ed", "ft")
    assert [str(c) for c in v.chain] == ["base", "ed-e", "ed-e+ft-f@20"]
    assert str(v.parent) == "ed-e"
    assert [str(c) for c in vn.parse("ed-e+ft-f+ed-e").chain] == ["base", "ed-e", "ed-e+ft-f", "ed-e+ft-f+ed-e"]
    assert vn.then("base", vn.ft("f")) == "ft-f" and vn.ed_ft("e", "f") == "ed-e+ft-f"


@pytest.mark.parametrize("name", ["", "Base", "ed-", "ed-e+", "ed-e@3", "xx-e", "ed-e+ft-f@", "ed-e++ft-f", "ed-_e"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="variant name|not a fine-tune"):
        vn.parse(name)


def test_problems_name_unknown_entries_unsaved_checkpoints_and_unbuilt_shapes():
    editors, finetuners = {"e": {}}, {"f": {"steps": 10, "save_every": 5}}
    assert vn.problems("v", "ed-e+ft-f@5", editors, finetuners) == []
    assert vn.problems("v", "ed-x", editors, finetuners) == ["v: 'ed-x' needs an editor 'x' (defined: e)"]
    assert "saves no checkpoint at step 3 (it saves at: [5])" in vn.problems("v", "ft-f@3", editors, finetuners)[0]
    # re-editing and editing after a fine-tune are built; several edits in one model are not yet
    assert vn.problems("v", "ft-f+ed-e", editors, finetuners) == []
    assert vn.problems("v", "ed-e+ft-f+ed-e", editors, finetuners) == []
    assert vn.re_edit("e", "f") == "ed-e+ft-f+ed-e" and vn.ft_ed("f", "e") == "ft-f+ed-e"
    assert "not this composition yet" in vn.problems("v", "ed-e+ed-e", editors, finetuners)[0]
    assert vn.checkpoint_steps(5, 10) == [5] and vn.checkpoint_steps(0, 10) == [] and vn.checkpoint_steps(3, 9) == [3, 6]
