"""The report: figures (comparison grids, Figure-3 bars, persistence curves) and the human
annotation kit. Everything here reads files the earlier stages wrote (samples, score files,
tables): a new figure never regenerates an image.

A figure kind is a plugin (editrobust.plugins) of class `FigureKind`, named by the entry's `kind`,
one module each: it declares its config keys (`params`), `resolve(entry, config)` (its config
slice), `inputs(spec)` (the files it reads) and `run(spec, files) -> (Figure, DataFrame)`.

    grid         M, M_ed, M_ft, M_ed_ft side by side for the same prompt and seed
    bars         the study's Figure 3 from a table's CSV, with CI whiskers
    persistence  edit metric vs fine-tuning step from the checkpoint variants
    league       the robustness table as a heatmap of the share of each edit kept, with CIs
    spec         what figures and kits read; shared cross-reference checks
    render       PNG + PDF + CSV of a figure, all or nothing
    annotation   blinded annotation kit (offline HTML page) and ingestion of annotators' CSVs

Entry points (one per rule): `make_figure`, `export_annotation_kit`, `ingest_annotations`.
This module imports no plotting library: config validation reads the declarations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from editrobust import paths
from editrobust import variant_names as vn
from editrobust.plugins import Param, Plugin, Registry

# The keys every figure kind takes.
COMMON = {
    "title": Param({"type": "string"}, doc="the figure's title (default: one naming what it shows)"),
    "dpi": Param({"type": "integer", "minimum": 30}, 150, doc="PNG resolution"),
}


class FigureKind(Plugin):
    """A figure kind: declared `params` ({**COMMON, own keys}), and the hooks below."""

    params = COMMON

    @classmethod
    def resolve(cls, entry: Mapping, config: Mapping) -> dict:
        """The figure's config slice: its entry with defaults, plus what it reads from other sections."""
        return cls.with_defaults(entry)

    @staticmethod
    def inputs(spec: Mapping) -> list[str]:
        """Exactly the files the figure reads (relative paths)."""
        raise NotImplementedError

    @staticmethod
    def run(spec: Mapping, files: Mapping[str, Path]):
        """(matplotlib Figure, DataFrame of what it shows); `files` maps each input to its file."""
        raise NotImplementedError

    @staticmethod
    def editors(spec: Mapping) -> list[str]:
        """The edits the figure shows: one that missed its target is marked (tables/marks.py)."""
        return [spec["editor"]] if "editor" in spec else []


class TableFigure(FigureKind):
    """A figure drawn from one built table (`table`): it reads that table's CSV only, and refuses a
    table of a kind it cannot draw (`table_kinds`; `wrong_kind` says why, after "is of kind 'k'")."""

    table_kinds: tuple[str, ...] = ()
    wrong_kind: str = ""

    @staticmethod
    def inputs(spec: Mapping) -> list[str]:
        return [paths.table(spec["table"])]

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        at, tables = f"figures.{name}.table", config.get("tables") or {}
        if entry["table"] not in tables:
            return [f"{at}: unknown table {entry['table']!r} (defined: {', '.join(tables) or 'none'})"]
        kind = tables[entry["table"]]["kind"]
        if kind not in cls.table_kinds:
            return [f"{at}: table {entry['table']!r} is of kind {kind!r}{cls.wrong_kind}"]
        return []


FIGURES = Registry("figures", "kind", FigureKind, {
    "grid": "editrobust.report.grid:Grid",
    "bars": "editrobust.report.bars:Bars",
    "persistence": "editrobust.report.persistence:Persistence",
    "league": "editrobust.report.league:League",
})


def resolve(entry: Mapping, config: Mapping) -> dict:
    """A figure entry's spec (FigureKind.resolve of its kind)."""
    return FIGURES.get(entry["kind"]).resolve(entry, config)


def edit_records(spec: Mapping) -> dict[str, str]:
    """{editor: its edited variant's variant.json} for the edits the figure shows."""
    from editrobust.tables.marks import record_paths

    editors = FIGURES.get(spec["kind"]).editors(spec)
    return record_paths(spec, editors) if editors else {}


def input_paths(spec: Mapping) -> list[str]:
    """Every file the figure reads: its data, and the records of the edits it shows."""
    return FIGURES.get(spec["kind"]).inputs(spec) + list(edit_records(spec).values())


def build_figure(spec: Mapping, given: Sequence[str | Path] | None = None, root: str | Path = "."):
    """(matplotlib Figure, DataFrame of what it shows) for a resolved figure spec.

    `given` are the files the job was given (default: the figure's inputs under `root`); each
    file the figure reads is found among them by its path (paths.locate), never by its position.
    An edit that missed its target marks the figure: a footnote, and `mark` "†" on the rows of
    the data whose variant carries the edit."""
    from editrobust.tables.marks import SYMBOL, missed_edits

    kind = FIGURES.get(spec["kind"])
    needed = input_paths(spec)
    given = given if given is not None else [Path(root) / p for p in needed]
    files = paths.locate(needed, given, what=f"figure of kind {spec['kind']!r}")
    fig, data = kind.run(spec, files)
    missed = missed_edits({e: files[p] for e, p in edit_records(spec).items()})
    if missed and "variant" in data.columns:
        edited = data["variant"].map(lambda v: any(e in vn.parse(v).editors for e in missed))
        data = data.assign(mark=[SYMBOL if m else "" for m in edited])
    add_footnotes(fig, [f"{SYMBOL} {note}" for note in missed.values()])
    return fig, data


def add_footnotes(fig, notes: Sequence[str]) -> None:
    """Print the notes under the figure (nothing when there are none)."""
    if notes:
        fig.text(0.01, 0.0, "\n".join(notes), fontsize=7, ha="left", va="top", color="#b00020")


def make_figure(spec: Mapping, given: Sequence[str | Path], png, pdf, csv):
    """The rule `make_figure`: draw the figure and write .png, .pdf and .csv (all or nothing);
    returns the DataFrame of what it shows."""
    from .render import write_figure

    fig, data = build_figure(spec, given)
    write_figure(fig, data, png, pdf, csv, dpi=spec["dpi"])
    return data


def export_annotation_kit(spec: Mapping, name: str, given: Sequence[str | Path], kit_dir, key_path):
    """The rule `export_annotation_kit` (annotation.export_kit)."""
    from .annotation import export_kit

    return export_kit(spec, name, given, kit_dir, key_path)


def ingest_annotations(key_path, annotator_csvs: Sequence, labels: Mapping[str, str], agreement_path):
    """The rule `ingest_annotations_<kit>` (annotation.ingest)."""
    from .annotation import ingest

    return ingest(key_path, list(annotator_csvs), dict(labels), agreement_path)
