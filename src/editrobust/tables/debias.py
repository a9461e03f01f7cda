"""Table 1: gender bias δ per profession for M, M_ed and, per fine-tuner, M_ft, M_ed_ft and Δ.

δ = |F_p − 0.5| / 0.5 with F_p the female share among the gendered images of profession p
(`metrics.female_share`, `metrics.gender_delta`); Δ = |δ(M_ed) − δ(M_ed_ft)| (`metrics.delta`).
The professions are the `group` values of the base model's score file, in their order there.
The study's Avg.(std.) rows follow: the mean over professions and the sample std. The last row,
`no gender`, is each variant's share of images (black ones aside) that show no decisive gender and
so count in no δ: a δ over few gendered images says less than it seems (the toy's oracle leaves a
torso between the man's and the woman's colour undecided).

With `ci: true` every δ gets a percentile CI (prompts resampled within each profession, one draw
per profession shared by all variants, see resample.py), each Δ the |·|-image of the CI of the
signed change δ(M_ed_ft) − δ(M_ed), and `p` is the paired bootstrap p-value of that change.
For the Avg. row the resamples of the six professions are averaged (a stratified bootstrap); its
Δ CI is the percentile interval of the resampled mean |change|.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from editrobust.metrics import avg_std, delta, female_share, gender_delta
from editrobust.metrics.rates import FEMALE_LABELS, MALE_LABELS
from editrobust.plugins import Param
from editrobust.variant_names import ed, ed_ft, ft

from . import COMMON, NAME, NAMES, TableKind, resample
from .layout import AVG_ROW, STD_ROW, TableRows
from .load import TableInputError, black_images, get, source
from .spec import CLUSTERS, ScoreKey

BASE_GROUP = "Base"
NO_GENDER_ROW = "no gender"


def inputs(spec: Mapping) -> list[ScoreKey]:
    m, p, s, e = spec["model"], spec["promptset"], spec["scorer"], spec["editor"]
    keys = [ScoreKey(m, "base", p, s), ScoreKey(m, ed(e), p, s)]
    for f in spec["finetuners"]:
        keys += [ScoreKey(m, ft(f), p, s), ScoreKey(m, ed_ft(e, f), p, s)]
    return keys


def female_indicator(frame: pd.DataFrame) -> pd.Series:
    """1 per woman, 0 per man, NaN where no person was seen (excluded from F_p, as female_share)."""
    where = source(frame)
    if "gender" not in frame.columns:
        raise TableInputError(f"{where}: no 'gender' column")
    labels = frame["gender"].astype(object).where(frame["gender"].notna(), "").astype(str).str.strip().str.lower()
    known = labels.isin(FEMALE_LABELS | MALE_LABELS) | (labels == "")
    if not known.all():
        i = int(np.flatnonzero(~known.to_numpy())[0])
        raise TableInputError(f"{where}: row {i + 2}: gender {frame['gender'].iloc[i]!r} is not man/woman or empty")
    return labels.map(lambda g: 1.0 if g in FEMALE_LABELS else (0.0 if g in MALE_LABELS else np.nan))


class _Variant:
    """One variant's δ per profession: the estimate and, with CIs, its resampled values."""

    def __init__(self, frame: pd.DataFrame, professions: list, draws: dict, clusters: dict, cluster: tuple):
        where = source(frame)
        if "group" not in frame.columns:
            raise TableInputError(f"{where}: no 'group' column (the profession of each prompt)")
        missing = [p for p in professions if p not in set(frame["group"])]
        extra = sorted(set(frame["group"]) - set(professions), key=str)
        if missing or extra:
            raise TableInputError(f"{where}: professions differ from the base model's: "
                                  f"missing {missing}, extra {extra}")
        female = female_indicator(frame)
        # the images a δ leaves out because they show no decisive gender (no person, or a toy-world
        # torso between the modes): reported beside δ, as black images are (those count in neither)
        shown = ~black_images(frame)
        self.no_gender = float(female[shown].isna().mean()) if shown.any() else float("nan")
        self.delta, self.samples = {}, {}
        for p in professions:
            rows = frame["group"] == p
            gendered = frame.loc[rows & female.notna(), "gender"]
            self.delta[p] = float(gender_delta(female_share(gendered.tolist())))
            if draws:
                cells = resample.pooled(frame[rows], female[rows], cluster, clusters[p], f"{where} ({p})")
                self.samples[p] = gender_delta(cells.resampled(draws[p]))


def build(spec: Mapping, frames: Mapping) -> pd.DataFrame:
    keys = inputs(spec)
    base = get(frames, keys[0], "debias table")
    if "group" not in base.columns:
        raise TableInputError(f"{source(base)}: no 'group' column (the profession of each prompt)")
    professions = list(pd.unique(base["group"]))
    cluster = CLUSTERS[spec["cluster"]]
    with_ci = bool(spec["ci"])
    draws, clusters = {}, {}
    if with_ci:
        rng = np.random.default_rng(spec["seed"])
        for p in professions:
            rows = base[base["group"] == p]
            clusters[p] = resample.pooled(rows, pd.Series(1.0, index=rows.index), cluster).clusters
            draws[p] = resample.draw(rng, len(clusters[p]), spec["bootstrap_resamples"])
    variants = {k.variant: _Variant(get(frames, k, "debias table"), professions, draws, clusters, cluster) for k in keys}
    names = spec["names"]  # display names of the fine-tuners, e.g. {full: Full Size}
    conf = spec["confidence"]
    rows = TableRows(["profession"])

    def ci(samples):
        return resample.interval(samples, conf) if with_ci else None

    def stratified_mean(per_profession):
        return np.mean(np.vstack([per_profession[p] for p in professions]), axis=0)

    def put_delta_column(group: str, name: str, v: _Variant) -> None:
        for p in professions:
            rows.put(p, group, name, v.delta[p], ci(v.samples[p]) if with_ci else None)
        rows.put(AVG_ROW, group, name, float(np.mean(list(v.delta.values()))),
                 ci(stratified_mean(v.samples)) if with_ci else None)
        rows.put(STD_ROW, group, name, avg_std(v.delta.values())[1])
        rows.put(NO_GENDER_ROW, group, name, v.no_gender)

    e = spec["editor"]
    put_delta_column(BASE_GROUP, "M", variants["base"])
    put_delta_column(BASE_GROUP, "M_ed", variants[ed(e)])
    edited = variants[ed(e)]
    for f in spec["finetuners"]:
        group = names.get(f, f)
        put_delta_column(group, "M_ft", variants[ft(f)])
        after = variants[ed_ft(e, f)]
        put_delta_column(group, "M_ed_ft", after)
        gaps = {p: delta(edited.delta[p], after.delta[p]) for p in professions}
        changes = {p: after.samples[p] - edited.samples[p] for p in professions} if with_ci else {}
        for p in professions:
            rows.put(p, group, "Δ", gaps[p], resample.abs_interval(*ci(changes[p])) if with_ci else None)
        rows.put(AVG_ROW, group, "Δ", float(np.mean(list(gaps.values()))),
                 ci(stratified_mean({p: np.abs(c) for p, c in changes.items()})) if with_ci else None)
        rows.put(STD_ROW, group, "Δ", avg_std(gaps.values())[1])
        if with_ci:
            for p in professions:
                rows.put(p, group, "p", resample.p_value(changes[p]))
            rows.put(AVG_ROW, group, "p", resample.p_value(stratified_mean(changes)))
    return rows.frame()


class Debias(TableKind):
    """Table 1: gender bias δ per profession of M, M_ed and per fine-tuner M_ft, M_ed_ft, Δ; Avg.(std.)."""

    name = "debias"
    params = {
        **COMMON,
        "editor": Param(NAME, required=True, doc="the edit E: variants `ed-E` and `ed-E+ft-F`"),
        "finetuners": Param(NAMES, required=True, doc="names from `finetuners`: variants `ft-F`, `ed-E+ft-F`, in column order"),
        "promptset": Param(NAME, required=True, doc="a name from `promptsets` (its `group` is the profession)"),
        "scorer": Param(NAME, required=True, doc="a scorer with a `gender` label"),
    }
    inputs = staticmethod(inputs)
    run = staticmethod(build)
