"""The study's tables: pure functions from per-image score frames to a table, and its renderings.

A table kind is a plugin (editrobust.plugins) of class `TableKind`, named by the entry's `kind`,
one module each: it declares its config keys (`params`), `resolve(entry, config)` (the entry
with defaults and what it reads from other sections: the table's whole config slice),
`inputs(spec)` (the score/quality files it reads, as keys) and `run(spec, frames)` (frames keyed
by those keys -> DataFrame, see layout.py). A kind of your own is one module with a `TableKind`
subclass, named as `kind: package.module:Class`.

    debias           Table 1: δ per profession, Δ, Avg.(std.)
    unsafe           Tables 2, 3: label rates, Δ, Flip, McNemar, per scorer (rows) and fine-tuner
    safety_rates     Table 5: the same numbers with the scorers side by side (columns)
    refact           Figure 3: efficacy / generality / specificity per variant and fine-tuner
    edit_drop        §1's headline: average drop of editing performance from M_ed to M_ed_ft
    rank_ablation    Table 4: efficacy of M_ed_ft per LoRA/DoRA rank
    human_agreement  agreement and Fleiss' κ of each automatic scorer with the human labels
    retention        Table 6: five-level icons of edit strength and of the share retained
    quality          Table 7: CLIP score and FID per variant
    finetune_effect  per fine-tuner: its own task's measure (in-style rate, subject) and content, M vs M_ft
    robustness       the league table: the share of each edit kept per fine-tuner, and what
                     restores it (re-editing, edit-aware fine-tuning, editing after); `snakemake
                     robustness`

Entry point (rule `make_table`): `make_table`.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from editrobust.io import write_csv, write_text
from editrobust.paths import locate
from editrobust.plugins import Param, Plugin, Registry

from .load import TableInputError, read_quality, read_scores
from .marks import apply_marks, missed_edits, record_paths
from .render import flat, to_latex, to_markdown
from .spec import CLUSTERS, QualityKey, ScoreKey, table_problems

NAME = {"$ref": "#/$defs/name"}
NAMES = {"type": "array", "items": NAME}
NAME_LIST = {"$ref": "#/$defs/name_list"}
# The keys every table kind takes.
COMMON = {
    "model": Param(NAME, required=True, doc="a name from `models`"),
    "ci": Param({"type": "boolean"}, True, doc="bootstrap CIs and paired bootstrap p-values"),
    "bootstrap_resamples": Param({"type": "integer", "minimum": 1}, 2000, doc="bootstrap resamples"),
    "seed": Param({"type": "integer"}, 0, doc="seeds the bootstrap: the same seed gives the same CIs"),
    "confidence": Param({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, 0.95,
                        doc="the CIs' confidence level"),
    "cluster": Param({"enum": list(CLUSTERS)}, "prompt",
                     doc="what the bootstrap resamples: `prompt`, `seed` or `image` (config/README.md, tables)"),
    "names": Param({"type": "object", "additionalProperties": {"type": "string"}}, {},
                   doc="display names, e.g. `{full: Full Size}`"),
    "caption": Param({"type": "string"}, doc="caption of the .md / .tex (default: '<name> (<kind>)')"),
    "digits": Param({"type": "integer", "minimum": 0, "maximum": 8}, 2, doc="decimals shown in .md / .tex"),
}


class TableKind(Plugin):
    """A table kind: declared `params` ({**COMMON, own keys}), and the hooks below."""

    params = COMMON
    # The named target that builds tables of this kind: None = `snakemake tables` (and `report`);
    # a kind whose inputs are many extra models (the robustness league) has its own.
    own_target: str | None = None

    @classmethod
    def resolve(cls, entry: Mapping, config: Mapping) -> dict:
        """The table's config slice: its entry with defaults, plus what it reads from other sections."""
        return cls.with_defaults(entry)

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        return table_problems(name, entry, config)

    @staticmethod
    def inputs(spec: Mapping) -> list:
        """The score (ScoreKey) or quality (QualityKey) files the table reads."""
        raise NotImplementedError

    @staticmethod
    def editors(spec: Mapping) -> list[str]:
        """The edits the table shows: their records mark the cells of an edit that missed its target."""
        out = [spec["editor"]] if "editor" in spec else []
        out += list(spec.get("editors", []))
        for task in spec.get("tasks", []):
            out += task["editors"]
        return out

    @staticmethod
    def cells_of_edit(spec: Mapping, editor: str, table: pd.DataFrame) -> tuple[list, list | None]:
        """(rows, (group, quantity) columns or None for all) whose edited cells depend on `editor`
        (default: every row and column; marks.apply_marks leaves the unedited M and M_ft alone)."""
        return list(table.index), None

    @staticmethod
    def run(spec: Mapping, frames: Mapping) -> pd.DataFrame:
        raise NotImplementedError


TABLES = Registry("tables", "kind", TableKind, {
    "debias": "editrobust.tables.debias:Debias",
    "unsafe": "editrobust.tables.unsafe:Unsafe",
    "safety_rates": "editrobust.tables.safety_rates:SafetyRates",
    "refact": "editrobust.tables.refact:Refact",
    "edit_drop": "editrobust.tables.edit_drop:EditDrop",
    "rank_ablation": "editrobust.tables.rank_ablation:RankAblation",
    "human_agreement": "editrobust.tables.agreement:HumanAgreement",
    "retention": "editrobust.tables.retention:Retention",
    "quality": "editrobust.tables.quality:Quality",
    "robustness": "editrobust.tables.robustness:Robustness",
    "finetune_effect": "editrobust.tables.finetune_effect:FinetuneEffect",
})


def kind_of(spec: Mapping) -> type[TableKind]:
    return TABLES.get(spec["kind"])


def resolve(entry: Mapping, config: Mapping) -> dict:
    """A table entry's spec (TableKind.resolve of its kind)."""
    return kind_of(entry).resolve(entry, config)


def input_keys(spec: Mapping) -> list:
    """The files the table reads, without duplicates, in a stable order."""
    return list(dict.fromkeys(kind_of(spec).inputs(spec)))


def input_paths(spec: Mapping) -> list[str]:
    return [key.path for key in input_keys(spec)]


def edit_records(spec: Mapping) -> dict[str, str]:
    """{editor: its edited variant's variant.json} for the edits the table shows (marks.py)."""
    return record_paths(spec, kind_of(spec).editors(spec))


def _frames(spec: Mapping, files: Mapping) -> dict:
    return {k: (read_quality if isinstance(k, QualityKey) else read_scores)(files[k.path]) for k in input_keys(spec)}


def read_inputs(spec: Mapping, paths: list) -> dict:
    """{key: frame} for the table's keys, each read from the one of `paths` that is its file
    (found by path, see paths.locate: the order of `paths` does not matter, and a missing or
    unexpected file is an error naming it)."""
    return _frames(spec, locate(input_paths(spec), paths, what=f"table of kind {spec['kind']!r}"))


def build_table(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    return kind_of(spec).run(spec, frames)


def write_table(table: pd.DataFrame, spec: Mapping, csv_path, md_path, tex_path, name: str = "") -> None:
    """The CSV (every number), Markdown and LaTeX renderings, each written atomically."""
    digits = spec["digits"]
    caption = spec.get("caption") or f"{name} ({spec['kind']})".strip()
    # Render everything first: a rendering error must not leave the CSV written and the rest not.
    markdown = to_markdown(table, digits, caption)
    latex = to_latex(table, digits, caption, label=f"tab:{name}" if name else None)
    write_csv(csv_path, flat(table))
    write_text(md_path, markdown)
    write_text(tex_path, latex)


def make_table(spec: Mapping, given: list, out_csv, out_md, out_tex, name: str = "") -> pd.DataFrame:
    """The rule `make_table`: build the table of `spec` from the files the job was given (each found
    by its path: its score or quality files and the records of the edits it shows), mark the
    cells of edits that missed their target, and write its three renderings."""
    records = edit_records(spec)
    files = locate(input_paths(spec) + list(records.values()), given, what=f"table of kind {spec['kind']!r}")
    kind = kind_of(spec)
    table = build_table(spec, _frames(spec, files))
    missed = missed_edits({e: files[path] for e, path in records.items()})
    table = apply_marks(table, missed, lambda editor: kind.cells_of_edit(spec, editor, table))
    write_table(table, spec, out_csv, out_md, out_tex, name=name)
    return table


__all__ = [
    "TABLES",
    "QualityKey",
    "ScoreKey",
    "TableInputError",
    "TableKind",
    "build_table",
    "edit_records",
    "make_table",
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
