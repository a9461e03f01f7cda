"""config/paper.yaml: the study's grid validates, and its job graph shares what must be shared.

A dry run of every table and figure, offline and with nothing in resources/, must succeed, and must
contain exactly one base preparation per model, one base fine-tune `ft-<F>` per (model, fine-tuner)
and one ReFACT statistic per (model, layer), however many edits use them (92 edits on SD1.4, 90 on
SDXL); and fine-tuning checkpoints only for the one variant a persistence figure draws.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter

import pytest

from editrobust.config import load_yaml, validate_config

pytestmark = pytest.mark.workflow


def test_paper_config_validates_and_pins_every_hub_model(repo):
    config = validate_config(load_yaml(repo / "config" / "paper.yaml"))
    assert {m["family"] for m in config["models"].values()} == {"sd1", "sdxl", "flux"}
    for name, model in config["models"].items():
        assert model["kind"] == "hub" and re.fullmatch(r"[0-9a-f]{40}", model["revision"]), name
    road = [e for e in config["editors"].values() if e["method"] == "refact"]
    assert Counter(e["road"]["type"] for e in road) == {"appearance": 49, "role": 41}  # the RoAD test set
    assert config["promptsets"]["i2p50"]["n"] == 50


def _dry_run_jobs(repo, workdir, snakemake_exe):
    """(rule, outputs, wildcards) of every job of `snakemake tables figures -n` on the paper config."""
    (workdir / "config").symlink_to(repo / "config")  # the professions CSV is read relative to the workdir
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(workdir / "hf_home"),
               PYTHONPATH=str(repo / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([snakemake_exe, "tables", "figures", "-n", "-s", str(repo / "Snakefile"), "-d", str(workdir),
                           "--configfile", str(repo / "config" / "paper.yaml")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (workdir / "resources").exists()  # a dry run fetches nothing
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        output = re.search(r"^\s+output: (.*)$", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wc = dict(kv.split("=", 1) for kv in wildcards.group(1).split(", ")) if wildcards else {}
        jobs.append((head.group(1), output.group(1).split(", ") if output else [], wc))
    return jobs


def test_paper_dry_run_shares_base_fine_tunes_and_statistics(repo, tmp_path, snakemake_exe):
    config = validate_config(load_yaml(repo / "config" / "paper.yaml"))
    jobs = _dry_run_jobs(repo, tmp_path, snakemake_exe)
    by_rule = Counter(rule for rule, _, _ in jobs)
    # every table and figure but the robustness league's (`snakemake robustness`: its own target)
    league = [n for n, t in config["tables"].items() if t["kind"] == "robustness"]
    assert league == ["robustness_sd14"]
    assert by_rule["make_table"] == len(config["tables"]) - 1
    assert by_rule["make_figure"] == len([f for f in config["figures"].values() if f.get("table") not in league])

    # one base preparation (and one hub snapshot) per model
    prepared = Counter(wc["model"] for rule, _, wc in jobs if rule == "prepare_base_model")
    assert prepared == Counter(list(config["models"]))
    assert Counter(wc["model"] for rule, _, wc in jobs if rule == "snapshot_hub_model") == Counter(list(config["models"]))

    # one ft-<F> of the base per (model, fine-tuner), however many edits are fine-tuned with F
    base_ft, edited_ft, checkpoints = Counter(), Counter(), Counter()
    for rule, outputs, wc in jobs:
        for output in outputs if rule.startswith("finetune_") else []:
            m = re.fullmatch(r"results/models/(\w+)/((?:ed-\w+\+)?ft-\w+)(@\d+)?/variant\.json", output)
            if m and m.group(3):
                checkpoints[(m.group(1), m.group(2))] += 1
            elif m:
                (edited_ft if m.group(2).startswith("ed-") else base_ft)[(m.group(1), m.group(2).rpartition("ft-")[2])] += 1
    # fine-tuning checkpoints only where a figure draws them: figure5's full fine-tune of the erasure,
    # every 100 steps up to step 1,000 (not in the 91 other edited full fine-tunes of SD1.4)
    assert checkpoints == {("sd14", "ed-erase_unsafe+ft-full"): 10}
    assert set(base_ft.values()) == {1}
    # each model runs its own recipes (config/paper.yaml, finetuners): SDXL and FLUX have named entries
    assert set(base_ft) == {("sd14", f) for f in ("full", "full_unet", "lora", "dora", "dreambooth")} | \
        {("sdxl", f) for f in ("full_sdxl", "full_unet_sdxl", "lora_sdxl", "dora")} | \
        {("flux", f) for f in ("lora_flux", "dora_flux")}
    assert edited_ft[("sd14", "lora")] == 92 and edited_ft[("sdxl", "full_sdxl")] == 90  # editors multiply these only
    assert edited_ft[("sd14", "full")] == 92  # the one with checkpoints included, once

    # one ReFACT statistic per (model, layer): 90 ReFACT edits per model share it
    stats = Counter((wc["model"], wc["layer"]) for rule, _, wc in jobs if rule == "refact_statistic")
    assert stats == {("sd14", "7"): 1, ("sdxl", "7"): 1}
    refact_edits = Counter(wc["model"] for rule, _, wc in jobs
                           if rule == "edit_model" and config["editors"][wc["editor"]]["method"] == "refact")
    assert refact_edits == {"sd14": 90, "sdxl": 90}
    # every dataset is fetched once, by the one rule allowed the network
    assert Counter(wc["download"] for rule, _, wc in jobs if rule == "fetch_download") == Counter(list(config["downloads"]))
