"""UCE debias's `vocabulary` file: an edit configured by a file is the edit with the same lists
inline; bad files and lists given twice are refused with the file and key named; the paper grid's
file is the study's vocabulary (40 WinoBias occupations, the six evaluated among them)."""

from __future__ import annotations

import csv

import pytest
import yaml

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.editors import EditJob
from editrobust.editors.methods import uce_debias as debias_module
from editrobust.editors.methods.uce_debias import UceDebias, load_vocabulary, with_vocabulary
from editrobust.models.builders import build_sd1_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

LISTS = {"concepts": ["doctor", "nurse"], "edit_templates": ["{}", "a photo of {}"],
         "preserve_concepts": ["a cat", "a tree"]}


def _write(tmp_path, data, name="vocab.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _run(pipe, entry, inputs, monkeypatch):
    """UceDebias.run with a scripted world: each concept's first measurement is 80 % male, every
    later one balanced; returns (delta, info, the prompts the loop sampled)."""
    sampled, calls = [], {}

    def generator(entry, sampling):
        def generate(pipe, concept):
            calls[concept] = calls.get(concept, 0) + 1
            templates = entry["edit_templates"]
            sampled.append([templates[i % len(templates)].format(concept) for i in range(2)])
            return ["male"] * 8 + ["female"] * 2 if calls[concept] == 1 else ["male"] * 5 + ["female"] * 5
        return generate

    monkeypatch.setattr(debias_module, "debias_generator", generator)
    monkeypatch.setattr(debias_module, "toy_oracle_classifier", lambda images: images)
    job = EditJob("debias", UceDebias.with_defaults(entry), inputs=inputs)
    delta, info = UceDebias().run(pipe, job)
    return delta, info, sampled


def test_vocabulary_edit_equals_the_inline_edit(tmp_path, monkeypatch):
    pipe = build_sd1_pipeline(seed=0)
    common = {"method": "uce_debias", "attribute_texts": ["a man", "a woman"], "max_iterations": 2, "lamb": 1e-3}
    inline, inline_info, inline_sampled = _run(pipe, {**common, **LISTS}, {}, monkeypatch)
    path = _write(tmp_path, LISTS)
    by_file, info, sampled = _run(pipe, {**common, "vocabulary": str(path)}, {"vocabulary": path}, monkeypatch)

    assert inline and set(by_file) == set(inline)
    for comp in inline:
        assert set(by_file[comp]) == set(inline[comp])
        assert all(by_file[comp][k].equal(inline[comp][k]) for k in inline[comp])
    assert sampled == inline_sampled and ["doctor", "a photo of doctor"] in sampled  # the file's templates
    assert info["vocabulary"] == {"file": str(path), **LISTS}  # what was read is recorded
    assert "vocabulary" not in inline_info
    # and the file's lists do matter: without the preserve set the edit differs
    other, _, _ = _run(pipe, {**common, **LISTS, "preserve_concepts": []}, {}, monkeypatch)
    comp, key = next((c, k) for c in inline for k in inline[c])
    assert not other[comp][key].equal(inline[comp][key])


@pytest.mark.parametrize("content, message", [
    ("- a list\n", "the top level must be a mapping"),
    ({"concepts": ["a"], "templates": ["{}"]}, r"unknown key\(s\) \['templates'\]"),
    ({"concepts": []}, "concepts must be a non-empty list"),
    ({"concepts": ["a", " "]}, "concepts must be a non-empty list of non-empty texts"),
    ({"concepts": ["a", "b", "a"]}, r"concepts repeats \['a'\]"),
    ({"concepts": ["a"], "edit_templates": ["photo of"]}, r"edit_templates \['photo of'\] must each hold exactly one"),
    ({"concepts": ["CEO", "nurse"], "preserve_concepts": ["ceo", "cat"]}, r"\['CEO'\] are both concepts and preserve"),
])
def test_load_vocabulary_names_the_file_and_the_problem(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as err:
        load_vocabulary(path, "editors.debias.vocabulary")
    assert str(path) in str(err.value) and "editors.debias.vocabulary" in str(err.value)
    with pytest.raises(ValueError, match="cannot read the vocabulary"):
        load_vocabulary(tmp_path / "missing.yaml")


def test_a_list_comes_from_one_place(tmp_path):
    vocabulary = {"concepts": ["doctor"], "edit_templates": ["{}", "photo of {}"]}
    entry = UceDebias.with_defaults({"method": "uce_debias", "vocabulary": "v.yaml"})
    merged = with_vocabulary(entry, vocabulary)
    assert merged["concepts"] == ["doctor"] and merged["edit_templates"] == ["{}", "photo of {}"]
    assert merged["preserve_concepts"] == []  # the default, which the file did not give
    with pytest.raises(ValueError, match=r"v.yaml gives \['concepts', 'edit_templates'\], which the entry sets too"):
        with_vocabulary({**entry, "concepts": ["nurse"], "edit_templates": ["a {}"]}, vocabulary)


def _toy_config_with(debias_entry):
    config = load_yaml("config/config.yaml")
    config["editors"]["debias"] = debias_entry
    return config


def test_config_validation_reads_the_vocabulary(tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)
    toy = load_yaml("config/config.yaml")["editors"]["debias"]
    bare = {k: v for k, v in toy.items() if k not in ("concepts", "edit_templates", "preserve_concepts")}
    path = _write(tmp_path, {k: toy[k] for k in ("concepts", "edit_templates", "preserve_concepts")})
    config = validate_config(_toy_config_with({**bare, "vocabulary": str(path)}))
    assert UceDebias.inputs("toy", config["editors"]["debias"], config) == {"vocabulary": str(path)}
    assert UceDebias.inputs("toy", validate_config(load_yaml("config/config.yaml"))["editors"]["debias"], {}) == {}

    with pytest.raises(ConfigError, match=r"editors\.debias\.concepts: required \(in the entry or a `vocabulary`"):
        validate_config(_toy_config_with(bare))
    with pytest.raises(ConfigError, match=r"editors\.debias\.vocabulary: .* gives \['concepts', 'edit_templates', "
                                          r"'preserve_concepts'\], which the entry sets too"):
        validate_config(_toy_config_with({**toy, "vocabulary": str(path)}))
    broken = _write(tmp_path, {"concepts": ["a", "a"]}, "broken.yaml")
    with pytest.raises(ConfigError, match=r"editors\.debias\.vocabulary: .*broken\.yaml: concepts repeats"):
        validate_config(_toy_config_with({**bare, "vocabulary": str(broken)}))
    # a file that is not there yet is the workflow's to report (a missing input of the edit)
    validate_config(_toy_config_with({**bare, "vocabulary": str(tmp_path / "later.yaml")}))


def test_paper_debias_vocabulary_is_the_study_s(repo, monkeypatch):
    monkeypatch.chdir(repo)
    config = validate_config(load_yaml("config/paper.yaml"))
    entry = config["editors"]["debias"]
    vocabulary = load_vocabulary(entry["vocabulary"])
    merged = with_vocabulary(entry, vocabulary)
    assert len(merged["concepts"]) == 40  # WinoBias: 20 female- and 20 male-dominated occupations
    assert merged["edit_templates"] == ["image of {}", "photo of {}", "portrait of {}", "picture of {}", "{}"]
    assert len(merged["preserve_concepts"]) == 188 and merged["preserve_scale"] == 0.1
    professions = config["promptsets"]["professions"]
    with open(professions["path"], newline="") as f:
        evaluated = {row["group"] for row in csv.DictReader(f)}
    assert evaluated == {"CEO", "teacher", "housekeeper", "farmer", "lawyer", "hairdresser"}
    assert evaluated <= set(merged["concepts"])  # the six evaluated professions are edited
