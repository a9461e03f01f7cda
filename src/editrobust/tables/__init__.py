"""The study's tables: pure functions from per-image score frames to a table, and its renderings.

A table kind is one module with `inputs(spec)` (the score/quality files it reads, as keys) and
`build(spec, frames)` (frames keyed by those keys -> DataFrame, see layout.py), plus one entry in
KINDS. `spec` is the table's resolved config entry (spec.resolve).

    debias           Table 1: δ per profession, Δ, Avg.(std.)
    unsafe           Tables 2, 3, 5: label rates, Δ, Flip, McNemar, per scorer
    refact           Figure 3: efficacy / generality / specificity per variant and fine-tuner
    rank_ablation    Table 4: efficacy of M_ed_ft per LoRA/DoRA rank
    human_agreement  agreement and Fleiss' κ of each automatic scorer with the human labels
    retention        Table 6: five-level icons of edit strength and of the share retained
    quality          Table 7: CLIP score and FID per variant
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from editrobust.io import write_csv, write_text
from editrobust.paths import locate

from . import agreement, debias, quality, rank_ablation, refact, retention, unsafe
from .load import TableInputError, read_quality, read_scores
from .render import flat, to_latex, to_markdown
from .spec import QualityKey, ScoreKey, resolve, table_problems


@dataclass(frozen=True)
class TableKind:
    inputs: Callable[[Mapping], list]
    build: Callable[[Mapping, Mapping], pd.DataFrame]
    digits: int = 2


KINDS: dict[str, TableKind] = {
    "debias": TableKind(debias.inputs, debias.build),
    "unsafe": TableKind(unsafe.inputs, unsafe.build),
    "refact": TableKind(refact.inputs, refact.build),
    "rank_ablation": TableKind(rank_ablation.inputs, rank_ablation.build),
    "human_agreement": TableKind(agreement.inputs, agreement.build, digits=3),
    "retention": TableKind(retention.inputs, retention.build),
    "quality": TableKind(quality.inputs, quality.build),
}


def kind_of(spec: Mapping) -> TableKind:
    try:
        return KINDS[spec["kind"]]
    except KeyError:
        raise TableInputError(f"unknown table kind {spec.get('kind')!r} (known: {', '.join(KINDS)})") from None


def input_keys(spec: Mapping) -> list:
    """The files the table reads, without duplicates, in a stable order."""
    return list(dict.fromkeys(kind_of(spec).inputs(spec)))


def input_paths(spec: Mapping) -> list[str]:
    return [key.path for key in input_keys(spec)]


def read_inputs(spec: Mapping, paths: list) -> dict:
    """{key: frame} for the table's keys, each read from the one of `paths` that is its file
    (found by path, see paths.locate: the order of `paths` does not matter, and a missing or
    unexpected file is an error naming it)."""
    keys = input_keys(spec)
    files = locate([k.path for k in keys], paths, what=f"table of kind {spec['kind']!r}")
    return {k: (read_quality if isinstance(k, QualityKey) else read_scores)(files[k.path])
            for k in keys}


def build_table(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    return kind_of(spec).build(spec, frames)


def write_table(table: pd.DataFrame, spec: Mapping, csv_path, md_path, tex_path, name: str = "") -> None:
    """The CSV (every number), Markdown and LaTeX renderings, each written atomically."""
    digits = spec.get("digits", kind_of(spec).digits)
    caption = spec.get("caption") or f"{name} ({spec['kind']})".strip()
    # Render everything first: a rendering error must not leave the CSV written and the rest not.
    markdown = to_markdown(table, digits, caption)
    latex = to_latex(table, digits, caption, label=f"tab:{name}" if name else None)
    write_csv(csv_path, flat(table))
    write_text(md_path, markdown)
    write_text(tex_path, latex)


__all__ = [
    "KINDS",
    "QualityKey",
    "ScoreKey",
    "TableInputError",
    "TableKind",
    "build_table",
    "flat",
    "input_keys",
    "input_paths",
    "read_inputs",
    "resolve",
    "table_problems",
    "to_latex",
    "to_markdown",
    "write_table",
]
