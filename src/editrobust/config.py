"""Config loading and validation: one clear error naming the key path, before any job starts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

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
    problems = _cross_reference_problems(config)
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
            if v.startswith("ed-") and v[3:] not in editors:
                out.append(f"{where}.variants[{j}]: {v!r} needs an editor {v[3:]!r} "
                           f"(defined: {', '.join(editors) or 'none'})")
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
    return out


def canonical(value) -> str:
    """A key-sorted JSON string: the form config slices take as rule params, so that reordering
    YAML keys does not re-run anything and changing one entry re-runs only its subgraph."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
