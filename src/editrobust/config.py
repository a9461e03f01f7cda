"""Config loading and validation: one clear error naming the key path, before any job starts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from editrobust import variant_names as vn

DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The config is wrong; the message names the key path."""


def load_yaml(path: str | Path) -> dict:
    """Parse YAML safely (no Python object tags)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _key_path(path) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return "".join(parts) or "<top level>"


def _describe(err: jsonschema.ValidationError) -> str:
    """Turn a jsonschema error into 'key.path: what is wrong'."""
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        if extra:
            where = _key_path(list(err.absolute_path) + [extra[0]])
            hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
            return f"{where}: unknown key{hint}"
    if err.validator == "pattern":
        return (f"{_key_path(err.absolute_path)}: {err.instance!r} is not a valid name "
                "(letters, digits and '_', starting with a letter or digit)")
    if err.validator == "enum":
        return f"{_key_path(err.absolute_path)}: {err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
    if err.validator == "required":
        return f"{_key_path(err.absolute_path)}: {err.message}"
    return f"{_key_path(err.absolute_path)}: {err.message}"


def _deepest(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    # allOf/if-then errors wrap the specific one; report the most specific.
    while err.context:
        err = max(err.context, key=lambda e: len(e.absolute_path))
    return err


def validate_config(config: dict, schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """Check `config` against the JSON schema and the cross-references between sections.

    Raises ConfigError with every problem found, one per line, each starting with its key path.
    Returns the config with defaults filled in (a new dict).
    """
    schema = load_yaml(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    problems = sorted({_describe(_deepest(e)) for e in validator.iter_errors(config)})
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    config = json.loads(json.dumps(config))  # a deep copy we may fill
    config.setdefault("device", "auto")
    for ev in config["evaluations"]:
        ev.setdefault("variants", ["base"])
    for quality_set in config.get("quality_sets", {}).values():
        quality_set.setdefault("variants", ["base"])
    problems = _cross_reference_problems(config) + _scoring_reference_problems(config) + download_problems(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return config


def _cross_reference_problems(config: dict) -> list[str]:
    out = []
    models, promptsets, scorers = config["models"], config["promptsets"], config["scorers"]
    editors = config.get("editors", {})
    for i, ev in enumerate(config["evaluations"]):
        where = f"evaluations[{i}]"
        if ev["model"] not in models:
            out.append(f"{where}.model: unknown model {ev['model']!r} (defined: {', '.join(models)})")
        if ev["promptset"] not in promptsets:
            out.append(f"{where}.promptset: unknown promptset {ev['promptset']!r} (defined: {', '.join(promptsets)})")
        for j, v in enumerate(ev.get("variants", [])):
            out += vn.problems(f"{where}.variants[{j}]", v, editors, config.get("finetuners", {}))
        for j, s in enumerate(ev["scorers"]):
            if s not in scorers:
                out.append(f"{where}.scorers[{j}]: unknown scorer {s!r} (defined: {', '.join(scorers)})")
            elif scorers[s]["kind"] == "oracle" and models.get(ev["model"], {}).get("kind") != "toy":
                out.append(f"{where}.scorers[{j}]: scorer {s!r} is the toy-world oracle; "
                           f"model {ev['model']!r} is not a toy model")
    for name, ed in editors.items():
        if ed["method"] == "uce_debias" and ed.get("classifier", "oracle") == "oracle":
            users = {ev["model"] for ev in config["evaluations"] if f"ed-{name}" in ev.get("variants", [])}
            for m in sorted(users):
                if models.get(m, {}).get("kind") != "toy":
                    out.append(f"editors.{name}.classifier: the oracle classifier needs a toy model; "
                               f"model {m!r} is not one")
    out += finetune_problems(config)
    out += _table_problems(config)
    out += _report_problems(config)
    return out


def _table_problems(config: dict) -> list[str]:
    # --- tables stage: names a `tables.<name>` entry refers to (editrobust.tables.spec) ---
    from editrobust.tables.spec import table_problems

    return table_problems(config)


def _report_problems(config: dict) -> list[str]:
    # --- report stage: figures and annotation kits (editrobust.report) ---
    from editrobust.report.spec import figure_problems, kit_problems

    return figure_problems(config) + kit_problems(config)


def _scoring_reference_problems(config: dict) -> list[str]:
    """CLIP scorers and quality sets name CLIP models, promptsets and models that must exist."""
    out = []
    clip_models = config.get("clip_models", {})
    defined = ", ".join(clip_models) or "none"
    for name, sc in config["scorers"].items():
        if "clip_model" in sc and sc["clip_model"] not in clip_models:
            out.append(f"scorers.{name}.clip_model: unknown CLIP model {sc['clip_model']!r} (defined in clip_models: {defined})")
    for name, q in config.get("quality_sets", {}).items():
        where = f"quality_sets.{name}"
        if q["promptset"] not in config["promptsets"]:
            out.append(f"{where}.promptset: unknown promptset {q['promptset']!r} (defined: {', '.join(config['promptsets'])})")
        for j, m in enumerate(q["models"]):
            if m not in config["models"]:
                out.append(f"{where}.models[{j}]: unknown model {m!r} (defined: {', '.join(config['models'])})")
        for j, v in enumerate(q["variants"]):
            out += vn.problems(f"{where}.variants[{j}]", v, config.get("editors", {}), config.get("finetuners", {}))
        if q.get("fid") is not None and "reference" not in q:
            out.append(f"{where}.reference: fid needs a reference image set")
        if q.get("clip_score") is not None and q["clip_score"]["clip_model"] not in clip_models:
            out.append(f"{where}.clip_score.clip_model: unknown CLIP model {q['clip_score']['clip_model']!r} "
                       f"(defined in clip_models: {defined})")
        if q.get("fid") is None and q.get("clip_score") is None:
            out.append(f"{where}: give fid, clip_score or both")
    return out


def canonical(value) -> str:
    """A key-sorted JSON string: the form config slices take as rule params, so that reordering
    YAML keys does not re-run anything and changing one entry re-runs only its subgraph."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def finetune_problems(config: dict) -> list[str]:
    out = []
    datasets = config.get("datasets", {})
    for name, ft in config.get("finetuners", {}).items():
        ds = datasets.get(ft["dataset"])
        if ds is None:
            out.append(f"finetuners.{name}.dataset: unknown dataset {ft['dataset']!r} "
                       f"(defined: {', '.join(datasets) or 'none'})")
        elif ft["method"] == "dreambooth" and not (ds["source"] == "dreambooth" or ds.get("set") == "subject"
                                                   or ft.get("class_name")):
            out.append(f"finetuners.{name}.dataset: DreamBooth needs a subject dataset (source dreambooth or toy "
                       f"set subject) or a class_name; {ft['dataset']!r} is neither")
    return out


# --- hub models and downloads: names a promptset, editor or download refers to ----------------------
PROMPTSET_DOWNLOAD_KINDS = {"i2p": "i2p", "coco": "coco_captions"}


def download_problems(config: dict) -> list[str]:
    out = []
    downloads = config.get("downloads", {})
    defined = ", ".join(downloads) or "none"

    def check(where: str, name: str, kind: str) -> None:
        if name not in downloads:
            out.append(f"{where}: unknown download {name!r} (defined in downloads: {defined})")
        elif downloads[name]["kind"] != kind:
            out.append(f"{where}: download {name!r} is of kind {downloads[name]['kind']!r}, {kind!r} is needed")

    for name, ps in config["promptsets"].items():
        if ps["source"] in PROMPTSET_DOWNLOAD_KINDS:
            check(f"promptsets.{name}.download", ps["download"], PROMPTSET_DOWNLOAD_KINDS[ps["source"]])
    for name, dl in downloads.items():
        if dl["kind"] == "coco_images":
            ps = config["promptsets"].get(dl["promptset"])
            if ps is None or ps["source"] != "coco":
                out.append(f"downloads.{name}.promptset: {dl['promptset']!r} is not a promptset of source coco")
    clip_models = config.get("clip_models", {})
    for name, ed in config.get("editors", {}).items():
        if ed["method"] == "refact" and ed.get("statistics", "toy_captions") != "toy_captions":
            check(f"editors.{name}.statistics", ed["statistics"], "wikitext103")
        if ed["method"] == "uce_debias" and ed.get("classifier") == "clip":
            if ed.get("clip_model") not in clip_models:
                out.append(f"editors.{name}.clip_model: the CLIP classifier needs a name from clip_models "
                           f"(got {ed.get('clip_model')!r}; defined: {', '.join(clip_models) or 'none'})")
            texts = ed.get("classifier_texts")
            if texts and sorted(texts) != sorted(ed.get("attributes", ["male", "female"])):
                out.append(f"editors.{name}.classifier_texts: keys {sorted(texts)} must be the attributes "
                           f"{sorted(ed.get('attributes', ['male', 'female']))}")
    return out
