"""What a table reads: score-file keys and their paths, the bootstrap's clusters, and the
cross-references of a table entry.

A table entry (`tables.<name>` in the config) names its grid (model, editor(s), fine-tuners,
promptset(s), scorer(s)); its kind (tables/__init__.py: TableKind) resolves it into the table's
whole config slice, so a rule that takes it as a param re-runs only when something the table
reads changes.

A rule's params are key-sorted JSON (config.canonical), so in a resolved spec an order that the
table shows is a list, never the order of a mapping's keys: a retention table's `tasks` (its rows)
becomes a list of {label, ...} and a rank ablation's `ranks` (its column groups) a list of
{method, ranks: [[rank, finetuner], ...]}. The job then builds the same table as the library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from editrobust import paths

# The unit the bootstrap resamples: prompts (the study's prompt sets), seeds (RoAD: one efficacy
# prompt, so its seeds are the replicates, as in ReFACT's "std over seeds"), or single images.
CLUSTERS = {"prompt": ("prompt_id",), "seed": ("seed",), "image": ("prompt_id", "seed")}
# Tables that average over edits (ReFACT's RoAD rows, a sample of possible edits) may resample
# the edits as well: `edit` resamples edits and keeps each drawn edit's images, `edit+<cluster>`
# also resamples that cluster within every drawn edit (a two-stage bootstrap), and a plain
# cluster keeps the edits fixed. The default is the two-stage one: its intervals cover the mean
# over edits in about 95 % of draws when edits differ, where seeds alone covered far less
# (tests/test_resample_coverage.py; the figures are in config/README.md, `tables`).
EDIT_LEVEL = "edit"
EDIT_CLUSTERS = (EDIT_LEVEL, *(f"{EDIT_LEVEL}+{c}" for c in CLUSTERS))
EDIT_DEFAULT_CLUSTER = "edit+seed"


def cluster_levels(name: str) -> tuple[bool, tuple[str, ...] | None]:
    """(resample the edits?, the columns of the clusters resampled within an edit, or None)."""
    if name == EDIT_LEVEL:
        return True, None
    if name.startswith(EDIT_LEVEL + "+"):
        return True, CLUSTERS[name[len(EDIT_LEVEL) + 1:]]
    return False, CLUSTERS[name]


@dataclass(frozen=True, order=True)
class ScoreKey:
    """One score file: results/scores/<model>/<variant>/<promptset>/<scorer>.csv."""

    model: str
    variant: str
    promptset: str
    scorer: str

    @property
    def path(self) -> str:
        return paths.scores(self.model, self.variant, self.promptset, self.scorer)

    def describe(self) -> str:
        return f"variant {self.variant!r} (model {self.model}, promptset {self.promptset}, scorer {self.scorer})"


@dataclass(frozen=True, order=True)
class QualityKey:
    """One quality file: results/quality/<model>/<variant>/<quality_set>.csv (metric, value)."""

    model: str
    variant: str
    quality_set: str

    @property
    def path(self) -> str:
        return paths.quality(self.model, self.variant, self.quality_set)

    def describe(self) -> str:
        return f"quality of variant {self.variant!r} (model {self.model}, set {self.quality_set})"


def edits(spec: Mapping) -> list[tuple[str, str]]:
    """(editor, promptset) pairs of a multi-edit table: `editors` and `promptsets` paired by position.
    A pair is the unit a table evaluates: an editor may appear more than once, paired with different
    promptsets (a multi-edit model, evaluated per edit on each row's promptset)."""
    return list(zip(spec["editors"], spec["promptsets"], strict=True))


def edit_label(spec: Mapping, editor: str, promptset: str) -> str:
    """A name for one (editor, promptset) pair: the editor, or `editor@promptset` where the table
    pairs that editor with more than one promptset."""
    return editor if list(spec["editors"]).count(editor) == 1 else f"{editor}@{promptset}"


def _road_rows(road) -> list:
    if isinstance(road, Mapping):
        return [road]
    return [r for r in road if isinstance(r, Mapping)] if isinstance(road, list) else []


def edit_groups(config: Mapping, editors) -> dict[str, str]:
    """{editor: group}: ReFACT edits are reported per RoAD type (the study's Appearance / Role);
    others as 'all'. A multi-edit ReFACT entry's group is its rows' type (validation refuses an
    entry whose rows mix types)."""
    out = {}
    for editor in editors:
        entry = (config.get("editors") or {}).get(editor, {})
        rows = _road_rows(entry.get("road")) if isinstance(entry, Mapping) else []
        types = list(dict.fromkeys(r["type"] for r in rows if "type" in r))
        out[editor] = types[0] if len(types) == 1 else "all"
    return out


def table_problems(name: str, entry: Mapping, config: Mapping) -> list[str]:
    """Cross-references of one `tables.<name>` entry, one 'tables.<name>.<key>: ...' line each.

    Names that refer to nothing (model, editor, finetuner, promptset, scorer, quality set) are
    errors. A config without a `finetuners` (or `quality_sets`) section has none, so any name a
    table gives there is unknown.
    """
    out: list[str] = []
    sections = {s: config.get(s) or {}
                for s in ("models", "editors", "finetuners", "promptsets", "scorers", "quality_sets")}

    def check(where: str, section: str, value) -> None:
        known = sections[section]
        if value not in known:
            out.append(f"{where}: unknown {section[:-1]} {value!r} (defined: {', '.join(known) or 'none'})")

    def check_list(where: str, section: str, values) -> None:
        for i, value in enumerate(values or []):
            check(f"{where}[{i}]", section, value)

    at = f"tables.{name}"
    check(f"{at}.model", "models", entry["model"])
    for key, section in (("editor", "editors"), ("promptset", "promptsets"), ("scorer", "scorers"),
                         ("human", "scorers"), ("quality_set", "quality_sets")):
        if key in entry:
            check(f"{at}.{key}", section, entry[key])
    for key, section in (("editors", "editors"), ("finetuners", "finetuners"),
                         ("promptsets", "promptsets"), ("scorers", "scorers")):
        check_list(f"{at}.{key}", section, entry.get(key))
    for method, by_rank in (entry.get("ranks") or {}).items():
        for rank, finetuner in by_rank.items():
            check(f"{at}.ranks.{method}.{rank}", "finetuners", finetuner)
    for task_name, task in (entry.get("tasks") or {}).items():
        check_list(f"{at}.tasks.{task_name}.editors", "editors", task.get("editors"))
        check_list(f"{at}.tasks.{task_name}.promptsets", "promptsets", task.get("promptsets"))
        out.extend(_pairing_problems(f"{at}.tasks.{task_name}", task, sections))
    if "editors" in entry and "promptsets" in entry:
        out.extend(_pairing_problems(at, entry, sections))
    return out


def _pairing_problems(at: str, entry: Mapping, sections: Mapping) -> list[str]:
    """`editors[i]` is evaluated on `promptsets[i]`: equal lengths, and a ReFACT edit on its own RoAD row."""
    editors, promptsets = entry["editors"], entry["promptsets"]
    if len(editors) != len(promptsets):
        return [f"{at}.promptsets: {len(promptsets)} promptsets for {len(editors)} editors "
                "(editors[i] is evaluated on promptsets[i])"]
    out = []
    for i, (e, p) in enumerate(zip(editors, promptsets)):
        ed_road = (sections["editors"].get(e) or {}).get("road")
        ps = sections["promptsets"].get(p) or {}
        if ed_road and ps.get("source") == "road" and ps.get("road") not in _road_rows(ed_road):
            edited = ed_road if isinstance(ed_road, Mapping) else f"the rows {ed_road}"
            out.append(f"{at}.promptsets[{i}]: promptset {p!r} holds RoAD row {ps.get('road')} "
                       f"but editor {e!r} edits {edited}")
    seen = set()
    for i, pair in enumerate(zip(editors, promptsets)):
        if pair in seen:
            out.append(f"{at}.promptsets[{i}]: editor {pair[0]!r} is paired with promptset {pair[1]!r} twice")
        seen.add(pair)
    return out
