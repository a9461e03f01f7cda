"""Comparison grids: the same prompt and seed drawn by M, M_ed, M_ft and M_ed_ft, side by side.

One row per (fine-tuner, image) and always four columns, so a reader compares an image with its
edited, fine-tuned, and edited-then-fine-tuned counterparts from the same starting noise (the
pairing of sampling.py). M and M_ed repeat in every fine-tuner's rows: the row stays readable on
its own. The images shown are `images` ([{prompt_id, seed}]) or, by default, the first seed of
`count` prompts spread evenly over the promptset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from editrobust import paths
from editrobust.io import load_image, read_samples_index
from editrobust.plugins import Param

from . import COMMON, FigureKind
from .spec import FigureInputError, entry_reference_problems, grid_variants

COLUMNS = ("M", "M_ed", "M_ft", "M_ed_ft")
CELL_INCHES = 1.7


def select_images(index: pd.DataFrame, images: Sequence[Mapping] | None, count: int, where: str) -> list[tuple[str, int]]:
    """(prompt_id, seed) pairs to show: the given ones (each must exist), or the first seed of
    `count` prompts evenly spaced over the index's prompts."""
    keys = set(zip(index["prompt_id"], index["seed"].astype(int)))
    if images:
        chosen = [(str(i["prompt_id"]), int(i["seed"])) for i in images]
        unknown = [k for k in chosen if k not in keys]
        if unknown:
            raise FigureInputError(f"{where}: no image for (prompt_id, seed) {unknown[:5]}")
        return chosen
    prompts = list(pd.unique(index["prompt_id"]))
    picks = np.unique(np.linspace(0, len(prompts) - 1, num=min(count, len(prompts))).round().astype(int))
    out = []
    for i in picks:
        seeds = index.loc[index["prompt_id"] == prompts[i], "seed"].astype(int)
        out.append((prompts[i], int(seeds.min())))
    return out


def _image_path(index: pd.DataFrame, index_path: Path, key: tuple[str, int]) -> Path:
    row = index[(index["prompt_id"] == key[0]) & (index["seed"].astype(int) == key[1])]
    if row.empty:
        raise FigureInputError(f"{index_path}: no image for prompt_id {key[0]!r}, seed {key[1]} "
                               "(the grid's variants must share their prompts and seeds)")
    return index_path.parent / row["file"].iloc[0]


def build(spec: Mapping, files: Mapping[str, Path]):
    """The grid figure and one row per cell (finetuner, prompt_id, seed, column, variant, file).

    `files` maps each samples index the grid reads (spec.samples_index) to its file; a cell's
    `file` is the image's path relative to the working directory.
    """
    from matplotlib.figure import Figure

    model, promptset = spec["model"], spec["promptset"]
    by_variant = {}
    for f in spec["finetuners"]:
        for variant in grid_variants(spec, f).values():
            path = files[paths.samples_index(model, variant, promptset)]
            if variant not in by_variant:
                by_variant[variant] = (read_samples_index(path, FigureInputError), path)
    base_index, base_path = by_variant["base"]
    keys = select_images(base_index, spec.get("images"), spec["count"], str(base_path))
    names = spec["names"]
    rows = [(f, key) for f in spec["finetuners"] for key in keys]
    width, height = CELL_INCHES * len(COLUMNS) + 1.2, CELL_INCHES * len(rows) + 1.0
    fig = Figure(figsize=(width, height))
    # margins in inches, not matplotlib's default fractions (whose top 12 % left a tall grid with
    # inches of blank space under its title)
    fig.subplots_adjust(left=1.0 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - 0.85 / height,
                        wspace=0.05, hspace=0.12)
    axes = fig.subplots(len(rows), len(COLUMNS), squeeze=False)
    cells = []
    for r, (f, key) in enumerate(rows):
        for c, (column, variant) in enumerate(grid_variants(spec, f).items()):
            index, index_path = by_variant[variant]
            image_path = _image_path(index, index_path, key)
            ax = axes[r][c]
            ax.imshow(load_image(image_path), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{names.get(f, f)}\n{key[0]}, seed {key[1]}", fontsize=7)
            relative = Path(paths.samples_index(model, variant, promptset)).parent / image_path.relative_to(index_path.parent)
            cells.append(dict(finetuner=f, prompt_id=key[0], seed=key[1], column=column, variant=variant,
                              file=str(relative)))
    title = spec.get("title") or f"{spec['editor']} on {promptset} ({model})"
    fig.suptitle(title, fontsize=11, y=1 - 0.12 / height, va="top")
    return fig, pd.DataFrame(cells)


class Grid(FigureKind):
    """The same prompt and seed drawn by M, M_ed, M_ft and M_ed_ft: four columns, a row per fine-tuner and image."""

    name = "grid"
    params = {
        **COMMON,
        "model": Param({"$ref": "#/$defs/name"}, required=True, doc="a name from `models`"),
        "editor": Param({"$ref": "#/$defs/name"}, required=True, doc="the edit E: variants `ed-E`, `ed-E+ft-F`"),
        "finetuners": Param({"$ref": "#/$defs/name_list"}, required=True, doc="names from `finetuners`, one block of rows each"),
        "promptset": Param({"$ref": "#/$defs/name"}, required=True, doc="whose samples are shown"),
        "images": Param({"type": "array", "minItems": 1,
                         "items": {"type": "object", "required": ["prompt_id", "seed"], "additionalProperties": False,
                                   "properties": {"prompt_id": {"type": ["string", "integer"]},
                                                  "seed": {"type": "integer", "minimum": 0}}}},
                        doc="`[{prompt_id, seed}]`, the images shown (default: the first seed of `count` prompts "
                            "spread evenly over the promptset)"),
        "count": Param({"type": "integer", "minimum": 1}, 3, doc="images shown when `images` is not given"),
        "names": Param({"type": "object", "additionalProperties": {"type": "string"}}, {},
                       doc="display names of the fine-tuners"),
    }
    run = staticmethod(build)

    @staticmethod
    def inputs(spec: Mapping) -> list[str]:
        m, p = spec["model"], spec["promptset"]
        variants = [v for f in spec["finetuners"] for v in grid_variants(spec, f).values()]
        return [paths.samples_index(m, v, p) for v in dict.fromkeys(variants)]

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        return entry_reference_problems(f"figures.{name}", entry, config, ("model", "editor", "promptset", "finetuners"))
