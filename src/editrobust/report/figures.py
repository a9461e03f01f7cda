"""One entry point for the figure kinds: build a resolved figure spec into (Figure, data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from . import bars, grid, persistence
from .render import write_figure
from .spec import input_paths

BUILDERS = {"grid": grid.build, "bars": bars.build, "persistence": persistence.build}


def build_figure(spec: Mapping, paths: Sequence[str] | None = None, root: str | Path = "."):
    """(matplotlib Figure, DataFrame of what it shows) for a resolved figure spec
    (spec.resolve); `paths` are its input files (default spec.input_paths), under `root`."""
    return BUILDERS[spec["kind"]](spec, paths if paths is not None else input_paths(spec), root)


__all__ = ["BUILDERS", "build_figure", "write_figure"]
