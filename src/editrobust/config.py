"""Config loading and validation: one clear error naming the key path, before any job starts.

The schema (`schemas/config.schema.yaml`, shipped in the package) describes every section; the
entries of the plugin sections (editors, finetuners, scorers, tables, figures) are checked
against the schema their plugin generates from its declared parameters (editrobust.plugins).
Validation fills every default, from the schema and from the plugins' declarations: the
validated config carries them, so a job's config slice shows exactly what it ran with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import jsonschema
import yaml

from editrobust import variant_names as vn
from editrobust.plugins import PluginError, Registry
from editrobust.schema import DEFAULT_SCHEMA, Validator, load_schema


class ConfigError(ValueError):
    """The config is wrong; the message names the key path."""


def load_yaml(path) -> dict:
    """Parse YAML safely (no Python object tags)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def plugin_registries() -> dict[str, Registry]:
    """{config section: the registry of its plugins}."""
    from editrobust.editors import EDITORS
    from editrobust.finetune import FINETUNERS
    from editrobust.report import FIGURES
    from editrobust.scoring import SCORERS
    from editrobust.tables import TABLES

    return {registry.section: registry for registry in (EDITORS, FINETUNERS, SCORERS, TABLES, FIGURES)}


def _key_path(path) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return "".join(parts) or "<top level>"


def _describe(err: jsonschema.ValidationError, prefix: tuple = ()) -> str:
    """Turn a jsonschema error into 'key.path: what is wrong' (the path under `prefix`)."""
    path = [*prefix, *err.absolute_path]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        if extra:
            hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
            return f"{_key_path(path + [extra[0]])}: unknown key{hint}"
    if err.validator == "pattern":
        return (f"{_key_path(path)}: {err.instance!r} is not a valid name "
                "(letters, digits and '_', starting with a letter or digit)")
    if err.validator == "enum":
        return f"{_key_path(path)}: {err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
    return f"{_key_path(path)}: {err.message}"


def _deepest(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    # allOf/if-then errors wrap the specific one; report the most specific.
    while err.context:
        err = max(err.context, key=lambda e: len(e.absolute_path))
    return err


def _problems(schema: Mapping, instance, prefix: tuple = ()) -> list[str]:
    """Every schema violation of `instance` (whose defaults this fills), as key-path lines."""
    return sorted({_describe(_deepest(e), prefix) for e in Validator(schema).iter_errors(instance)})


def _plugin_problems(config: dict, schema: Mapping) -> list[str]:
    """Each plugin entry against its plugin's generated schema (defaults filled in place)."""
    out = []
    for section, registry in plugin_registries().items():
        for name, entry in (config.get(section) or {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get(registry.key), str):
                continue  # the section's own schema has said what is wrong
            try:
                plugin = registry.get(entry[registry.key])
            except PluginError as e:
                out.append(f"{section}.{name}.{registry.key}: {e}")
                continue
            # the plugin's schema may refer to the config schema's shared definitions ($defs)
            found = _problems({**plugin.schema(registry.key), "$defs": schema.get("$defs", {})}, entry, (section, name))
            if not found:
                entry.update(plugin.with_defaults(entry))  # the defaults derived from other keys
            out += found
    return out


def validate_config(config: dict, schema_path=DEFAULT_SCHEMA) -> dict:
    """Check `config` against the schema, its plugins' declarations and the cross-references
    between sections.

    Raises ConfigError with every problem found, one per line, each starting with its key path.
    Returns the config with every default filled in (a new dict).
    """
    schema = load_schema(schema_path)
    config = json.loads(json.dumps(config))  # a deep copy that validation fills
    problems = _problems(schema, config)
    problems += _plugin_problems(config, schema)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
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
            elif plugin_registries()["scorers"].get(scorers[s]["kind"]).toy_only and \
                    models.get(ev["model"], {}).get("kind") != "toy":
                out.append(f"{where}.scorers[{j}]: scorer {s!r} reads the toy world's ground truth; "
                           f"model {ev['model']!r} is not a toy model")
    for name, ps in promptsets.items():
        out += _safety_filter_problems(f"promptsets.{name}", ps, config.get("finetuners") or {})
    for section, registry in plugin_registries().items():
        for name, entry in (config.get(section) or {}).items():
            out += registry.get(entry[registry.key]).problems(name, entry, config)
    out += _report_problems(config)
    return out


def _safety_filter_problems(where: str, promptset: dict, finetuners: dict) -> list[str]:
    """`safety_filter_off_for` names finetuners, and only makes sense with the filter on."""
    off_for = promptset.get("safety_filter_off_for") or []
    out = []
    if off_for and not promptset.get("safety_filter", False):
        out.append(f"{where}.safety_filter_off_for: the filter is off for every variant already "
                   "(set safety_filter: true, or remove the list)")
    for i, name in enumerate(off_for):
        if name not in finetuners:
            out.append(f"{where}.safety_filter_off_for[{i}]: unknown finetuner {name!r} "
                       f"(defined: {', '.join(finetuners) or 'none'})")
    return out


def _report_problems(config: dict) -> list[str]:
    # --- report stage: annotation kits (editrobust.report); figures are plugins ---
    from editrobust.report.spec import kit_problems

    return kit_problems(config)


def _scoring_reference_problems(config: dict) -> list[str]:
    """CLIP scorers and quality sets name CLIP models, promptsets and models that must exist."""
    out = []
    clip_models = config.get("clip_models", {})
    defined = ", ".join(clip_models) or "none"
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
    return out
