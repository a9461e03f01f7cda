"""The tables stage in Snakemake: make_table reads exactly its score files and writes .csv/.md/.tex.

Score files are written by the test itself and the other stages' rules are switched off with
--allowed-rules, so nothing is trained or sampled.
"""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
import yaml

from conftest import write_edit_record

pytestmark = pytest.mark.workflow

PROFESSIONS = ["ceo", "nurse"]


def snakemake(exe, repo, workdir, configfile, *args, check=True):
    cmd = [exe, "-s", str(repo / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
           "--allowed-rules", "make_table", "tables", "--cores", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def expected_table1_scores(finetuners) -> list[str]:
    variants = ["base", "ed-debias"] + [v for f in finetuners for v in (f"ft-{f}", f"ed-debias+ft-{f}")]
    return [f"results/scores/nano/{v}/professions/oracle.csv" for v in variants]


def write_scores(workdir, paths):
    for i, path in enumerate(paths):
        rows = [dict(prompt_id=f"{p}-{t}", seed=s, file=f"{p}{t}{s}.png", group=p,
                     gender="woman" if (t + s + i) % 3 == 0 else "man", scorer="oracle")
                for p in PROFESSIONS for t in range(2) for s in range(3)]
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(workdir / path, index=False)


@pytest.fixture
def setup(repo, tmp_path):
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    finetuners = list(cfg.get("finetuners") or {})
    cfg["promptsets"]["professions"] = {"source": "toy", "set": "professions", "images_per_prompt": 3}
    cfg["editors"]["debias"] = {"method": "uce_debias", "concepts": ["a ceo"]}
    cfg["tables"] = {
        "table1": {"kind": "debias", "model": "nano", "editor": "debias", "finetuners": finetuners,
                   "promptset": "professions", "scorer": "oracle", "bootstrap_resamples": 50},
        "other": {"kind": "debias", "model": "nano", "editor": "debias", "finetuners": [],
                  "promptset": "professions", "scorer": "oracle", "ci": False},
    }
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    expected = expected_table1_scores(finetuners)
    write_scores(tmp_path, expected)
    write_edit_record(tmp_path, "nano", "debias")  # the edit's record: did it reach its target?
    return tmp_path, configfile, cfg, expected + ["results/models/nano/ed-debias/variant.json"]


def test_table1_requires_exactly_its_score_files_and_writes_three_renderings(setup, repo, snakemake_exe):
    workdir, configfile, cfg, expected = setup
    dry = snakemake(snakemake_exe, repo, workdir, configfile, "-n", "results/tables/table1.csv").stdout
    inputs = [line.split("input:", 1)[1] for line in dry.splitlines() if line.strip().startswith("input:")]
    assert len(inputs) == 1 and [p.strip() for p in inputs[0].split(",")] == expected

    snakemake(snakemake_exe, repo, workdir, configfile, "tables")
    for name in ("table1", "other"):
        for ext in ("csv", "md", "tex"):
            assert (workdir / f"results/tables/{name}.{ext}").stat().st_size > 0
    table = pd.read_csv(workdir / "results/tables/table1.csv")
    assert table["profession"].tolist() == PROFESSIONS + ["Avg.", "std.", "no gender"]
    assert "| profession | Base M |" in (workdir / "results/tables/table1.md").read_text()
    assert not list((workdir / "results").rglob("*.tmp"))

    # changing one table's entry re-runs that table only
    cfg["tables"]["other"]["ci"] = True
    configfile.write_text(yaml.safe_dump(cfg))
    dry = snakemake(snakemake_exe, repo, workdir, configfile, "-n", "tables").stdout
    assert "wildcards: table=other" in dry and "wildcards: table=table1" not in dry

