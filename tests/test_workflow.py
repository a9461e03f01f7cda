"""Snakemake end to end on the nano toy world (every stage for real, nothing learnt)."""

import shutil
import subprocess

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.workflow


def run(snakemake_exe, repo, workdir, *args, configfile=None, check=True):
    cmd = [snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile or repo / "tests" / "configs" / "nano.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def nano_run(tmp_path_factory, repo, snakemake_exe):
    work = tmp_path_factory.mktemp("nano")
    run(snakemake_exe, repo, work, "--cores", "2")
    return work


def test_nano_end_to_end(nano_run):
    base = nano_run / "results" / "models" / "nano" / "base"
    assert (base / "variant.json").exists() and (base / "model_index.json").exists()
    assert list((base / "unet").glob("*.safetensors"))
    index = pd.read_csv(nano_run / "results/samples/nano/base/concepts/index.csv")
    assert len(index) == 2 * index["prompt_id"].nunique()
    assert all((nano_run / "results/samples/nano/base/concepts" / f).exists() for f in index["file"])
    scores = pd.read_csv(nano_run / "results/scores/nano/base/concepts/oracle.csv")
    assert len(scores) == len(index) and {"concept", "gender", "unsafe", "correct"} <= set(scores.columns)
    summary = pd.read_csv(nano_run / "results/summaries/nano/base/concepts/oracle.csv")
    assert summary["group"].iloc[-1] == "all" and summary["images"].iloc[-1] == len(index)
    # edited variants hold only their delta; ReFACT's statistic is its own cached output
    erase = nano_run / "results/models/nano/ed-erase"
    assert sorted(p.name for p in erase.iterdir()) == ["unet.safetensors", "variant.json"]
    assert (nano_run / "results/stats/nano/base/fc2_second_moment_L1_toy_captions.safetensors").exists()
    road = pd.read_csv(nano_run / "results/scores/nano/ed-refact_lime/road_lime/oracle.csv")
    assert set(road["metric"]) == {"efficacy", "generality", "specificity"} and "success" in road
    ed_index = pd.read_csv(nano_run / "results/samples/nano/ed-erase/concepts/index.csv")
    assert ed_index[["prompt_id", "seed"]].equals(index[["prompt_id", "seed"]])  # paired by (prompt, seed)
    assert (nano_run / "logs/prepare_base_model/nano.log").stat().st_size > 0
    # nothing half-written is left next to the outputs
    assert not list((nano_run / "results").rglob("*.tmp"))


def test_nothing_to_do_on_rerun(nano_run, repo, snakemake_exe):
    proc = run(snakemake_exe, repo, nano_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _dry_run_jobs(snakemake_exe, repo, workdir, cfg, tmp_path, *targets) -> dict:
    """{rule: job count} that a dry run with `cfg` schedules (for `targets`, default the `all` rule)."""
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    extra = ("--", *targets) if targets else ()
    out = run(snakemake_exe, repo, workdir, "-n", "--quiet", "rules", *extra, configfile=changed).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def test_changing_the_promptset_reruns_only_its_subgraph(nano_run, repo, snakemake_exe, tmp_path):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["promptsets"]["concepts"]["images_per_prompt"] = 3
    jobs = _dry_run_jobs(snakemake_exe, repo, nano_run, cfg, tmp_path)
    # the promptset, then its samples, scores and summaries for base and ed-erase; no model job
    assert jobs == {"build_promptset": 1, "sample_promptset": 2, "score_images": 2, "summarize_scores": 2, "all": 1}


def test_changing_one_editor_reruns_only_its_variant(nano_run, repo, snakemake_exe, tmp_path):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["editors"]["erase"]["lamb"] = 0.25
    jobs = _dry_run_jobs(snakemake_exe, repo, nano_run, cfg, tmp_path)
    assert jobs == {"edit_model": 1, "sample_promptset": 1, "score_images": 1, "summarize_scores": 1, "all": 1}


def test_config_typo_fails_before_any_job(repo, snakemake_exe, tmp_path):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["models"]["nano"]["toy"]["stepz"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = run(snakemake_exe, repo, tmp_path, "-n", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "models.nano.toy.stepz: unknown key" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_bad_promptset_csv_fails_naming_the_file(repo, snakemake_exe, tmp_path, nano_run):
    shutil.copytree(nano_run / "results" / "models", tmp_path / "results" / "models")
    shutil.copytree(nano_run / ".snakemake", tmp_path / ".snakemake", ignore=shutil.ignore_patterns("locks", "log"))
    csv = tmp_path / "mine.csv"
    csv.write_text("id,text\n1,a lime\n")
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["promptsets"] = {"mine": {"source": "csv", "path": str(csv), "images_per_prompt": 1}}
    cfg["evaluations"] = [{"model": "nano", "promptset": "mine", "scorers": ["oracle"]}]
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    proc = run(snakemake_exe, repo, tmp_path, "--cores", "1", configfile=conf, check=False)
    assert proc.returncode != 0
    assert "prepare_base_model" not in proc.stdout  # the copied model is reused
    log = (tmp_path / "logs/build_promptset/mine.log").read_text()
    assert "mine.csv: missing column(s) prompt_id, prompt" in log
    assert not (tmp_path / "results/promptsets/mine.csv").exists()
