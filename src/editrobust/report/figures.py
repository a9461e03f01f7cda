"""One entry point for the figure kinds: build a resolved figure spec into (Figure, data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from editrobust.paths import locate

from . import bars, grid, persistence
from .render import write_figure
from .spec import input_paths

# kind -> build(spec, files): files is {path the figure reads (spec.input_paths): the file}
BUILDERS = {"grid": grid.build, "bars": bars.build, "persistence": persistence.build}


def build_figure(spec: Mapping, paths: Sequence[str | Path] | None = None, root: str | Path = "."):
    """(matplotlib Figure, DataFrame of what it shows) for a resolved figure spec (spec.resolve).

    `paths` are the files the job was given (default: spec.input_paths under `root`); each file
    the figure reads is found among them by its path (paths.locate), never by its position."""
    needed = input_paths(spec)
    given = paths if paths is not None else [Path(root) / p for p in needed]
    return BUILDERS[spec["kind"]](spec, locate(needed, given, what=f"figure of kind {spec['kind']!r}"))


__all__ = ["BUILDERS", "build_figure", "write_figure"]
