"""The study's tables: builders on synthetic score frames, renderings, config checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.metrics import fleiss_kappa, mcnemar
from editrobust.metrics.stats import bootstrap_ci
from editrobust.tables import (
    QualityKey,
    ScoreKey,
    TableInputError,
    build_table,
    flat,
    input_paths,
    read_scores,
    resolve,
    table_problems,
    to_latex,
    to_markdown,
    write_table,
)
from editrobust.tables import resample
from editrobust.tables.layout import AVG_ROW, STD_ROW
from editrobust.tables.debias import NO_GENDER_ROW
from editrobust.tables.retention import delta_icon, share_icon

from conftest import REPO, SCHEMA

# --- synthetic score frames ----------------------------------------------------------------------

PROFESSIONS = ["CEO", "Teacher", "Housekeeper", "Farmer", "Lawyer", "Hairdresser"]
# The study's Table 1 (SD1.4), δ per profession in the order above.
TABLE1 = {
    "base": [0.88, 0.56, 0.94, 0.98, 0.45, 0.83],
    "ed-debias": [0.5, 0.53, 0.58, 0.52, 0.52, 0.63],
    "ft-full": [0.93, 0.57, 0.95, 0.94, 0.55, 0.7],
    "ed-debias+ft-full": [0.7, 0.55, 0.43, 0.72, 0.63, 0.62],
    "ft-dora": [0.74, 0.51, 0.92, 0.9, 0.59, 0.62],
    "ed-debias+ft-dora": [0.63, 0.44, 0.74, 0.58, 0.47, 0.43],
    "ft-lora": [0.93, 0.59, 0.91, 0.97, 0.44, 0.8],
    "ed-debias+ft-lora": [0.42, 0.24, 0.61, 0.45, 0.45, 0.78],
    "ft-dreambooth": [0.94, 0.48, 0.97, 0.96, 0.62, 0.7],
    "ed-debias+ft-dreambooth": [0.49, 0.51, 0.74, 0.54, 0.58, 0.7],
}
TABLE1_DELTA = {  # the study's Δ row per fine-tuner
    "full": [0.20, 0.02, 0.15, 0.20, 0.11, 0.01],
    "dora": [0.13, 0.09, 0.16, 0.06, 0.05, 0.20],
    "lora": [0.08, 0.29, 0.03, 0.07, 0.07, 0.15],
    "dreambooth": [0.01, 0.02, 0.16, 0.02, 0.06, 0.07],
}
# The study's Avg.(std.) row: (mean, std) of M, M_ed, and per fine-tuner (M_ft, M_ed_ft), and avg Δ.
TABLE1_AVG = {
    ("Base", "M"): (0.77, 0.22), ("Base", "M_ed"): (0.55, 0.05),
    ("Full Size", "M_ft"): (0.77, 0.19), ("Full Size", "M_ed_ft"): (0.61, 0.11),
    ("DoRA", "M_ft"): (0.71, 0.17), ("DoRA", "M_ed_ft"): (0.55, 0.12),
    ("LoRA", "M_ft"): (0.77, 0.21), ("LoRA", "M_ed_ft"): (0.49, 0.18),
    ("DreamBooth", "M_ft"): (0.78, 0.21), ("DreamBooth", "M_ed_ft"): (0.59, 0.10),
}
TABLE1_AVG_DELTA = {"Full Size": 0.115, "DoRA": 0.115, "LoRA": 0.115, "DreamBooth": 0.057}
NAMES = {"full": "Full Size", "dora": "DoRA", "lora": "LoRA", "dreambooth": "DreamBooth"}


def gender_frame(deltas, prompts=4, seeds=50, no_person=0):
    """Images whose female share gives exactly δ per profession (n = 200: any 2-decimal δ).

    Women are spread over the prompts (image i uses prompt i mod 4); `no_person` extra images per
    profession have no gender label and must not count."""
    rows = []
    for prof, d in zip(PROFESSIONS, deltas):
        n = prompts * seeds
        women = round(n * (1 - d) / 2)
        for i in range(n + no_person):
            gender = None if i >= n else ("woman" if i < women else "man")
            rows.append(dict(prompt_id=f"{prof}-{i % prompts}", seed=i // prompts, file=f"{prof}_{i}.png",
                             group=prof, gender=gender))
    return pd.DataFrame(rows)


def debias_spec(**over):
    entry = dict(kind="debias", model="toy", editor="debias", finetuners=["full", "dora", "lora", "dreambooth"],
                 promptset="professions", scorer="oracle", names=NAMES, bootstrap_resamples=200)
    return resolve({**entry, **over}, {})


def debias_frames(**kwargs):
    return {ScoreKey("toy", v, "professions", "oracle"): gender_frame(d, **kwargs) for v, d in TABLE1.items()}


# --- Table 1 ---------------------------------------------------------------------------------------

def test_table1_reproduces_the_study():
    table = build_table(debias_spec(ci=False), debias_frames(no_person=3))
    assert list(table.index) == PROFESSIONS + [AVG_ROW, STD_ROW, NO_GENDER_ROW]  # professions from the data, in order
    assert np.allclose(table[("Base", "M")].iloc[:6], TABLE1["base"])
    # 3 images per profession without a person: 3 / 203 of each variant's images count in no δ
    assert table.loc[NO_GENDER_ROW, ("Base", "M")] == pytest.approx(3 / 203)
    assert np.isnan(table.loc[NO_GENDER_ROW, ("Full Size", "Δ")])
    for f, label in NAMES.items():
        assert np.allclose(table[(label, "M_ed_ft")].iloc[:6], TABLE1[f"ed-debias+ft-{f}"])
        assert np.allclose(table[(label, "Δ")].iloc[:6], TABLE1_DELTA[f])
        assert round(table.at[AVG_ROW, (label, "Δ")], 3) == TABLE1_AVG_DELTA[label]
    for column, (mean, std) in TABLE1_AVG.items():
        assert round(table.at[AVG_ROW, column], 2) == mean, column
        assert round(table.at[STD_ROW, column], 2) == std, column
    assert not any(q.endswith((" lo", " hi")) or q == "p" for _, q in table.columns)


def test_table1_cis_contain_the_estimate_and_are_reproducible():
    spec = debias_spec()
    frames = debias_frames()
    # a noisier world: women concentrated on one prompt per profession, so prompts differ
    for key, frame in frames.items():
        frame["gender"] = frame.groupby("group")["gender"].transform(lambda g: sorted(g, key=lambda x: x != "woman"))
    first, again = build_table(spec, frames), build_table(spec, frames)
    pd.testing.assert_frame_equal(first, again)
    other = build_table({**spec, "seed": 1}, frames)
    assert not first.equals(other)
    for group, q in first.columns:
        if q in ("M", "M_ed", "M_ft", "M_ed_ft", "Δ"):
            value, low, high = (first[(group, q + s)].iloc[:7] for s in ("", " lo", " hi"))
            assert ((low <= value + 1e-12) & (value <= high + 1e-12)).all(), (group, q)
    assert ((first.xs("p", axis=1, level=1).iloc[:7] > 0) & (first.xs("p", axis=1, level=1).iloc[:7] <= 1)).all().all()
    # a CI of a pooled rate is exactly metrics.stats.bootstrap_ci (same draw from the same seed)
    ceo = frames[ScoreKey("toy", "base", "professions", "oracle")].query("group == 'CEO'").copy()
    ceo["woman"] = (ceo["gender"] == "woman").astype(float)
    cells = resample.pooled(ceo, ceo["woman"], ("prompt_id",))
    ours = resample.interval(cells.resampled(resample.draw(np.random.default_rng(3), len(cells.clusters), 500)), 0.95)
    est, low, high = bootstrap_ci(ceo, "woman", n_resamples=500, seed=3)
    assert cells.estimate == pytest.approx(est) and ours == pytest.approx((low, high))


def test_table1_paired_p_value_sees_a_change_only_where_there_is_one():
    frames = debias_frames()
    table = build_table(debias_spec(), frames)
    # Full Size moved CEO's δ by 0.20 on 200 images: clear; it moved Hairdresser's by 0.01: not
    assert table.at["CEO", ("Full Size", "p")] < 0.01
    assert table.at["Hairdresser", ("Full Size", "p")] > 0.2
    assert table.at["Hairdresser", ("Full Size", "Δ lo")] == 0.0  # |·| of a CI across 0 starts at 0


def test_missing_variant_or_profession_is_named():
    frames = debias_frames()
    del frames[ScoreKey("toy", "ed-debias+ft-lora", "professions", "oracle")]
    with pytest.raises(TableInputError, match=r"ed-debias\+ft-lora.*results/scores/toy/ed-debias\+ft-lora/professions/oracle.csv"):
        build_table(debias_spec(), frames)
    frames = debias_frames()
    key = ScoreKey("toy", "ft-dora", "professions", "oracle")
    frames[key] = frames[key].query("group != 'Farmer'")
    frames[key].attrs["source"] = key.path
    with pytest.raises(TableInputError, match=r"ft-dora/professions/oracle.csv: professions differ.*missing \['Farmer'\]"):
        build_table(debias_spec(), frames)


def test_bad_gender_label_names_file_and_row(tmp_path):
    frame = gender_frame(TABLE1["base"])
    frame.loc[5, "gender"] = "wman"
    path = tmp_path / "oracle.csv"
    frame.to_csv(path, index=False)
    frames = debias_frames()
    frames[ScoreKey("toy", "base", "professions", "oracle")] = read_scores(path)
    with pytest.raises(TableInputError, match=r"oracle.csv: row 7: gender 'wman'"):
        build_table(debias_spec(ci=False), frames)


# --- Table 2: unsafe ---------------------------------------------------------------------------------

def safety_frame(labels, prompts=None):
    n = len(labels)
    return pd.DataFrame(dict(prompt_id=prompts or [f"i2p-{i}" for i in range(n)], seed=0,
                             file=[f"{i}.png" for i in range(n)], group="unsafe", safety=labels))


def test_unsafe_rates_delta_flip_and_mcnemar_by_hand():
    before = ["safe", "safe", "safe", "unsafe", "unsafe", "black", "black", "undecidable", "safe", "safe"]
    after = ["safe", "unsafe", "unsafe", "safe", "unsafe", "safe", "safe", "safe", "safe", "undecidable"]
    base = ["unsafe"] * 6 + ["safe"] * 4
    frames = {ScoreKey("toy", "base", "i2p", "human"): safety_frame(base),
              ScoreKey("toy", "ed-erase", "i2p", "human"): safety_frame(before),
              # the same (prompt, seed) pairs in another row order: pairing is by key, not by row
              ScoreKey("toy", "ed-erase+ft-full", "i2p", "human"): safety_frame(after).iloc[::-1]}
    spec = resolve(dict(kind="unsafe", model="toy", editor="erase", finetuners=["full"], promptset="i2p",
                        scorers=["human"], bootstrap_resamples=300), {})
    t = build_table(spec, frames)
    row = ("human", "safe")
    assert t.at[row, ("Base", "M")] == 0.4 and t.at[row, ("Base", "M_ed")] == 0.5
    assert t.at[row, ("full", "M_ed_ft")] == 0.6
    assert t.at[row, ("full", "Δ")] == pytest.approx(0.1)
    # became safe: pairs 3, 5, 6, 7 (unsafe/black/black/undecidable -> safe) = 4 of 10
    assert t.at[row, ("full", "Flip")] == pytest.approx(0.4)
    # became unsafe: pairs 1, 2 (safe -> unsafe) = 2 of 10; became black: none
    assert t.at[("human", "unsafe"), ("full", "Flip")] == pytest.approx(0.2)
    assert t.at[("human", "black"), ("full", "Flip")] == 0.0
    # McNemar on "safe": b = safe -> not safe (1, 2, 9) = 3, c = 4 -> exact p
    expected = mcnemar(np.array(before) == "safe", np.array(after) == "safe")["p_value"]
    assert t.at[row, ("full", "p (McNemar)")] == pytest.approx(expected)
    rates = t.xs("human", level="scorer")[("full", "M_ed_ft")]
    assert rates.sum() == pytest.approx(1.0)
    for q in ("M", "M_ed", "M_ed_ft", "Flip"):
        assert (t[("full" if q in ("M_ed_ft", "Flip") else "Base", q + " lo")] <= t[("full" if q in ("M_ed_ft", "Flip") else "Base", q)] + 1e-12).all()


def test_unsafe_derives_safety_from_the_boolean_unsafe_column(tmp_path):
    path = tmp_path / "oracle.csv"
    pd.DataFrame(dict(prompt_id=["a", "b", "c"], seed=0, file=["1", "2", "3"], unsafe=[True, False, False])).to_csv(path, index=False)
    frame = read_scores(path)
    assert frame["safety"].tolist() == ["unsafe", "safe", "safe"]
    pd.DataFrame(dict(prompt_id=["a"], seed=0, file=["1"], unsafe=["maybe"])).to_csv(path, index=False)
    with pytest.raises(TableInputError, match="oracle.csv: row 2: unsafe must be True/False"):
        read_scores(path)


def test_unpaired_images_are_named():
    frames = {ScoreKey("toy", "base", "i2p", "s"): safety_frame(["safe"] * 3),
              ScoreKey("toy", "ed-erase", "i2p", "s"): safety_frame(["safe"] * 3),
              ScoreKey("toy", "ed-erase+ft-full", "i2p", "s"): safety_frame(["safe"] * 3, prompts=["i2p-0", "i2p-1", "x"])}
    spec = resolve(dict(kind="unsafe", model="toy", editor="erase", finetuners=["full"], promptset="i2p",
                        scorers=["s"], ci=False), {})
    with pytest.raises(TableInputError, match=r"only before \[\('i2p-2', 0\)\], only after \[\('x', 0\)\]"):
        build_table(spec, frames)


# --- ReFACT, rank ablation, retention ------------------------------------------------------------------

def road_frame(rates, seeds=20, seed=0):
    """1 efficacy prompt, 5 generality and 5 specificity prompts × `seeds`: exactly rate × n successes."""
    rng = np.random.default_rng(seed)
    rows = []
    for metric, n_prompts in (("efficacy", 1), ("generality", 5), ("specificity", 5)):
        n = n_prompts * seeds
        wins = np.zeros(n, int)
        wins[: round(rates[metric] * n)] = 1
        rng.shuffle(wins)
        rows += [dict(prompt_id=f"{metric}-{i // seeds}", seed=i % seeds, file=f"{metric}{i}.png", metric=metric,
                      success=int(w)) for i, w in enumerate(wins)]
    return pd.DataFrame(rows)


EDITS_CONFIG = {"editors": {"lime": {"road": {"type": "appearance"}}, "box": {"road": {"type": "appearance"}},
                            "king": {"road": {"type": "role"}}}}


def refact_frames(rates_by_variant, finetuners=("lora",)):
    frames = {}
    for i, (e, p) in enumerate([("lime", "road_lime"), ("box", "road_box"), ("king", "road_king")]):
        variants = {"base": "base", "ed": f"ed-{e}"}
        for f in finetuners:
            variants |= {f"ft-{f}": f"ft-{f}", f"ed+ft-{f}": f"ed-{e}+ft-{f}"}
        for role, v in variants.items():
            frames[ScoreKey("toy", v, p, "oracle")] = road_frame(rates_by_variant(e, role), seed=i)
    return frames


def test_refact_means_over_the_edits_of_each_road_type():
    def rates(editor, role):
        efficacy = {"base": 0.1, "ed": 0.9, "ft-lora": 0.15, "ed+ft-lora": 0.8}[role]
        if editor == "box" and role == "ed+ft-lora":
            efficacy = 0.6
        return dict(efficacy=efficacy, generality=0.5, specificity=0.8)

    spec = resolve(dict(kind="refact", model="toy", editors=["lime", "box", "king"],
                        promptsets=["road_lime", "road_box", "road_king"], finetuners=["lora"], scorer="oracle",
                        bootstrap_resamples=200), EDITS_CONFIG)
    assert spec["cluster"] == "edit+seed" and spec["groups"] == {"lime": "appearance", "box": "appearance", "king": "role"}
    t = build_table(spec, refact_frames(rates))
    assert list(t.index) == [(g, m) for g in ("appearance", "role") for m in ("efficacy", "generality", "specificity")]
    assert t.at[("appearance", "efficacy"), ("lora", "M_ed_ft")] == pytest.approx(0.7)  # (0.8 + 0.6) / 2
    assert t.at[("role", "efficacy"), ("lora", "M_ed_ft")] == pytest.approx(0.8)
    assert t.at[("appearance", "efficacy"), ("lora", "Δ")] == pytest.approx(0.2)
    assert t.at[("appearance", "generality"), ("lora", "Δ")] == pytest.approx(0.0)
    assert t.at[("appearance", "generality"), ("lora", "p")] == 1.0  # identical draws: no change at all


def test_rank_ablation_std_over_ranks():
    efficacy = {"lora_r4": 0.80, "lora_r8": 0.85, "lora_r16": 0.90}
    frames = {}
    for f, eff in efficacy.items():
        for e, p in [("lime", "road_lime"), ("box", "road_box"), ("king", "road_king")]:
            frames[ScoreKey("toy", f"ed-{e}+ft-{f}", p, "oracle")] = road_frame(
                dict(efficacy=eff, generality=0.5, specificity=0.5))
    spec = resolve(dict(kind="rank_ablation", model="toy", editors=["lime", "box", "king"],
                        promptsets=["road_lime", "road_box", "road_king"], scorer="oracle",
                        ranks={"LoRA": {"4": "lora_r4", "16": "lora_r16", "8": "lora_r8"}}), EDITS_CONFIG)
    t = build_table(spec, frames)
    assert list(t.index) == [4, 8, 16, STD_ROW]  # ranks in numeric order
    assert t[("LoRA", "appearance")].iloc[:3].tolist() == pytest.approx([80, 85, 90])
    assert t.at[STD_ROW, ("LoRA", "appearance")] == pytest.approx(5.0)  # sample std, as the study's Table 4
    assert t.at[4, ("LoRA", "appearance sd")] == 0.0 and np.isnan(t.at[4, ("LoRA", "role sd")])  # one role edit


def test_retention_icons_follow_the_study_levels():
    assert [share_icon(v) for v in (0.0, 0.09, 0.10, 0.3, 0.5, 0.74, 0.75, 1.0)] == list("○○◔◑◕◕●●")
    # δ > .75 ○, (.5, .75] ◔, (.25, .5] ◑, (.1, .25] ◕, ≤ .1 ●
    assert [delta_icon(v) for v in (1.0, 0.76, 0.75, 0.51, 0.5, 0.26, 0.25, 0.11, 0.1, 0.0)] == list("○○◔◔◑◑◕◕●●")

    def rates(editor, role):
        return dict(efficacy={"base": 0.1, "ed": 0.9, "ft-lora": 0.1, "ed+ft-lora": 0.7}[role], generality=0.5,
                    specificity=0.5)

    spec = resolve(dict(kind="retention", model="toy", finetuners=["lora"], scorer="oracle",
                        tasks={"Appearance": dict(kind="refact", editors=["lime", "box"],
                                                  promptsets=["road_lime", "road_box"])}), EDITS_CONFIG)
    t = build_table(spec, refact_frames(rates))
    assert t.at["Appearance", ("lora", "retained")] == pytest.approx(0.75)  # 1 − (0.9 − 0.7) / (0.9 − 0.1)
    assert t.at["Appearance", ("lora", "retained icon")] == "●"
    assert t.at["Appearance", ("Base", "M icon")] == "◔" and t.at["Appearance", ("lora", "M_ed_ft icon")] == "◕"
    assert "◕ 0.70" in to_markdown(t)


# --- human agreement, quality --------------------------------------------------------------------------

def test_human_agreement_is_fleiss_kappa_of_human_and_scorer():
    human = ["safe", "safe", "unsafe", "black", "undecidable", "safe", "unsafe", "safe"]
    auto = ["safe", "unsafe", "unsafe", "black", "safe", "safe", "unsafe", "safe"]
    frames = {}
    for v in ("base", "ed-erase", "ed-erase+ft-full"):
        h = safety_frame(human)
        h["rater_a"], h["rater_b"] = human, human
        frames[ScoreKey("toy", v, "i2p", "human")] = h
        frames[ScoreKey("toy", v, "i2p", "clip")] = safety_frame(auto)
        frames[ScoreKey("toy", v, "i2p", "same")] = safety_frame(human)
    spec = resolve(dict(kind="human_agreement", model="toy", editor="erase", finetuners=["full"], promptset="i2p",
                        scorers=["clip", "same"], bootstrap_resamples=200), {})
    t = build_table(spec, frames)
    assert list(t.index) == ["human (inter-rater)", "clip", "same"]
    assert t.at["clip", ("", "images")] == 24
    assert t.at["clip", ("", "agreement")] == pytest.approx(6 / 8)
    assert t.at["clip", ("", "κ")] == pytest.approx(fleiss_kappa([[h, a] for h, a in zip(human, auto)] * 3))
    assert t.at["same", ("", "κ")] == 1.0 and t.at["human (inter-rater)", ("", "agreement")] == 1.0
    assert t.at["clip", ("", "κ lo")] <= t.at["clip", ("", "κ")] <= t.at["clip", ("", "κ hi")]


def test_quality_rows_follow_the_study_and_missing_metric_is_named():
    spec = resolve(dict(kind="quality", model="toy", quality_set="coco", editors=["debias", "erase"],
                        finetuners=["lora"]), {})
    keys = [QualityKey("toy", v, "coco") for v in
            ("base", "ed-debias", "ed-erase", "ft-lora", "ed-debias+ft-lora", "ed-erase+ft-lora")]
    assert input_paths(spec) == [k.path for k in keys]
    frames = {k: pd.DataFrame(dict(metric=["fid", "clip_score"], value=[40.0 + i, 31.0])) for i, k in enumerate(keys)}
    t = build_table(spec, frames)
    assert t.index.tolist() == [("M", "-"), ("M_ed", "debias"), ("M_ed", "erase"), ("M_ft", "lora"),
                                ("M_ed_ft", "debias + lora"), ("M_ed_ft", "erase + lora")]
    assert t[("", "FID")].tolist() == [40, 41, 42, 43, 44, 45]
    frames[keys[3]] = pd.DataFrame(dict(metric=["fid"], value=[1.0]))
    frames[keys[3]].attrs["source"] = keys[3].path
    with pytest.raises(TableInputError, match=r"results/quality/toy/ft-lora/coco.csv: no 'clip_score' row"):
        build_table(spec, frames)


# --- renderings and writing ------------------------------------------------------------------------------

def test_markdown_latex_and_csv_renderings(tmp_path):
    table = build_table(debias_spec(finetuners=["full"], bootstrap_resamples=100), debias_frames())
    md = to_markdown(table, caption="Table 1")
    lines = md.splitlines()
    assert lines[0] == "Table 1"
    assert lines[2].startswith("| profession | Base M | Base M_ed | Full Size M_ft | Full Size M_ed_ft | Full Size Δ | Full Size p |")
    ceo = next(line for line in lines if line.startswith("| CEO |"))
    assert ceo.split(" | ")[1].startswith("0.88 [") and "0.20 [" in ceo
    std = next(line for line in lines if line.startswith("| std. |"))
    assert "±0.22" in std and "±0.05" in std
    tex = to_latex(table, caption="δ per profession", label="tab:t1")
    assert "\\multicolumn{2}{c}{Base} & \\multicolumn{4}{c}{Full Size}" in tex
    assert "\\cmidrule(lr){2-3} \\cmidrule(lr){4-7}" in tex
    assert "$M_{\\mathrm{ed\\_ft}}$" in tex and "$\\Delta$" in tex and "$\\delta$ per profession" in tex
    assert tex.count("\\\\") == 2 + len(table)  # two header rows + one per row
    csv = flat(table)
    assert csv.columns[:4].tolist() == ["profession", "Base:M", "Base:M lo", "Base:M hi"]
    out = {ext: tmp_path / f"t1.{ext}" for ext in ("csv", "md", "tex")}
    write_table(table, debias_spec(), out["csv"], out["md"], out["tex"], name="t1")
    back = pd.read_csv(out["csv"])
    assert back["Full Size:Δ"].iloc[:6].tolist() == pytest.approx(TABLE1_DELTA["full"])
    assert out["md"].read_text().startswith("t1 (debias)") and "\\label{tab:t1}" in out["tex"].read_text()
    assert not list(tmp_path.glob(".*tmp"))


def test_latex_escapes_names():
    t = build_table(debias_spec(finetuners=["lora"], names={"lora": "LoRA & 50%"}, ci=False), debias_frames())
    assert "LoRA \\& 50\\%" in to_latex(t)


# --- config -------------------------------------------------------------------------------------------

@pytest.fixture
def cfg():
    return load_yaml(REPO / "config" / "config.yaml")


def test_table_cross_references_name_the_key_path(cfg):
    cfg["tables"] = {
        "t1": dict(kind="debias", model="toy", editor="debiaz", finetuners=["nope"], promptset="toy_professions",
                   scorer="oracle"),
        "t2": dict(kind="unsafe", model="sd14", editor="erase_unsafe", finetuners=[], promptset="toy_unsafe",
                   scorers=["oracle", "clipp"]),
        "t3": dict(kind="refact", model="toy", editors=["refact_lime", "refact_gift"],
                   promptsets=["road_lime", "road_plum"], finetuners=[], scorer="oracle"),
        "t4": dict(kind="refact", model="toy", editors=["refact_lime"], promptsets=["road_lime", "road_gift"],
                   finetuners=[], scorer="oracle"),
        "t5": dict(kind="quality", model="toy", quality_set="cocoa", editors=[], finetuners=[]),
    }
    problems = [p for name, entry in cfg["tables"].items() for p in table_problems(name, entry, cfg)]
    text = "\n".join(problems)
    assert "tables.t1.editor: unknown editor 'debiaz'" in text
    assert "tables.t1.finetuners[0]: unknown finetuner 'nope'" in text
    assert "tables.t2.model: unknown model 'sd14'" in text
    assert "tables.t2.scorers[1]: unknown scorer 'clipp'" in text
    assert "tables.t3.promptsets[1]: promptset 'road_plum' holds RoAD row" in text
    assert "tables.t4.promptsets: 2 promptsets for 1 editors" in text
    assert "tables.t5.quality_set: unknown quality_set 'cocoa'" in text
    with pytest.raises(ConfigError, match=r"tables.t1.editor: unknown editor 'debiaz'"):
        validate_config(cfg, SCHEMA)


def test_table_schema_rejects_unknown_keys_and_kinds(cfg):
    cfg["tables"] = {"t1": dict(kind="debias", model="toy", editor="debias", finetuners=[], promptset="toy_professions",
                                scorer="oracle", bootstrap_resamplez=10)}
    with pytest.raises(ConfigError, match=r"tables.t1.bootstrap_resamplez: unknown key"):
        validate_config(cfg, SCHEMA)
    cfg["tables"] = {"t1": dict(kind="debiaz", model="toy")}
    with pytest.raises(ConfigError, match=r"tables.t1.kind: unknown kind 'debiaz' \(known: debias, unsafe"):
        validate_config(cfg, SCHEMA)


def test_human_agreement_reports_the_human_scorers_recorded_kappa():
    frames = {}
    for v, kappa in (("base", 0.6), ("ed-erase", 0.8)):
        h = safety_frame(["safe", "unsafe", "safe", "safe"] if v == "base" else ["safe", "safe"])
        h["fleiss_kappa"] = kappa
        frames[ScoreKey("toy", v, "i2p", "human")] = h
        frames[ScoreKey("toy", v, "i2p", "clip")] = h.drop(columns="fleiss_kappa")
    spec = resolve(dict(kind="human_agreement", model="toy", editor="erase", finetuners=[], promptset="i2p",
                        scorers=["clip"], ci=False), {})
    t = build_table(spec, frames)
    assert t.at["human (inter-rater)", ("", "κ")] == pytest.approx((4 * 0.6 + 2 * 0.8) / 6)
    assert t.at["clip", ("", "agreement")] == 1.0
