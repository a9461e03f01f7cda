"""The report stage in Snakemake on (a copy of) the nano config: figures, `snakemake --report`, and
the annotation kit's export and ingest rules.

Samples and score files are written by the test and the earlier stages' rules are switched off
with --allowed-rules, so nothing is trained or sampled.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import write_edit_record

pytestmark = pytest.mark.workflow

REPORT_RULES = ["make_figure", "make_table", "figures", "report", "export_annotation_kit", "ingest_annotations_kit"]
PROMPTS = ["concept-man", "concept-naked"]


def snakemake(exe, repo, workdir, configfile, *args):
    cmd = [exe, "-s", str(repo / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
           "--allowed-rules", *REPORT_RULES, "--cores", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def write_image_set(workdir, variant, unsafe_share):
    """Samples (PNGs + index.csv) and oracle scores of one variant on the `concepts` promptset."""
    folder = workdir / f"results/samples/nano/{variant}/concepts"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p, prompt in enumerate(PROMPTS):
        for seed in range(4):
            file = f"{prompt}_{seed:03d}.png"
            Image.fromarray(np.full((8, 8, 3), 20 * p + 5 * seed, np.uint8)).save(folder / file)
            rows.append(dict(prompt_id=prompt, prompt=prompt, image=seed, seed=seed, file=file, group=prompt))
    index = pd.DataFrame(rows)
    index.to_csv(folder / "index.csv", index=False)
    scores = index[["prompt_id", "seed", "image", "file", "group"]].copy()
    unsafe = np.arange(len(scores)) < round(unsafe_share * len(scores))
    scores["safety"] = np.where(unsafe, "unsafe", "safe")
    scores["scorer"] = "oracle"
    path = workdir / f"results/scores/nano/{variant}/concepts/oracle.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(path, index=False)


@pytest.fixture
def setup(repo, tmp_path):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    assert cfg["finetuners"]["lora"]["save_every"] == 2 and cfg["finetuners"]["lora"]["steps"] == 4
    cfg["scorers"]["human"] = {"kind": "human", "labels": "results/labels/{model}/{variant}/{promptset}.csv"}
    cfg["tables"] = {"t2": {"kind": "unsafe", "model": "nano", "editor": "erase", "finetuners": ["full", "lora"],
                            "promptset": "concepts", "scorers": ["oracle"], "with_ft": True,
                            "bootstrap_resamples": 50}}
    cfg["figures"] = {
        "grid": {"kind": "grid", "model": "nano", "editor": "erase", "finetuners": ["full", "lora"],
                 "promptset": "concepts", "count": 2},
        "bars": {"kind": "bars", "table": "t2"},
        "fading": {"kind": "persistence", "model": "nano", "editor": "erase", "finetuners": ["lora"],
                   "promptset": "concepts", "scorer": "oracle", "metric": "safe", "bootstrap_resamples": 50},
    }
    cfg["annotation_kits"] = {"kit": {"model": "nano", "promptset": "concepts", "variants": ["base", "ed-erase"],
                                      "images_per_prompt": 2}}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    shares = {"base": 0.5, "ed-erase": 0.0, "ft-full": 0.5, "ed-erase+ft-full": 0.25, "ft-lora": 0.5,
              "ed-erase+ft-lora@2": 0.125, "ed-erase+ft-lora": 0.25}
    for variant, share in shares.items():
        write_image_set(tmp_path, variant, share)
    write_edit_record(tmp_path, "nano", "erase")
    return tmp_path, configfile


def test_report_gathers_tables_grids_and_persistence_curves(setup, repo, snakemake_exe):
    workdir, configfile = setup
    snakemake(snakemake_exe, repo, workdir, configfile, "report")
    for name in ("grid", "bars", "fading"):
        for ext in ("png", "pdf", "csv"):
            assert (workdir / f"results/figures/{name}.{ext}").stat().st_size > 0
    grid = pd.read_csv(workdir / "results/figures/grid.csv")
    assert grid["column"].unique().tolist() == ["M", "M_ed", "M_ft", "M_ed_ft"] and len(grid) == 2 * 2 * 4
    fading = pd.read_csv(workdir / "results/figures/fading.csv")
    lora = fading[fading["finetuner"] == "lora"]
    assert lora["step"].tolist() == [0, 2, 4]  # M_ed, the checkpoint @2, the final step
    assert lora["value"].tolist() == pytest.approx([1.0, 0.875, 0.75])  # share safe

    snakemake(snakemake_exe, repo, workdir, configfile, "report", "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text()
    for shown in ("grid.png", "bars.png", "fading.png", "t2.csv", "Sample grids", "Persistence"):
        assert shown in html
    # (`--report report.zip` goes through the same collection; not run here to keep the test short)


def test_annotation_kit_rules_export_and_feed_the_human_scorer(setup, repo, snakemake_exe):
    workdir, configfile = setup
    snakemake(snakemake_exe, repo, workdir, configfile, "results/annotation/kit/key.csv")
    key = pd.read_csv(workdir / "results/annotation/kit/key.csv", dtype=str)
    assert len(key) == 2 * 2 * 2 and (workdir / "results/annotation/kit/kit/index.html").exists()
    (workdir / "annotations/kit").mkdir(parents=True)
    for annotator, rating in (("ann", "1"), ("bob", "0")):
        pd.DataFrame({"annotator": annotator, "item": key["item"], "rating": rating}).to_csv(
            workdir / f"annotations/kit/{annotator}.csv", index=False)
    snakemake(snakemake_exe, repo, workdir, configfile, "results/labels/nano/ed-erase/concepts.csv")
    labels = pd.read_csv(workdir / "results/labels/nano/ed-erase/concepts.csv", dtype=str)
    assert list(labels.columns) == ["file", "prompt_id", "seed", "ann", "bob"]
    assert set(labels["ann"]) == {"1"} and set(labels["bob"]) == {"0"}
    agreement = pd.read_csv(workdir / "results/annotation/kit/agreement.csv")
    assert agreement["scope"].tolist() == ["all", *pd.unique(key["variant"])]
    assert (agreement["fleiss_kappa"] == -1.0).all()  # two raters who always disagree
