"""What figures and annotation kits read: the variants of a grid row, the points of a
persistence curve, a kit's files, the config cross-references the figure kinds share.
"""

from __future__ import annotations

from collections.abc import Mapping

from editrobust import paths
from editrobust.tables.spec import ScoreKey
from editrobust.variant_names import at_step, ed, ed_ft, ft, problems

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
    checkpoint `ed-E+ft-F@step`, then the finished fine-tune at its last step (left out when the
    figure stops before it: `until`, with the fine-tune's `last_step`)."""
    e = spec["editor"]
    steps = spec["steps"][finetuner]
    last = (spec.get("last_step") or {}).get(finetuner, steps[-1] if steps else None)
    points = [(0, ed(e))]
    points += [(s, at_step(ed_ft(e, finetuner), s)) for s in steps if s != last]
    if last in steps:
        points.append((last, ed_ft(e, finetuner)))
    return points


def persistence_keys(spec: Mapping) -> list[ScoreKey]:
    m, p, s = spec["model"], spec["promptset"], spec["scorer"]
    variants = ["base"] if spec["base"] else []
    for f in spec["finetuners"]:
        variants += [v for _, v in persistence_points(spec, f)]
    return [ScoreKey(m, v, p, s) for v in dict.fromkeys(variants)]


def entry_reference_problems(at: str, entry: Mapping, config: Mapping, keys) -> list[str]:
    """The names of a figure entry's `keys` (model, editor, promptset, scorer, finetuners) that
    refer to nothing, one 'figures.<name>.<key>: ...' line each."""
    out = []
    for key in keys:
        section = "finetuners" if key == "finetuners" else key + "s"
        known = config.get(section) or {}
        values = entry[key] if key == "finetuners" else [entry[key]]
        for i, name in enumerate(values):
            where = f"{at}.{key}[{i}]" if key == "finetuners" else f"{at}.{key}"
            if name not in known:
                out.append(f"{where}: unknown {section[:-1]} {name!r} (defined: {', '.join(known) or 'none'})")
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
