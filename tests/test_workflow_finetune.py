"""Snakemake end to end for the fine-tuning stage on the nano toy world (nothing is expected to be learnt)."""

import json

import pandas as pd
import pytest
import yaml

from test_workflow import _dry_run_jobs, run

pytestmark = pytest.mark.workflow

# the @2 checkpoint is a declared output of the same job (sampling it is the same rule as any
# variant), because the config reads it (an evaluation of ed-erase+ft-lora@2): a fine-tune saves the
# checkpoints something reads, and only those (workflow.Rules.checkpoints_read)
TARGETS = ["results/samples/nano/ed-erase+ft-lora/concepts/index.csv",
           "results/samples/nano/ft-full/concepts/index.csv"]
CHECKPOINT = "ed-erase+ft-lora@2"


def checkpoint_config(repo) -> dict:
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["evaluations"].append({"model": "nano", "promptset": "concepts", "variants": [CHECKPOINT], "scorers": ["oracle"]})
    return cfg


@pytest.fixture(scope="module")
def configfile(tmp_path_factory, repo):
    path = tmp_path_factory.mktemp("nano_ft_config") / "config.yaml"
    path.write_text(yaml.safe_dump(checkpoint_config(repo)))
    return path


@pytest.fixture(scope="module")
def nano_ft(tmp_path_factory, repo, snakemake_exe, configfile):
    work = tmp_path_factory.mktemp("nano_ft")
    run(snakemake_exe, repo, work, "--cores", "2", *TARGETS, configfile=configfile)
    return work


def test_finetuned_variants_are_sampled_and_stored_as_deltas(nano_ft):
    models = nano_ft / "results/models/nano"
    lora = models / "ed-erase+ft-lora"
    assert sorted(p.name for p in lora.iterdir()) == ["pytorch_lora_weights.safetensors", "training_log.csv",
                                                      "variant.json"]
    info = json.loads((lora / "variant.json").read_text())
    assert info["parent"] == "ed-erase" and info["kind"] == "finetune" and info["method"] == "lora"
    assert info["params"]["rank"] == 2 and info["dataset"]["name"] == "style"
    assert json.loads((models / "ed-erase+ft-lora@2/variant.json").read_text())["steps_trained"] == 2
    # only the checkpoint the config reads was written (ft-full has no save_every; lora's would allow more)
    assert sorted(p.name for p in models.iterdir() if "@" in p.name) == [CHECKPOINT]
    full = models / "ft-full"
    assert sorted(p.name for p in full.iterdir()) == ["training_log.csv", "unet.safetensors", "variant.json"]
    assert json.loads((full / "variant.json").read_text())["parent"] == "base"
    log = pd.read_csv(lora / "training_log.csv")
    assert list(log["step"]) == [1, 2, 3, 4] and {"loss", "lr", "steps_per_s"} <= set(log.columns)
    # one latent cache per (model, dataset), shared by both fine-tunes; no training state left
    assert [p.name for p in (nano_ft / "results/cache/nano").iterdir()] == ["latents_style.safetensors"]
    assert not (nano_ft / "results/train_state").exists() or not any((nano_ft / "results/train_state").rglob("*.pt"))
    for target in TARGETS:
        index = pd.read_csv(nano_ft / target)
        assert len(index) == 2 * index["prompt_id"].nunique()
    base_index = pd.read_csv(nano_ft / TARGETS[1])
    assert base_index[["prompt_id", "seed"]].equals(pd.read_csv(nano_ft / TARGETS[0])[["prompt_id", "seed"]])
    assert "fine-tune" in (nano_ft / "logs/finetune_model/nano/ed-erase+ft-lora.log").read_text()
    assert not list((nano_ft / "results").rglob("*.tmp"))


def test_changing_one_finetuner_reruns_only_its_variants(nano_ft, repo, snakemake_exe, tmp_path):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["finetuners"]["lora"]["lr"] = 2e-4
    cfg["evaluations"] = [{"model": "nano", "promptset": "concepts", "scorers": ["oracle"],
                           "variants": ["ft-full", "ed-erase+ft-lora"]}]
    jobs = _dry_run_jobs(snakemake_exe, repo, nano_ft, cfg, tmp_path)
    # the LoRA fine-tune of ed-erase, its samples, and the (never built) scores; not ft-full, the cache or the edit
    assert jobs.get("finetune_lora_edited") == 1
    assert "finetune_full" not in jobs and "cache_latents" not in jobs and "edit_model" not in jobs
    assert jobs["sample_promptset"] == 1


def test_unknown_finetuner_in_an_evaluation_fails_naming_the_key(repo, snakemake_exe, tmp_path):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["evaluations"][0]["variants"] = ["base", "ed-erase+ft-nope"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = run(snakemake_exe, repo, tmp_path, "-n", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "evaluations[0].variants[1]: 'ed-erase+ft-nope' needs a finetuner 'nope'" in proc.stdout + proc.stderr


def test_a_checkpoint_variant_is_sampled_without_retraining(nano_ft, repo, snakemake_exe, configfile):
    target = f"results/samples/nano/{CHECKPOINT}/concepts/index.csv"
    out = run(snakemake_exe, repo, nano_ft, "-n", "--quiet", "rules", "--", target, configfile=configfile).stdout
    jobs = {p[0]: int(p[1]) for p in (line.split() for line in out.splitlines())
            if len(p) == 2 and p[1].isdigit() and p[0] not in ("total", "job")}
    assert jobs == {"sample_promptset": 1}
