import copy

import pytest

from editrobust.config import ConfigError, canonical, load_yaml, validate_config

from conftest import REPO, SCHEMA


@pytest.fixture
def cfg():
    return load_yaml(REPO / "config" / "config.yaml")


def _err(cfg) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, SCHEMA)
    return str(e.value)


def test_shipped_configs_are_valid(cfg):
    assert validate_config(cfg, SCHEMA)["device"] == "cpu"  # the toy's jobs run side by side on CPUs
    del cfg["evaluations"][0]["variants"], cfg["device"]
    out = validate_config(cfg, SCHEMA)  # defaults filled in
    assert out["device"] == "auto" and out["evaluations"][0]["variants"] == ["base"]
    validate_config(load_yaml(REPO / "tests" / "configs" / "nano.yaml"), SCHEMA)


def test_typo_in_a_key_names_the_key_path(cfg):
    cfg["models"]["toy"]["toy"]["stepz"] = 10
    msg = _err(cfg)
    assert "models.toy.toy.stepz: unknown key" in msg


def test_typo_at_top_level(cfg):
    cfg["scorerz"] = {}
    assert "scorerz: unknown key" in _err(cfg)


def test_wrong_type_names_the_key(cfg):
    cfg["models"]["toy"]["sampling"]["steps"] = "twenty"
    assert "models.toy.sampling.steps: 'twenty' is not of type 'integer'" in _err(cfg)


def test_unknown_model_kind(cfg):
    cfg["models"]["toy"]["kind"] = "toyy"
    assert "models.toy.kind: 'toyy' is not one of" in _err(cfg)


def test_unknown_model_name_referenced(cfg):
    cfg["evaluations"][0]["model"] = "sd14"
    assert "evaluations[0].model: unknown model 'sd14' (defined: toy)" in _err(cfg)


def test_unknown_promptset_and_scorer_referenced(cfg):
    cfg["evaluations"][1]["promptset"] = "nope"
    cfg["evaluations"][1]["scorers"] = ["oracle", "clipp"]
    msg = _err(cfg)
    assert "evaluations[1].promptset: unknown promptset 'nope'" in msg
    assert "evaluations[1].scorers[1]: unknown scorer 'clipp'" in msg


def test_edited_variant_needs_its_editor(cfg):
    cfg["evaluations"][0]["variants"] = ["base", "ed-nope"]
    assert "evaluations[0].variants[1]: 'ed-nope' needs an editor 'nope'" in _err(cfg)


def test_unknown_editor_method_and_key(cfg):
    cfg["editors"]["erase_unsafe"]["erase_scal"] = 2
    cfg["editors"]["debias"]["method"] = "uce_debiass"
    msg = _err(cfg)
    assert "editors.erase_unsafe.erase_scal: unknown key" in msg
    assert "editors.debias.method: unknown method 'uce_debiass' (known: uce_erase, uce_debias, refact" in msg


def test_oracle_needs_a_toy_model(cfg):
    cfg["models"]["mine"] = {"kind": "path", "path": "/somewhere"}
    cfg["evaluations"][0]["model"] = "mine"
    msg = _err(cfg)
    assert "reads the toy world's ground truth; model 'mine' is not a toy model" in msg
    assert "editors.debias.classifier: the oracle classifier needs a toy model" in msg


def test_path_model_needs_a_path(cfg):
    cfg["models"]["mine"] = {"kind": "path"}
    assert "models.mine: 'path' is a required property" in _err(cfg)


def test_bad_names_are_rejected(cfg):
    cfg["models"]["my model"] = cfg["models"]["toy"]
    assert "models: 'my model' is not a valid name" in _err(cfg)


def test_canonical_slices_ignore_key_order():
    a = {"b": 1, "a": {"y": 2, "x": [1, 2]}}
    b = {"a": {"x": [1, 2], "y": 2}, "b": 1}
    assert canonical(a) == canonical(b)
    assert canonical(a) != canonical({**a, "b": 2})


def test_yaml_is_parsed_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("models: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(p)


def test_validation_does_not_mutate_input(cfg):
    before = copy.deepcopy(cfg)
    validate_config(cfg, SCHEMA)
    assert cfg == before
