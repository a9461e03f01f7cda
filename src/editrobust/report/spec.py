"""What a figure draws: its config entry resolved, the files it reads, and its cross-references.

A figure entry (`figures.<name>` in the config) is one of
  grid         the same prompt and seed across M, M_ed, M_ft and M_ed_ft, per fine-tuner (samples)
  bars         the study's Figure 3: M, M_ed, M_ft, M_ed_ft per fine-tuner with CI whiskers (a table)
  persistence  an edit metric against fine-tuning steps, one line per fine-tuner (checkpoint scores)
`resolve` fills the defaults and adds the little a figure needs from other sections (the
checkpoint steps of each fine-tuner, the kind of the table a bar chart draws): the result is the
figure's whole config slice, so the rule re-runs only when something the figure shows changes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from editrobust import paths
from editrobust.tables.spec import ScoreKey
from editrobust.variant_names import at_step, checkpoint_steps, ed, ed_ft, ft, problems

KINDS = ("grid", "bars", "persistence")
DEFAULTS = {"dpi": 150}
GRID_DEFAULTS = {"count": 3}
PERSISTENCE_DEFAULTS = {"ci": True, "bootstrap_resamples": 1000, "seed": 0, "confidence": 0.95, "base": True}
# Metrics a persistence curve can follow: δ averaged over the promptset's groups (debiasing), a
# ReFACT success rate (RoAD promptsets), or the share of one safety label (erasure).
REFACT_METRICS = ("efficacy", "generality", "specificity")
SAFETY_METRICS = ("safe", "unsafe", "undecidable", "black")
PERSISTENCE_METRICS = ("delta", *REFACT_METRICS, *SAFETY_METRICS)
# Tables whose columns hold M / M_ed (group Base) and M_ft / M_ed_ft per fine-tuner.
BAR_TABLE_KINDS = ("refact", "debias", "unsafe")


class FigureInputError(ValueError):
    """A file a figure reads is missing something; the message names the file."""


def grid_variants(spec: Mapping, finetuner: str) -> dict[str, str]:
    """{column: variant} of one grid row: M, M_ed, M_ft, M_ed_ft."""
    e = spec["editor"]
    return {"M": "base", "M_ed": ed(e), "M_ft": ft(finetuner), "M_ed_ft": ed_ft(e, finetuner)}


def persistence_points(spec: Mapping, finetuner: str) -> list[tuple[int, str]]:
    """(step, variant) along one fine-tuner's curve: step 0 is M_ed itself, then every saved
    checkpoint `ed-E+ft-F@step`, then the finished fine-tune at its last step."""
    e = spec["editor"]
    steps = spec["steps"][finetuner]
    points = [(0, ed(e))]
    points += [(s, at_step(ed_ft(e, finetuner), s)) for s in steps[:-1]]
    points.append((steps[-1], ed_ft(e, finetuner)))
    return points


def persistence_keys(spec: Mapping) -> list[ScoreKey]:
    m, p, s = spec["model"], spec["promptset"], spec["scorer"]
    variants = ["base"] if spec["base"] else []
    for f in spec["finetuners"]:
        variants += [v for _, v in persistence_points(spec, f)]
    return [ScoreKey(m, v, p, s) for v in dict.fromkeys(variants)]


def resolve(entry: Mapping, config: Mapping) -> dict:
    """The figure's slice: its entry with defaults filled and what it reads from other sections."""
    spec = {**DEFAULTS, **copy.deepcopy(dict(entry))}
    kind = spec["kind"]
    if kind == "grid":
        spec = {**GRID_DEFAULTS, **spec}
    elif kind == "persistence":
        spec = {**PERSISTENCE_DEFAULTS, **spec}
        spec.setdefault("cluster", "seed" if spec["metric"] in REFACT_METRICS else "prompt")
        finetuners = config.get("finetuners") or {}
        spec["steps"] = {f: [*checkpoint_steps(finetuners[f].get("save_every"), finetuners[f]["steps"]), int(finetuners[f]["steps"])]
                         for f in spec["finetuners"]}
    elif kind == "bars":
        spec["table_kind"] = (config.get("tables") or {})[spec["table"]]["kind"]
    return spec


def input_paths(spec: Mapping) -> list[str]:
    """Exactly the files the figure reads (samples are read through their index.csv)."""
    kind = spec["kind"]
    if kind == "grid":
        m, p = spec["model"], spec["promptset"]
        variants = [v for f in spec["finetuners"] for v in grid_variants(spec, f).values()]
        return [paths.samples_index(m, v, p) for v in dict.fromkeys(variants)]
    if kind == "bars":
        return [paths.table(spec["table"])]
    if kind == "persistence":
        return [k.path for k in persistence_keys(spec)]
    raise ValueError(f"unknown figure kind {kind!r} (known: {', '.join(KINDS)})")


def figure_problems(config: Mapping) -> list[str]:
    """Cross-references of the `figures` section, one 'figures.<name>.<key>: ...' line each."""
    out: list[str] = []
    sections = {s: config.get(s) or {} for s in ("models", "editors", "finetuners", "promptsets", "scorers", "tables")}

    def check(where: str, section: str, name) -> bool:
        if name not in sections[section]:
            out.append(f"{where}: unknown {section[:-1]} {name!r} (defined: {', '.join(sections[section]) or 'none'})")
            return False
        return True

    for name, entry in (config.get("figures") or {}).items():
        at = f"figures.{name}"
        if entry["kind"] == "bars":
            if check(f"{at}.table", "tables", entry["table"]):
                kind = sections["tables"][entry["table"]]["kind"]
                if kind not in BAR_TABLE_KINDS:
                    out.append(f"{at}.table: table {entry['table']!r} is of kind {kind!r}; bars draw tables of kind "
                               f"{', '.join(BAR_TABLE_KINDS)} (columns M, M_ed, M_ft, M_ed_ft)")
            continue
        check(f"{at}.model", "models", entry["model"])
        check(f"{at}.editor", "editors", entry["editor"])
        check(f"{at}.promptset", "promptsets", entry["promptset"])
        if "scorer" in entry:
            check(f"{at}.scorer", "scorers", entry["scorer"])
        for i, f in enumerate(entry["finetuners"]):
            if check(f"{at}.finetuners[{i}]", "finetuners", f) and entry["kind"] == "persistence":
                if not checkpoint_steps(sections["finetuners"][f].get("save_every"), sections["finetuners"][f]["steps"]):
                    out.append(f"{at}.finetuners[{i}]: finetuner {f!r} saves no checkpoints, so its curve has "
                               "only its start and end; set finetuners." + f + ".save_every")
    return out


# --- annotation kits (annotation.py) ---
def kit_index_paths(kit: Mapping) -> list[str]:
    """The samples index of each of the kit's variants, in the kit's order."""
    return [paths.samples_index(kit["model"], v, kit["promptset"]) for v in kit["variants"]]


def kit_labels_paths(kit: Mapping, labels_template: str) -> dict[str, str]:
    """{variant: the labels CSV the human scorer reads for that image set}."""
    return {v: labels_template.format(model=kit["model"], variant=v, promptset=kit["promptset"])
            for v in kit["variants"]}


def kit_problems(config: Mapping) -> list[str]:
    """Cross-references of `annotation_kits`, one 'annotation_kits.<name>.<key>: ...' line each."""
    out = []
    scorers = config.get("scorers") or {}
    for name, kit in (config.get("annotation_kits") or {}).items():
        at = f"annotation_kits.{name}"
        for key, section in (("model", "models"), ("promptset", "promptsets")):
            known = config.get(section) or {}
            if kit[key] not in known:
                out.append(f"{at}.{key}: unknown {section[:-1]} {kit[key]!r} (defined: {', '.join(known) or 'none'})")
        for j, v in enumerate(kit["variants"]):
            out += problems(f"{at}.variants[{j}]", v, config.get("editors") or {}, config.get("finetuners") or {})
        if len(set(kit["variants"])) != len(kit["variants"]):
            out.append(f"{at}.variants: a variant is listed twice")
        scorer = kit.get("scorer", "human")
        entry = scorers.get(scorer)
        if entry is None or entry.get("kind") != "human":
            out.append(f"{at}.scorer: the ingest writes the labels files of a scorer of kind human; {scorer!r} is "
                       + ("not defined in scorers" if entry is None else f"of kind {entry.get('kind')!r}"))
        elif len(set(kit_labels_paths(kit, entry["labels"]).values())) != len(set(kit["variants"])):
            out.append(f"scorers.{scorer}.labels: {entry['labels']!r} gives the same file for several variants of "
                       f"kit {name!r}; put {{variant}} in it")
    return out
