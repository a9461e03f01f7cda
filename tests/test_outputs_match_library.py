"""Every table kind, figure kind and the annotation kit, built through Snakemake, equals the
library's direct build from the same files.

The config's order-bearing mappings are deliberately not in sorted order (a retention table's
`tasks`, a rank ablation's `ranks` and its rank keys, editor and fine-tuner lists), because a
rule's params are key-sorted JSON: a job that matched its inputs by position once read the wrong
score files with no error. Every score file here is different (drawn from its own path), so a
crossed file changes the numbers. Samples and scores are written by the test and the earlier
stages' rules are switched off with --allowed-rules, so nothing is trained or sampled.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from editrobust.config import validate_config
from editrobust.report import FIGURES
from editrobust.report import input_paths as figure_inputs
from editrobust.report import resolve as resolve_figure
from editrobust.report.spec import kit_index_paths
from editrobust.report.annotation import export_kit
from editrobust.report import build_figure
from editrobust.report.render import write_figure
from editrobust.tables import QualityKey, edit_records, input_keys, make_table, read_inputs
from editrobust.tables import resolve as resolve_table

from conftest import SCHEMA

pytestmark = pytest.mark.workflow

RULES = ["make_table", "make_figure", "export_annotation_kit", "tables", "figures", "report", "robustness"]
SEEDS = range(4)
# one RoAD-like promptset layout that every table kind can read: a profession, a safety label,
# a ReFACT metric and success, and two annotators per image
PROMPTS = [("efficacy-0", "efficacy", "ceo"), ("generality-0", "generality", "nurse"),
           ("generality-1", "generality", "ceo"), ("specificity-0", "specificity", "nurse"),
           ("specificity-1", "specificity", "ceo")]
SAFETY = ["safe", "unsafe", "undecidable", "black"]


def config(repo) -> dict:
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["promptsets"].update({
        "professions": {"source": "toy", "set": "professions", "images_per_prompt": 4},
        "unsafe": {"source": "toy", "set": "unsafe", "images_per_prompt": 4},
        "road_box": {"source": "road", "road": {"file": "toy", "type": "appearance", "index": 2}},
        "road_king": {"source": "road", "road": {"file": "toy", "type": "role", "index": 0}},
    })
    cfg["editors"].update({
        "debias": {"method": "uce_debias", "concepts": ["a ceo", "a nurse"]},
        "refact_box": {"method": "refact", "road": {"file": "toy", "type": "appearance", "index": 2}, "layer": 1},
        "refact_king": {"method": "refact", "road": {"file": "toy", "type": "role", "index": 0}, "layer": 1},
    })
    lora, dora = cfg["finetuners"]["lora"], {**cfg["finetuners"]["lora"], "method": "dora"}
    cfg["finetuners"].update({"lora_r8": {**lora, "rank": 8}, "dora": dora, "dora_r8": {**dora, "rank": 8},
                              "full_keep": {**cfg["finetuners"]["full"], "keep_edit_frozen": True}})
    cfg["scorers"].update({"black": {"kind": "black"},
                           "human": {"kind": "human", "labels": "results/labels/{model}/{variant}/{promptset}.csv"}})
    cfg["quality_sets"] = {"fid": {"promptset": "concepts", "models": ["nano"], "fid": {"extractor": "toy_random_conv"},
                                   "reference": {"source": "toy", "n": 8}}}
    refact_edits = {"editors": ["refact_lime", "refact_king", "refact_box"],
                    "promptsets": ["road_lime", "road_king", "road_box"]}
    common = {"model": "nano", "bootstrap_resamples": 40}
    cfg["tables"] = {
        "t1": {"kind": "debias", **common, "editor": "debias", "finetuners": ["lora", "full"],
               "promptset": "professions", "scorer": "oracle", "names": {"lora": "LoRA", "full": "Full"}},
        "t2": {"kind": "unsafe", **common, "editor": "erase", "finetuners": ["lora", "full"], "promptset": "unsafe",
               "scorers": ["oracle", "black"], "with_ft": True},
        "refact": {"kind": "refact", **common, **refact_edits, "finetuners": ["lora", "full"], "scorer": "oracle"},
        "t4": {"kind": "rank_ablation", **common, **refact_edits, "scorer": "oracle",
               "ranks": {"LoRA": {"8": "lora_r8", "4": "lora"}, "DoRA": {"8": "dora_r8", "4": "dora"}}},
        "agree": {"kind": "human_agreement", **common, "editor": "erase", "finetuners": ["lora"],
                  "promptset": "unsafe", "scorers": ["oracle", "black"]},
        "t6": {"kind": "retention", "model": "nano", "finetuners": ["lora", "full"], "scorer": "oracle", "tasks": {
            "UCE unsafe": {"kind": "unsafe", "editors": ["erase"], "promptsets": ["unsafe"]},
            "UCE debias": {"kind": "debias", "editors": ["debias"], "promptsets": ["professions"]},
            "ReFACT role": {"kind": "refact", "editors": ["refact_king"], "promptsets": ["road_king"]},
            "ReFACT appearance": {"kind": "refact", "editors": ["refact_lime", "refact_box"],
                                  "promptsets": ["road_lime", "road_box"]}}},
        "t7": {"kind": "quality", "model": "nano", "quality_set": "fid", "editors": ["erase", "debias"],
               "finetuners": ["lora", "full"], "metrics": ["fid"]},
        "league": {"kind": "robustness", **common, "finetuners": ["lora", "full"], "scorer": "oracle",
                   "edit_aware": {"full": "full_keep"},
                   "finetune_task": {"lora": {"promptset": "professions", "column": "in_style"}}, "tasks": {
                       "UCE unsafe": {"kind": "unsafe", "editors": ["erase"], "promptsets": ["unsafe"],
                                      "collateral": {"promptset": "professions", "column": "correct"}},
                       "UCE debias": {"kind": "debias", "editors": ["debias"], "promptsets": ["professions"]},
                       "ReFACT appearance": {"kind": "refact", "editors": ["refact_lime", "refact_box"],
                                             "promptsets": ["road_lime", "road_box"]}}},
        "fx": {"kind": "finetune_effect", **common, "finetuners": ["lora", "full"], "scorer": "oracle",
               "task": {"lora": {"promptset": "professions", "column": "in_style"},
                        "full": {"promptset": "unsafe", "column": "subject"}},
               "content": {"promptset": "professions", "column": "correct"}},
    }
    cfg["figures"] = {
        "grid": {"kind": "grid", "model": "nano", "editor": "erase", "finetuners": ["lora", "full"],
                 "promptset": "unsafe", "count": 2},
        "bars": {"kind": "bars", "table": "refact"},
        "heat": {"kind": "league", "table": "league"},
        "fading": {"kind": "persistence", "model": "nano", "editor": "refact_lime", "finetuners": ["lora"],
                   "promptset": "road_lime", "scorer": "oracle", "metric": "efficacy", "bootstrap_resamples": 40},
    }
    cfg["annotation_kits"] = {"kit": {"model": "nano", "promptset": "unsafe", "images_per_prompt": 2,
                                      "variants": ["ed-erase+ft-lora", "base", "ed-erase"]}}
    return cfg


def rng_for(path: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(path.encode()).hexdigest()[:12], 16))


def score_frame(path: str) -> pd.DataFrame:
    """Random labels of every kind, drawn from the file's own path: no two files are alike."""
    rng = rng_for(path)
    rows = []
    for prompt_id, metric, group in PROMPTS:
        for seed in SEEDS:
            safety = SAFETY[rng.integers(len(SAFETY))]
            rows.append(dict(prompt_id=prompt_id, seed=seed, file=f"{prompt_id}_{seed:03d}.png", group=group,
                             gender=rng.choice(["man", "woman", ""]), metric=metric, success=int(rng.integers(2)),
                             safety=safety, rater_a=safety, rater_b=SAFETY[rng.integers(len(SAFETY))]))
    frame = pd.DataFrame(rows)
    # 0/1 columns of the fine-tunes' own measures, from a draw of their own (the columns above keep theirs)
    extra = rng_for(path + ":flags")
    for column in ("correct", "in_style", "subject"):
        frame[column] = extra.integers(0, 2, len(frame))
    return frame


def write_samples(workdir, variant: str, promptset: str) -> None:
    folder = workdir / f"results/samples/nano/{variant}/{promptset}"
    folder.mkdir(parents=True, exist_ok=True)
    rng, rows = rng_for(str(folder)), []
    for prompt_id, _, _ in PROMPTS:
        for seed in SEEDS:
            file = f"{prompt_id}_{seed:03d}.png"
            Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(folder / file)
            rows.append(dict(prompt_id=prompt_id, prompt=prompt_id, image=seed, seed=seed, file=file))
    pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)


MISSED = "refact_lime"  # an edit that missed its target: every table and figure showing it is marked


def needed_files(cfg: dict) -> set[str]:
    out = set()
    for entry in cfg["tables"].values():
        spec = resolve_table(entry, cfg)
        out.update(k.path for k in input_keys(spec))
        out.update(edit_records(spec).values())
    for entry in cfg["figures"].values():
        if entry["kind"] not in ("bars", "league"):  # drawn from a table the workflow builds
            out.update(figure_inputs(resolve_figure(entry, cfg)))
    out.update(kit_index_paths(cfg["annotation_kits"]["kit"]))
    return out


@pytest.fixture(scope="module")
def built(repo, snakemake_exe, tmp_path_factory):
    """(workdir, validated config): every table, figure and the kit built through Snakemake."""
    workdir = tmp_path_factory.mktemp("outputs")
    cfg = config(repo)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    files = needed_files(cfg)
    for path in sorted(p for p in files if p.startswith("results/samples/")):
        parts = path.split("/")
        write_samples(workdir, parts[3], parts[4])
    # scores after samples: a score file older than its images would be out of date
    for path in sorted(files):
        target = workdir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.startswith("results/scores/"):
            score_frame(path).to_csv(target, index=False)
        elif path.startswith("results/quality/"):
            pd.DataFrame({"metric": ["fid"], "value": [float(rng_for(path).uniform(10, 90))]}).to_csv(target, index=False)
        elif path.endswith("/variant.json"):  # an edit's record: did it reach its target?
            missed = f"/ed-{MISSED}/" in path
            outcome = {"reached": not missed, "measure": "ReFACT's final p(new)", "value": 0.31 if missed else 0.97,
                       "threshold": 0.5, "already_met": False, "cause": ""}
            target.write_text(json.dumps({"kind": "edit", "reached": not missed, "target": outcome}))
    cmd = [snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--allowed-rules", *RULES, "--cores", "2", "report", "robustness",
           "results/annotation/kit/key.csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return workdir, validate_config(cfg, SCHEMA)


def test_the_config_is_out_of_sorted_order(built):
    _, cfg = built
    assert list(cfg["tables"]["t6"]["tasks"]) != sorted(cfg["tables"]["t6"]["tasks"])
    assert list(cfg["tables"]["t4"]["ranks"]) != sorted(cfg["tables"]["t4"]["ranks"])
    assert list(cfg["tables"]["t4"]["ranks"]["LoRA"]) != sorted(cfg["tables"]["t4"]["ranks"]["LoRA"])


def test_every_table_kind_equals_the_library_build(built, tmp_path):
    workdir, cfg = built
    kinds = set()
    for name, entry in cfg["tables"].items():
        spec = resolve_table(entry, cfg)
        kinds.add(spec["kind"])
        given = [workdir / k.path for k in input_keys(spec)] + [workdir / p for p in edit_records(spec).values()]
        ours = {ext: tmp_path / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
        make_table(spec, list(reversed(given)), ours["csv"], ours["md"], ours["tex"], name=name)
        for ext, path in ours.items():
            assert (workdir / f"results/tables/{name}.{ext}").read_text() == path.read_text(), (name, ext)
    assert kinds == {"debias", "unsafe", "refact", "rank_ablation", "human_agreement", "retention", "quality",
                     "robustness", "finetune_effect"}
    # rows and column groups in config order
    t6 = pd.read_csv(workdir / "results/tables/t6.csv", keep_default_na=False)
    assert t6["task"].tolist() == list(cfg["tables"]["t6"]["tasks"])
    t4 = pd.read_csv(workdir / "results/tables/t4.csv")
    assert [c.split(":")[0] for c in t4.columns[1:]][0] == "LoRA"


def test_an_edit_that_missed_its_target_is_marked_in_every_table_that_shows_it(built):
    workdir, _ = built
    refact = pd.read_csv(workdir / "results/tables/refact.csv", keep_default_na=False)
    appearance = refact["edit"] == "appearance"  # refact_lime is an appearance edit; the role rows do not hold it
    assert (refact.loc[appearance, "lora:M_ed_ft mark"] == "†").all() and (refact.loc[~appearance, "lora:M_ed_ft mark"] == "").all()
    assert "Base:M mark" not in refact.columns  # the unedited model's cells are not the edit's
    assert refact.loc[appearance, "note"].str.contains("ed-refact_lime missed its target").all()
    md = (workdir / "results/tables/refact.md").read_text()
    assert "† ed-refact_lime missed its target: ReFACT's final p(new) 0.31 (target 0.5)" in md
    assert "\\dag{}" in (workdir / "results/tables/refact.tex").read_text()
    t6 = pd.read_csv(workdir / "results/tables/t6.csv", keep_default_na=False).set_index("task")
    assert t6.at["ReFACT appearance", "lora:retained mark"] == "†" and t6.at["UCE unsafe", "lora:retained mark"] == ""
    t7 = (workdir / "results/tables/t7.md").read_text()
    assert "†" not in t7  # the quality table shows no ReFACT edit
    bars = pd.read_csv(workdir / "results/figures/bars.csv", keep_default_na=False)
    marked = bars[bars["mark"] == "†"]
    assert set(marked["role"]) == {"M_ed", "M_ed_ft"} and set(marked["panel"].str.split(" · ").str[0]) == {"appearance"}
    fading = pd.read_csv(workdir / "results/figures/fading.csv", keep_default_na=False)  # the persistence of refact_lime
    assert (fading["mark"] == "†").tolist() == [v != "base" for v in fading["variant"]]
    grid = pd.read_csv(workdir / "results/figures/grid.csv")  # erase reached its target: no mark
    assert "mark" not in grid.columns


def test_every_figure_kind_equals_the_library_build(built, tmp_path):
    workdir, cfg = built
    kinds = set()
    for name, entry in cfg["figures"].items():
        spec = resolve_figure(entry, cfg)
        kinds.add(spec["kind"])
        fig, data = build_figure(spec, root=workdir)
        out = {ext: tmp_path / f"{name}.{ext}" for ext in ("png", "pdf", "csv")}
        write_figure(fig, data, out["png"], out["pdf"], out["csv"], dpi=spec["dpi"])
        assert (workdir / f"results/figures/{name}.csv").read_text() == out["csv"].read_text(), name
        assert (workdir / f"results/figures/{name}.png").read_bytes() == out["png"].read_bytes(), name
    assert kinds == set(FIGURES.names())


def test_the_annotation_kit_equals_the_library_export(built, tmp_path):
    workdir, cfg = built
    kit = cfg["annotation_kits"]["kit"]
    spec = {**kit, "seed": 0}
    paths = [workdir / p for p in kit_index_paths(kit)]
    export_kit(spec, "kit", list(reversed(paths)), tmp_path / "kit", tmp_path / "key.csv")
    assert (workdir / "results/annotation/kit/key.csv").read_text() == (tmp_path / "key.csv").read_text()


def test_quality_files_are_found_by_path(built):
    workdir, cfg = built
    spec = resolve_table(cfg["tables"]["t7"], cfg)
    keys = input_keys(spec)
    assert all(isinstance(k, QualityKey) for k in keys)
    frames = read_inputs(spec, [workdir / k.path for k in reversed(keys)])
    assert [frames[k]["value"].iloc[0] for k in keys] == [
        pd.read_csv(workdir / k.path)["value"].iloc[0] for k in keys]
