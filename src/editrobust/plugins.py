"""One plugin shape for every stage: editors, fine-tuners, scorers, table kinds and figure kinds.

A plugin is a class that declares, in its own module,

    name     the short name a config uses for a built-in (`method: uce_erase`, `kind: oracle`)
    params   {config key: Param(JSON schema, default, doc)}: the only place its keys, their types
             and defaults are written. Config validation generates the plugin's schema block
             from them and fills the defaults into the validated config; config/README.md's
             parameter tables are generated from them (tests/test_plugins.py checks both)

and the hooks of its stage (the base class of each stage: `editors.Editor`,
`finetune.Finetuner`, `scoring.Scorer`, `tables.TableKind`, `report.FigureKind`): the extra
input files it needs given its config entry, and its run function.

Each stage has one `Registry`. It knows its built-ins by import path and imports one only when
a config names it, so validating a config imports no model code. A plugin that lives outside the
package is named by import path, `method: mypackage.module:MyEditor`; the registry imports it in
every process that asks for it (the module must be importable there: installed, or on
PYTHONPATH). Adding an editor is therefore one module and one config entry.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a parameter without a default (required, or optional and absent)


class PluginError(ValueError):
    """A plugin name that names nothing, or a class that is not a plugin of that stage."""


@dataclass(frozen=True)
class Derived:
    """A default computed from the rest of the entry (e.g. a persistence figure's bootstrap
    cluster follows its metric); `doc` says how, for the documentation."""

    compute: Any  # entry -> value
    doc: str


@dataclass(frozen=True)
class Param:
    """One config key of a plugin: its JSON schema, its default (MISSING: none), whether the config
    must give it, and one line of documentation (config/README.md's tables are made of these)."""

    schema: Mapping = field(default_factory=dict)
    default: Any = MISSING  # a value, a Derived, or MISSING
    required: bool = False
    doc: str = ""

    @property
    def static_default(self) -> bool:
        return self.default is not MISSING and not isinstance(self.default, Derived)


class Plugin:
    """What every plugin declares. Subclasses set `name`, `params` and the hooks of their stage.

    A plugin takes its own `params` and those of every class it derives from (a stage's base
    class declares the keys every plugin of the stage takes): see `all_params`."""

    name: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}

    @classmethod
    def all_params(cls) -> dict[str, Param]:
        """The keys the plugin takes: its bases' `params`, then its own (which win)."""
        out: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            out.update(klass.__dict__.get("params", {}))
        return out

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring: what the plugin is, for tables of plugins."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def schema(cls, key: str) -> dict:
        """The JSON schema of this plugin's config entry (`key` is the entry's plugin key, e.g.
        `method`): its declared keys, their types and defaults, and nothing else."""
        params = cls.all_params()
        properties: dict = {key: True}
        for name, p in params.items():
            properties[name] = {**p.schema, **({"default": p.default} if p.static_default else {})}
        required = [key, *(name for name, p in params.items() if p.required)]
        return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        """What is wrong with the entry `name` (defaults filled) given the rest of the config:
        names it refers to that do not exist, combinations that cannot work. One
        'section.name.key: ...' line each (see `reference_problems`)."""
        return []

    @classmethod
    def defaults(cls) -> dict:
        return {name: copy.deepcopy(p.default) for name, p in cls.all_params().items() if p.static_default}

    @classmethod
    def with_defaults(cls, entry: Mapping) -> dict:
        """The entry with every declared default it does not set filled in (a new dict); derived
        defaults are computed from the entry with its static defaults."""
        out = {**cls.defaults(), **copy.deepcopy(dict(entry))}
        for name, p in cls.all_params().items():
            if isinstance(p.default, Derived) and name not in out:
                out[name] = p.default.compute(out)
        return out


class Registry:
    """The plugins of one stage, by name.

    `section` is the config section (`editors`), `key` the entry key naming the plugin (`method`),
    `base` the stage's plugin class, and `builtins` maps short names to "module:Class" paths.
    """

    def __init__(self, section: str, key: str, base: type[Plugin], builtins: Mapping[str, str]):
        self.section, self.key, self.base = section, key, base
        self._paths = dict(builtins)
        self._loaded: dict[str, type[Plugin]] = {}

    def names(self) -> list[str]:
        """The built-in plugins' short names."""
        return list(self._paths)

    def get(self, name: str) -> type[Plugin]:
        """The plugin class a config names: a built-in's short name or a "module:Class" path."""
        if name in self._loaded:
            return self._loaded[name]
        if not isinstance(name, str) or (name not in self._paths and ":" not in name):
            raise PluginError(f"unknown {self.key} {name!r} (known: {', '.join(self._paths)}; or give a plugin of "
                              f"your own as 'package.module:ClassName')")
        module_name, _, attr = self._paths.get(name, name).partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise PluginError(f"{self.key} {name!r}: cannot import module {module_name!r} ({e}); a plugin outside "
                              "editrobust must be importable in every job (installed, or on PYTHONPATH)") from None
        plugin = getattr(module, attr, None)
        if not (isinstance(plugin, type) and issubclass(plugin, self.base)):
            raise PluginError(f"{self.key} {name!r}: {module_name}.{attr} is not a subclass of "
                              f"{self.base.__module__}.{self.base.__qualname__}")
        self._loaded[name] = plugin
        return plugin

    def entry(self, entry: Mapping) -> dict:
        """An entry with its plugin's defaults filled in (what every stage entry point starts from)."""
        return self.get(entry[self.key]).with_defaults(entry)

    def all(self) -> dict[str, type[Plugin]]:
        """Every built-in plugin, imported (for documentation and tests)."""
        return {name: self.get(name) for name in self._paths}


def reference_problems(where: str, value: str, config: Mapping, section: str, kind: str | None = None,
                       what: str | None = None) -> list[str]:
    """`value` must name an entry of config[section] (and, with `kind`, one of that kind); `what`
    is what such an entry is called in the message (default: the section's name, singular)."""
    known, what = config.get(section) or {}, what or section.rstrip("s")
    if value not in known:
        return [f"{where}: unknown {what} {value!r} (defined in {section}: {', '.join(known) or 'none'})"]
    if kind is not None and known[value].get("kind") != kind:
        return [f"{where}: {what} {value!r} is of kind {known[value].get('kind')!r}, {kind!r} is needed"]
    return []
