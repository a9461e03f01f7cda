"""The config schema (shipped in the package) and the one way its defaults are filled in.

Validation (config.py) and the library entry points that take a config entry directly
(`with_defaults`) fill defaults with the same validator, so a default has one home: the schema
for the non-plugin sections, a plugin's declaration for the plugin sections (editrobust.plugins).
Nothing here imports the rest of the package.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

DEFAULT_SCHEMA = resources.files("editrobust") / "schemas" / "config.schema.yaml"


def _filling_defaults(validator_class):
    """A validator class that also sets each missing property that has a `default` (the
    jsonschema FAQ's recipe): validating an instance fills its defaults in place."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if validator.is_type(instance, "object"):
            for name, sub in props.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


Validator = _filling_defaults(jsonschema.Draft202012Validator)


def load_schema(schema_path=DEFAULT_SCHEMA) -> dict:
    """The config schema (a path, or the packaged file's Traversable)."""
    source = Path(schema_path) if isinstance(schema_path, str) else schema_path
    return yaml.safe_load(source.read_text())


@functools.lru_cache(maxsize=1)
def _packaged_schema() -> dict:
    return load_schema(DEFAULT_SCHEMA)


def with_defaults(definition: str, entry: Mapping) -> dict:
    """An entry of the schema's `$defs/<definition>` (e.g. "promptset") with the schema's defaults
    filled in, as validation fills them: library entry points call this, so that an entry given
    directly (not from a validated config) runs with the same defaults."""
    schema = _packaged_schema()
    out = json.loads(json.dumps(dict(entry)))
    for _ in Validator({"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}).iter_errors(out):
        pass  # validation proper happens in validate_config; here only the defaults matter
    return out
