"""Model editors: each takes a pipeline and returns a delta (only the changed tensors).

Registry (the `editors:` entries of the config name these):

| name         | callable                     | returns                                         |
|--------------|------------------------------|-------------------------------------------------|
| `uce_erase`  | `uce.uce_erase(pipe, ...)`   | delta                                           |
| `uce_debias` | `uce.uce_debias(pipe, ...)`  | (delta, per-iteration log)                      |
| `refact`     | `refact.refact_edit_pipeline(pipe, ...)` | (delta, {component: info})          |

`run_editor(name, pipe, **params)` calls one and always returns `(delta, info)`. A delta is
`{component: {state-dict key: new tensor}}` (see `editors.common`); load it with `apply_delta`.
"""

from __future__ import annotations

from collections.abc import Callable

from editrobust.editors.common import Delta, apply_delta, check_delta, delta_applied, model_family
from editrobust.editors.refact import TEMPLATES, refact_edit, refact_edit_pipeline, second_moment
from editrobust.editors.uce import concept_embeddings, solve_uce, uce_debias, uce_erase, uce_modules, uce_transform

EDITORS: dict[str, Callable] = {
    "uce_erase": uce_erase,
    "uce_debias": uce_debias,
    "refact": refact_edit_pipeline,
}


def get_editor(name: str) -> Callable:
    """The editor registered under `name`; `ValueError` naming the known editors otherwise."""
    try:
        return EDITORS[name]
    except KeyError:
        raise ValueError(f"unknown editor {name!r}; known editors: {', '.join(sorted(EDITORS))}") from None


def run_editor(name: str, pipe, **params) -> tuple[Delta, object]:
    """Run a registered editor and return `(delta, info)` whatever its own return shape (info is None for uce_erase)."""
    result = get_editor(name)(pipe, **params)
    return result if isinstance(result, tuple) else (result, None)


__all__ = [
    "EDITORS", "TEMPLATES", "Delta", "apply_delta", "check_delta", "concept_embeddings", "delta_applied",
    "get_editor", "model_family", "refact_edit", "refact_edit_pipeline", "run_editor", "second_moment",
    "solve_uce", "uce_debias", "uce_erase", "uce_modules", "uce_transform",
]
