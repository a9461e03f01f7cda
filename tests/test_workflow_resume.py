"""Proof under stress, in Snakemake on the nano toy world: a run killed with SIGKILL during a
fine-tune and again during sampling resumes (`--rerun-incomplete`) to the same bytes as a clean
run; changing one editor, fine-tuner or scorer re-runs exactly its subgraph.

Two cold runs happen here, each from an empty directory: the clean reference and the killed one.
Comparing them byte for byte is also the determinism check (same config, same machine, same
images, weights and tables).

The config is the nano one plus two small tables over the toy `unsafe` prompts:
  safety     oracle labels of base, ed-erase and ed-erase+ft-lora (a fine-tune and its samples)
  black_rate the `black` scorer on base and ed-erase only (no fine-tune)
so that each change below touches a different part of the DAG.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_workflow import _dry_run_jobs, run

pytestmark = pytest.mark.workflow

FT_VARIANT = "ed-erase+ft-lora"
TARGET = "tables"
# Written by every run but not reproducible byte for byte: the training logs hold steps/s, and a
# variant.json holds the checksums of its training log. They must still parse after a kill.
NOT_BYTE_STABLE = ("training_log.csv", "variant.json")


def stress_config(repo: Path) -> dict:
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["promptsets"]["unsafe"] = {"source": "toy", "set": "unsafe", "images_per_prompt": 2}
    cfg["scorers"]["black"] = {"kind": "black"}
    # long enough (a few seconds) to be killed mid-training after its first saved state
    cfg["finetuners"]["lora"].update(steps=40, checkpoint_every=5, save_every=20)
    common = {"kind": "unsafe", "model": "nano", "editor": "erase", "promptset": "unsafe",
              "bootstrap_resamples": 50}
    cfg["tables"] = {"safety": {**common, "finetuners": ["lora"], "scorers": ["oracle"]},
                     "black_rate": {**common, "finetuners": [], "scorers": ["black"]}}
    return cfg


@pytest.fixture(scope="module")
def configfile(repo, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stress_config") / "config.yaml"
    path.write_text(yaml.safe_dump(stress_config(repo)))
    return path


# --------------------------------------------------------------------------------- kill helpers
def start(snakemake_exe, repo, work, configfile, *args) -> subprocess.Popen:
    """Snakemake in its own process group (its jobs run in it too), output to a file."""
    cmd = [snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(work), "--configfile", str(configfile),
           "--cores", "2", *args, TARGET]
    out = open(work / f"snakemake_{time.monotonic_ns()}.out", "w")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, what: str, timeout: float = 900) -> None:
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{what}: timed out") from None
    if rc != 0:
        out = Path(proc.args[proc.args.index("--directory") + 1]).glob("snakemake_*.out")
        raise AssertionError(f"{what} failed ({rc}):\n" + "\n".join(p.read_text()[-4000:] for p in out))


def kill_when(proc: subprocess.Popen, condition, what: str, timeout: float = 900) -> object:
    """SIGKILL the whole process group (Snakemake and its running job) as soon as `condition()`
    returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return found
        if proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) before {what}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"timed out waiting for {what}")


def sampling_in_progress(work: Path):
    """A sampling job that has started generating and not yet written its image set."""
    for log in (work / "logs" / "sample_promptset").rglob("*.log"):
        image_set = log.relative_to(work / "logs" / "sample_promptset").with_suffix("")
        if " images (" in log.read_text(errors="replace") and \
                not (work / "results" / "samples" / image_set / "index.csv").exists():
            return image_set
    return None


# ------------------------------------------------------------------------- comparing two runs
def digest(path: Path) -> str:
    """What must be equal between two runs: the bytes; for safetensors the tensors and metadata
    (safetensors writes metadata entries in a per-process hash order: the latent cache has three);
    for the files in NOT_BYTE_STABLE only that they parse."""
    if path.name in NOT_BYTE_STABLE:
        try:
            json.loads(path.read_text()) if path.suffix == ".json" else pd.read_csv(path)
        except Exception as e:  # noqa: BLE001 - any parse failure means a half-written file
            return f"unreadable: {e}"
        return "readable"
    h = hashlib.sha256()
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            h.update(json.dumps(f.metadata(), sort_keys=True).encode())
            for k in sorted(f.keys()):
                t = f.get_tensor(k)
                h.update(f"{k}{t.dtype}{t.shape}".encode() + t.tobytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def snapshot(work: Path) -> dict[str, str]:
    """{path under results/: digest}, leaving out resumable training state and the hidden temporary
    files of writes in progress (`.<name>.<random>.tmp`)."""
    root = work / "results"
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*"))
            if p.is_file() and "train_state" not in p.parts and not p.name.startswith(".")}


def half_written(files: dict[str, str], reference: dict[str, str]) -> list[str]:
    """Files under a final name that the clean run did not write the same (or that do not parse)."""
    return [f"{rel}: {'not in the clean run' if rel not in reference else 'differs from the clean run'}"
            for rel, d in files.items() if reference.get(rel) != d or d.startswith("unreadable")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, repo, snakemake_exe, configfile) -> dict:
    """Two cold runs, side by side: the clean reference in the background; in the foreground one
    SIGKILLed during the LoRA fine-tune, then during a sampling job, and resumed each time with
    --rerun-incomplete (after --unlock, as a user would)."""
    reference = tmp_path_factory.mktemp("reference")
    clean = start(snakemake_exe, repo, reference, configfile)

    work = tmp_path_factory.mktemp("killed")
    record = {"reference": reference, "work": work, "after_kill": {}}
    state = work / "results" / "train_state" / "nano" / FT_VARIANT / "state.pt"
    proc = start(snakemake_exe, repo, work, configfile)
    kill_when(proc, state.exists, "the fine-tune's first saved training state")
    record["ft_done_at_kill"] = (work / "results/models/nano" / FT_VARIANT / "variant.json").exists()
    record["after_kill"]["fine-tune"] = snapshot(work)

    # Sampling: a 20-image job generates for about a second; if it finishes between the poll and
    # the kill, try again on the next sampling job.
    for _attempt in range(3):
        run(snakemake_exe, repo, work, "--unlock", configfile=configfile)
        proc = start(snakemake_exe, repo, work, configfile, "--rerun-incomplete")
        image_set = kill_when(proc, lambda: sampling_in_progress(work), "a sampling job generating images")
        record["sampling_caught"] = not (work / "results" / "samples" / image_set / "index.csv").exists()
        if record["sampling_caught"]:
            break
    record["after_kill"]["sampling"] = snapshot(work)

    run(snakemake_exe, repo, work, "--unlock", configfile=configfile)
    run(snakemake_exe, repo, work, "--cores", "2", "--rerun-incomplete", TARGET, configfile=configfile)
    finish(clean, "the clean reference run")
    return record


@pytest.fixture(scope="module")
def reference(runs) -> Path:
    return runs["reference"]


def test_a_run_killed_twice_resumes_to_the_bytes_of_a_clean_run(runs):
    work = runs["work"]
    # the kills landed where intended
    assert not runs["ft_done_at_kill"], "the fine-tune finished before the kill"
    assert runs["sampling_caught"], "every sampling job finished before the kill"
    assert "resuming " + FT_VARIANT + " from step" in (work / f"logs/finetune_model/nano/{FT_VARIANT}.log").read_text()

    ref = snapshot(runs["reference"])
    # nothing under a final name was half-written at either kill
    for moment, files in runs["after_kill"].items():
        assert files and half_written(files, ref) == [], moment

    # The resumed run and the clean run: the same files, the same bytes (tables, images, scores;
    # weights tensor for tensor). Both are cold runs from an empty directory, so this is also the
    # determinism check.
    got = snapshot(work)
    assert sorted(got) == sorted(ref)
    assert half_written(got, ref) == []
    assert len([r for r in ref if r.startswith("tables/")]) == 6
    assert len([r for r in ref if r.endswith(".png")]) == 3 * 20
    assert any(r.endswith(".safetensors") for r in ref)
    # no leftovers: the temporaries of killed writes are cleared, the training state is gone
    assert not list((work / "results").rglob("*.tmp"))
    assert not [p for p in (work / "results").rglob("*") if p.is_file() and "train_state" in p.parts]


# --------------------------------------------------------------------------- incremental re-runs
def scheduled(snakemake_exe, repo, work, cfg, tmp_path) -> dict:
    """{rule: job count} a dry run of the tables schedules with config `cfg`."""
    return _dry_run_jobs(snakemake_exe, repo, work, cfg, tmp_path, TARGET)


def test_nothing_is_scheduled_when_nothing_changed(reference, repo, snakemake_exe, tmp_path):
    assert scheduled(snakemake_exe, repo, reference, stress_config(repo), tmp_path) == {}


def test_changing_one_editor_reruns_its_variants_samples_scores_and_tables(reference, repo, snakemake_exe, tmp_path):
    cfg = stress_config(repo)
    cfg["editors"]["erase"]["lamb"] = 0.25
    # ed-erase and its fine-tune; their unsafe samples; oracle scores of both and the black score
    # of ed-erase; both tables. Not the base model, its samples, the latent cache or ReFACT.
    assert scheduled(snakemake_exe, repo, reference, cfg, tmp_path) == {
        "edit_model": 1, "finetune_lora_edited": 1, "sample_promptset": 2, "score_images": 3,
        "make_table": 2, "tables": 1}


def test_changing_one_finetuner_reruns_only_its_variant_and_the_table_using_it(reference, repo, snakemake_exe,
                                                                                tmp_path):
    cfg = stress_config(repo)
    cfg["finetuners"]["lora"]["lr"] = 2e-4
    assert scheduled(snakemake_exe, repo, reference, cfg, tmp_path) == {
        "finetune_lora_edited": 1, "sample_promptset": 1, "score_images": 1, "make_table": 1, "tables": 1}


def test_changing_one_scorer_rescores_without_sampling(reference, repo, snakemake_exe, tmp_path):
    cfg = stress_config(repo)
    cfg["scorers"]["black"]["threshold"] = 12
    # the black scores of base and ed-erase, and black_rate; no image is generated again
    assert scheduled(snakemake_exe, repo, reference, cfg, tmp_path) == {
        "score_images": 2, "make_table": 1, "tables": 1}
