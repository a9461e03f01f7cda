"""Tables 2, 3 and 5: safety label rates of M, M_ed and M_ed_ft, Δ and Flip, per scorer.

Rows are (scorer, label) with label in the `labels` of the entry (default: safe, unsafe,
undecidable, black); columns are Base (M, M_ed) and, per fine-tuner, [M_ft,] M_ed_ft, Δ, Flip and
McNemar's p. For each label L:
  rate  = share of the variant's images labelled L (`metrics.label_rates`; every image must carry
          one of the four labels, so the rates of a variant sum to 1),
  Δ     = |rate(M_ed) − rate(M_ed_ft)| (`metrics.delta`),
  Flip  = share of (prompt_id, seed) pairs labelled L after fine-tuning but not before
          (`metrics.flip_rate`, the study's "becomes unsafe while it was safe before"),
  p     = McNemar's test of "labelled L" before vs after on the same pairs (`metrics.mcnemar`).
With `ci: true`: percentile CIs of every rate and Flip (prompts resampled; one draw per scorer
shared by its variants) and the |·|-image of the CI of the signed rate change for Δ.
`with_ft: true` adds M_ft (the study's FLUX table); `mcnemar: false` leaves out the p column
(the tables as printed). The study's Tables 2 and 3 are this kind with the `human` scorer;
its Table 5 (the scorers side by side) is the kind `safety_rates`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics import delta, flip_rate, label_rates, mcnemar
from editrobust.metrics.persistence import KEYS
from editrobust.plugins import Param
from editrobust.variant_names import ed, ed_ft, ft

from . import COMMON, NAME, NAME_LIST, NAMES, TableKind, resample
from .layout import TableRows
from .load import SAFETY, TableInputError, check_labels, get, source
from .spec import CLUSTERS, ScoreKey

BASE_GROUP = "Base"


def inputs(spec: Mapping) -> list[ScoreKey]:
    m, p, e = spec["model"], spec["promptset"], spec["editor"]
    keys = []
    for s in spec["scorers"]:
        keys += [ScoreKey(m, "base", p, s), ScoreKey(m, ed(e), p, s)]
        for f in spec["finetuners"]:
            if spec["with_ft"]:
                keys.append(ScoreKey(m, ft(f), p, s))
            keys.append(ScoreKey(m, ed_ft(e, f), p, s))
    return keys


def paired(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Before/after labels side by side, one row per (prompt_id, seed) present in both; the key
    sets must be equal (named otherwise): Flip is only defined on images from the same noise."""
    b = before[[*KEYS, "safety"]].set_index(list(KEYS))
    a = after[[*KEYS, "safety"]].set_index(list(KEYS))
    for frame, name in ((b, source(before)), (a, source(after))):
        dup = frame.index[frame.index.duplicated()]
        if len(dup):
            raise TableInputError(f"{name}: duplicate (prompt_id, seed) {list(dup[:3])}")
    only_b, only_a = b.index.difference(a.index), a.index.difference(b.index)
    if len(only_b) or len(only_a):
        raise TableInputError(f"cannot pair {source(before)} with {source(after)}: (prompt_id, seed) "
                              f"only before {list(only_b[:5])}, only after {list(only_a[:5])}")
    return b.add_suffix("_before").join(a.add_suffix("_after")).reset_index()


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    labels = list(spec["labels"])
    unknown = [label for label in labels if label not in SAFETY]
    if unknown:
        raise TableInputError(f"unknown safety labels {unknown} (known: {', '.join(SAFETY)})")
    cluster = CLUSTERS[spec["cluster"]]
    with_ci, conf = bool(spec["ci"]), spec["confidence"]
    rng = np.random.default_rng(spec["seed"])
    m, p, e = spec["model"], spec["promptset"], spec["editor"]
    names = spec["names"]  # display names of the fine-tuners, e.g. {full: Full-Size}
    rows = TableRows(["scorer", "label"])

    for s in spec["scorers"]:
        def frame(variant: str) -> pd.DataFrame:
            f = get(frames, ScoreKey(m, variant, p, s), "unsafe table")
            check_labels(f, "safety", SAFETY, source(f))
            return f

        base = frame("base")
        ref = resample.pooled(base, pd.Series(1.0, index=base.index), cluster).clusters
        picks = resample.draw(rng, len(ref), spec["bootstrap_resamples"]) if with_ci else None

        def rate(f: pd.DataFrame, label: str):
            """(rate, resampled rates or None) of one label in one variant's frame."""
            value = label_rates(f["safety"], SAFETY)[label]
            if not with_ci:
                return value, None
            cells = resample.pooled(f, (f["safety"] == label).astype(float), cluster, ref, source(f))
            return value, cells.resampled(picks)

        def put(label, group, quantity, value, samples=None, interval=None):
            if with_ci and interval is None and samples is not None:
                interval = resample.interval(samples, conf)
            rows.put((s, label), group, quantity, value, interval if with_ci else None)

        edited = frame(ed(e))
        for label in labels:
            put(label, BASE_GROUP, "M", *rate(base, label))
            put(label, BASE_GROUP, "M_ed", *rate(edited, label))
        for f in spec["finetuners"]:
            group = names.get(f, f)
            after = frame(ed_ft(e, f))
            tuned = frame(ft(f)) if spec["with_ft"] else None
            pairs = paired(edited, after)
            for label in labels:
                if tuned is not None:
                    put(label, group, "M_ft", *rate(tuned, label))
                r_ed, s_ed = rate(edited, label)
                r_after, s_after = rate(after, label)
                put(label, group, "M_ed_ft", r_after, s_after)
                change_ci = resample.abs_interval(*resample.interval(s_after - s_ed, conf)) if with_ci else None
                put(label, group, "Δ", delta(r_ed, r_after), interval=change_ci)
                flip = flip_rate(pairs["safety_before"], pairs["safety_after"], label)
                flip_samples = None
                if with_ci:
                    flipped = ((pairs["safety_after"] == label) & (pairs["safety_before"] != label)).astype(float)
                    flip_samples = resample.pooled(pairs, flipped, cluster, ref, f"{source(edited)} vs {source(after)}").resampled(picks)
                put(label, group, "Flip", flip, flip_samples)
                if spec["mcnemar"]:
                    test = mcnemar((pairs["safety_before"] == label).to_numpy(), (pairs["safety_after"] == label).to_numpy())
                    rows.put((s, label), group, "p (McNemar)", test["p_value"])
    return rows.frame()


class Unsafe(TableKind):
    """Tables 2, 3, 5: safety label rates of M, M_ed, M_ed_ft, Δ, Flip and McNemar's p, per scorer."""

    name = "unsafe"
    params = {
        **COMMON,
        "editor": Param(NAME, required=True, doc="the edit E"),
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`, in column order"),
        "promptset": Param(NAME, required=True, doc="a name from `promptsets`"),
        "scorers": Param(NAME_LIST, required=True, doc="scorers with a `safety` label, one block of rows each"),
        "labels": Param({"type": "array", "minItems": 1, "items": {"enum": list(SAFETY)}}, list(SAFETY),
                        doc="the labels shown"),
        "with_ft": Param({"type": "boolean"}, False, doc="also show M_ft (the study's FLUX table)"),
        "mcnemar": Param({"type": "boolean"}, True,
                         doc="a McNemar p column per fine-tuner (`false`: the study's columns only)"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)
