"""benchmarks/run_all.py --quick: every figure is computed on a tiny random model in seconds, and the
run-log and benchmark-file readers give the numbers those files hold."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO

# The parts of a Snakemake 9 run log the reader uses (header, job blocks, summary), as written by
# `snakemake --cores 2 results/tables/table1.csv` on an empty results/.
COLD_LOG = """Assuming unrestricted shared filesystem usage.

SNAKEMAKE
=========
  Date: 2026-11-28 17:00:54
  Command: .venv/bin/snakemake --cores 2 results/tables/table1.csv

Building DAG of jobs...
[Sat Nov 28 17:00:55 2026]
localrule prepare_base_model:
    output: results/models/toy/base/variant.json
    jobid: 4
    wildcards: model=toy
Shell command: None
[Sat Nov 28 17:10:40 2026]
Finished jobid: 4 (Rule: prepare_base_model)
[Sat Nov 28 18:03:44 2026]
localrule make_table:
    output: results/tables/table1.csv, results/tables/table1.md, results/tables/table1.tex
    jobid: 1
    wildcards: table=table1
Shell command: None
[Sat Nov 28 18:03:46 2026]
Finished jobid: 1 (Rule: make_table)
41 of 41 steps (100%) done
Complete log(s): /x/.snakemake/log/2026-11-28T170054.846843.snakemake.log
Elapsed time: 1:02:50.015972
"""


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_every_figure(run_all, tmp_path, capsys, one_thread, tiny_sd1):
    tiny_sd1.save_pretrained(tmp_path / "tiny_pipeline", safe_serialization=True)
    log_dir = tmp_path / ".snakemake" / "log"
    log_dir.mkdir(parents=True)
    (log_dir / "2026-11-28T170054.846843.snakemake.log").write_text(COLD_LOG)
    # an interrupted run (no summary) is not a cold run
    (log_dir / "2026-11-28T190000.000000.snakemake.log").write_text(COLD_LOG.split("41 of 41")[0])
    rules = tmp_path / "benchmarks" / "rules"
    (rules / "prepare_base_model").mkdir(parents=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (rules / "prepare_base_model" / "toy.tsv").write_text(header + "569.1\t0:09:29\t1400.5\t1\t1\t1\t1\t1\t1\t1\n")
    (rules / "edit_model").mkdir()
    (rules / "edit_model" / "debias.tsv").write_text(header + "20.0\t0:00:20\t750.0\t1\t1\t1\t1\t1\t1\t1\n")

    fig = run_all.main(["--quick", "--model", str(tmp_path / "tiny_pipeline"), "--workdir", str(tmp_path),
                        "--json", str(tmp_path / "f.json"), "--threads", "1"])
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "f.json").read_text())["quick"] is True

    s = fig["sampling"]
    assert s["batched_images_per_s"] > 0 and s["per_image_images_per_s"] > 0
    assert s["ratio"] == pytest.approx(s["batched_images_per_s"] / s["per_image_images_per_s"])
    assert s["max_pixel_difference"] <= 1  # the same images, one generator per image either way

    f = fig["finetune"]
    methods = ["ft-full", "ft-lora", "ft-dora", "ft-dreambooth"]
    assert sorted(f["without_cache_s"]) == sorted(methods)
    assert set(f["with_cache_s"]) == {*methods, "cache toy_style", "cache toy_subject"}
    assert f["total_with_cache_s"] == pytest.approx(sum(f["with_cache_s"].values()))

    kinds = fig["storage"]["variants written here"]["tiny"]["kinds"]
    assert set(kinds) == {"edit (uce_erase)", "finetune (full)", "finetune (lora)", "finetune (dora)",
                          "finetune (dreambooth)"}
    assert all(0 < k["ratio_to_full_copy"] < 1 for k in kinds.values())
    assert kinds["finetune (lora)"]["median_bytes"] < kinds["finetune (full)"]["median_bytes"]

    assert fig["table1"]["cold"]["seconds"] == pytest.approx(3770.015972)
    assert fig["table1"]["warm"]["seconds"] is None  # no results/tables/table1.csv here
    assert [r["job"] for r in fig["peak_rss"]] == ["prepare_base_model/toy", "edit_model/debias"]
    assert fig["peak_rss"][0]["max_rss_mb"] == 1400.5

    for line in ("1. sampling", "ratio:", "2. shared work", "3. storage", "cold run (Snakemake's elapsed time): 3770.0 s",
                 "warm re-run (nothing to do): not measured", "1400.5 MB  prepare_base_model/toy"):
        assert line in out


def test_rule_benchmarks_prints_each_job_and_the_totals(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("rule_benchmarks", REPO / "benchmarks" / "rule_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    rules = tmp_path / "benchmarks" / "rules"
    for rel, lines in {"sample_promptset/sd14/base/p.tsv": ["10.0\t0\t900.5", "12.0\t0\t950.0"],  # re-run: last line
                       "sample_promptset/sd14/ed-x/p.tsv": ["8.0\t0\t800.0"],
                       "finetune_full/sd14/ft-full.tsv": ["100.0\t0\t17000.0"],
                       "edit_model/sd14/x.tsv": ["NA\tNA\tNA"]}.items():  # killed before a measurement
        (rules / rel).parent.mkdir(parents=True, exist_ok=True)
        (rules / rel).write_text(header + "".join(line + "\t1" * 7 + "\n" for line in lines))
    rows = module.read_rule_benchmarks(tmp_path)
    assert [(r["rule"], r["job"], r["seconds"], r["max_rss_mb"]) for r in rows] == [
        ("finetune_full", "sd14/ft-full", 100.0, 17000.0), ("sample_promptset", "sd14/base/p", 12.0, 950.0),
        ("sample_promptset", "sd14/ed-x/p", 8.0, 800.0)]
    per_rule = module.by_rule(rows)
    assert per_rule[1] == dict(rule="sample_promptset", jobs=2, seconds=20.0, max_seconds=12.0, max_rss_mb=950.0)
    module.main(["--workdir", str(tmp_path), "--by-rule", "--markdown"])
    out = capsys.readouterr().out
    assert "| finetune_full | 1 | 100.0 | 100.0 | 17000 |" in out
    assert "3 jobs, 120 s in all" in out and "largest peak RSS 17000 MB (finetune_full sd14/ft-full)" in out


def test_grad_mode_comparison_finds_the_same_images(tiny_sd1, one_thread, capsys):
    """bench_sampling.py --grad-mode: the sampler under inference_mode draws what it drew under no_grad."""
    from editrobust.sampling import SamplingSettings

    spec = importlib.util.spec_from_file_location("bench_sampling", REPO / "benchmarks" / "bench_sampling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.compare_grad_modes(tiny_sd1, ["a lime", "a ceo", "the king"], [0, 1, 2],
                             SamplingSettings(steps=2, guidance=4.0, batch_size=2), repeats=1)
    out = capsys.readouterr().out
    assert "inference_mode / no_grad:" in out and "identical images: True" in out
