"""config/README.md's parameter tables, generated from the plugins' declarations.

Each plugin section of the README (editors, finetuners, scorers, tables, figures) holds a block

    <!-- params: editors -->
    ...tables generated here...
    <!-- /params: editors -->

so the README, the schema validation applies and the code's defaults come from one declaration
and cannot disagree (tests/test_plugins.py checks the README is up to date). After changing a
plugin's parameters:

    python -m editrobust.docs config/README.md          # rewrite the blocks
    python -m editrobust.docs --check config/README.md  # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from editrobust.plugins import MISSING, Derived, Param




def type_text(schema: Mapping) -> str:
    """A short reading of a parameter's JSON schema."""
    if "$ref" in schema:
        ref = schema["$ref"].rsplit("/", 1)[-1]
        return {"name": "name", "name_list": "list of names", "concept_list": "list of texts"}.get(ref, ref)
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"])
    if "oneOf" in schema:
        return " or ".join(type_text(s) for s in schema["oneOf"])
    kind = schema.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    names = {"integer": "integer", "number": "number", "boolean": "true / false", "string": "text",
             "object": "mapping", "array": "list", "null": "null"}
    return " or ".join(names.get(k, k) for k in kinds if k)


def default_text(param: Param) -> str:
    if param.required:
        return "(required)"
    if param.default is MISSING:
        return "–"
    if isinstance(param.default, Derived):
        return param.default.doc
    return f"`{json.dumps(param.default, ensure_ascii=False)}`"


def params_table(params: Mapping[str, Param]) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, p in params.items():
        doc = p.doc.replace("|", "\\|")
        lines.append(f"| `{key}` | {type_text(p.schema)} | {default_text(p)} | {doc} |")
    return lines


def section_markdown(name: str) -> str:
    """The generated block of one README section: the keys every plugin takes, then each built-in
    plugin's own keys (those it adds, or whose default it changes)."""
    from editrobust.config import plugin_registries

    registry = plugin_registries()[name]
    common = registry.base.params  # what every plugin of the section takes
    lines = []
    if common:
        lines += [f"Every entry of `{name}` takes:", "", *params_table(common), ""]
    for short, plugin in registry.all().items():
        own = {k: p for k, p in plugin.all_params().items() if k not in common or common[k] != p}
        lines.append(f"**`{registry.key}: {short}`**: {plugin.summary()}")
        lines += ["", *params_table(own), ""] if own else [""]
    return "\n".join(lines).rstrip() + "\n"


BLOCK = re.compile(r"(<!-- params: (\w+) -->\n)(.*?)(<!-- /params: \2 -->)", re.S)


def render(text: str) -> str:
    """`text` with every params block regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + section_markdown(m.group(2)) + m.group(4), text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("readme", type=Path)
    ap.add_argument("--check", action="store_true", help="exit 1 if the blocks are not up to date")
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{args.readme}: parameter tables are stale; run python -m editrobust.docs {args.readme}",
                  file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
