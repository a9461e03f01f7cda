"""The SLURM workflow profile (profiles/slurm): what each job asks SLURM for.

One test submits a small study through snakemake-executor-plugin-slurm to stand-in SLURM commands
(tests/slurm_standin.py) that run each job as SLURM would, and reads the sbatch lines; the others
dry-run the default config with the profile and read every job's resources.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import slurm_standin

pytestmark = pytest.mark.workflow

PROFILE = "profiles/slurm"


def profile(repo) -> dict:
    return yaml.safe_load((repo / PROFILE / "config.yaml").read_text())


def rule_blocks(repo) -> dict[str, str]:
    """{rule name: its text} for every `rule NAME:` of workflow/rules/*.smk (the loop-made
    fine-tune rules appear as their `rule:` block, keyed by the file and position)."""
    blocks = {}
    for smk in sorted((repo / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^\s*rule\s*(\w*)\s*:\s*$", smk.read_text(), flags=re.M)
        for k in range(1, len(parts), 2):
            blocks[parts[k] or f"{smk.name}#{k // 2}"] = parts[k + 1]
    return blocks


def local_rules(repo) -> set[str]:
    names = set()
    for path in [repo / "Snakefile", *sorted((repo / "workflow" / "rules").glob("*.smk"))]:
        for block in re.findall(r"^localrules:\s*\n((?:[ \t]+\w+,?\s*\n)+)", path.read_text(), flags=re.M):
            names |= set(re.findall(r"\w+", block))
    return names


def expected_resources(prof: dict, rule: str) -> dict:
    """runtime and mem_mb the profile gives a rule: its set-resources class, else the defaults."""
    return {**prof["default-resources"], **prof["set-resources"].get(rule, {})}


def test_profile_requests_no_global_gpu_limit_and_gives_every_class_runtime_and_memory(repo):
    prof = profile(repo)
    assert prof["executor"] == "slurm"
    # a `gpu` limit is global: it would let one GPU job run at a time on the whole cluster
    assert "gpu" not in (prof.get("resources") or {})
    for rule, res in {"(default)": prof["default-resources"], **prof["set-resources"]}.items():
        assert isinstance(res.get("runtime"), int) and res["runtime"] > 0, rule
        assert isinstance(res.get("mem_mb"), int) and res["mem_mb"] > 0, rule
        # the GPU request is the rule's own `gpu=1`; a gres here would add a second request
        assert not {"gpu", "gres", "slurm_extra"} & set(res), rule


def test_every_rule_that_uses_the_device_requests_one_gpu(repo):
    """A rule runs torch models exactly when it passes the device (`device=R.device`) and then it
    declares the GPU token (`gpu=R.torch_gpu`: 1 unless `device: cpu`), and the other way round:
    a rule holding the token without the device once ran the ReFACT statistic on the CPU.
    (prepare_base_model declares both: on a workstation it takes the one GPU token as well.)"""
    blocks = rule_blocks(repo)
    uses_device = {name for name, text in blocks.items() if re.search(r"^\s*device=R\.device,?\s*$", text, flags=re.M)}
    requests_gpu = {name for name, text in blocks.items() if re.search(r"^\s*gpu=R\.torch_gpu,?\s*$", text, flags=re.M)}
    assert uses_device and uses_device == requests_gpu, uses_device ^ requests_gpu
    # and their scripts read it (runtime.job_device), the one way every torch job does
    scripts = {name: re.search(r'"\.\./scripts/(\w+\.py)"', text).group(1) for name, text in blocks.items()
               if name in uses_device}
    for name, script in scripts.items():
        assert "job_device(snakemake)" in (repo / "workflow" / "scripts" / script).read_text(), (name, script)
    assert {"prepare_base_model", "sample_promptset", "edit_model"} <= requests_gpu
    assert "score_images" not in requests_gpu


def _dry_run_resources(snakemake_exe, repo, workdir, *targets, device="cuda") -> dict[str, list[dict]]:
    """{rule: [resources of each job]} from `snakemake -n --workflow-profile profiles/slurm`, with
    the default config on `device` (it says `cpu`: the toy runs on CPUs)."""
    # targets first: `--configfile` and `--config` take several values and would swallow them
    cmd = [snakemake_exe, *targets, "-s", str(repo / "Snakefile"), "--directory", str(workdir), "-n",
           "--config", f"device={device}", "--workflow-profile", str(repo / PROFILE),
           "--configfile", str(repo / "config/config.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    jobs: dict[str, list[dict]] = {}
    rule = None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif rule and (m := re.match(r"^\s+resources: (.*)$", line)):
            res = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
            jobs.setdefault(rule, []).append(res)
            rule = None
    return jobs


def test_dry_run_of_the_default_config_with_the_slurm_profile(repo, snakemake_exe, tmp_path):
    jobs = _dry_run_resources(snakemake_exe, repo, tmp_path, "all", "tables")
    prof = profile(repo)
    local = local_rules(repo)
    gpu_rules = {r for r, js in jobs.items() if all(j.get("gpu") == "1" for j in js)}
    assert {"prepare_base_model", "refact_statistic", "edit_model", "cache_latents", "sample_promptset",
            "finetune_full", "finetune_lora_edited", "quality_metrics"} <= gpu_rules
    assert not any(j.get("gpu") for r in jobs.keys() - gpu_rules for j in jobs[r])
    # on `device: cpu` no job asks for a GPU, and the torch jobs take one thread each
    cpu_jobs = _dry_run_resources(snakemake_exe, repo, tmp_path, "all", "tables", device="cpu")
    assert cpu_jobs.keys() == jobs.keys()
    assert all(j.get("gpu", "0") == "0" for js in cpu_jobs.values() for j in js)
    for rule, rule_jobs in jobs.items():
        if rule in local:
            continue
        # every submitted rule has its class in the profile; fine-tune rules take the defaults
        assert rule in prof["set-resources"] or rule.startswith("finetune_"), f"{rule}: no class in {PROFILE}"
        want = expected_resources(prof, rule)
        for res in rule_jobs:
            assert (int(res["runtime"]), int(res["mem_mb"])) == (want["runtime"], want["mem_mb"]), rule


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, repo, snakemake_exe):
    """A small study (a local tiny SD1.x model, 2 prompts, the black-image scorer) run through the
    SLURM executor and the stand-in SLURM commands."""
    from editrobust.models.builders import build_sd1_pipeline

    from conftest import TINY_SIZES

    work = tmp_path_factory.mktemp("slurm")
    build_sd1_pipeline(TINY_SIZES, seed=0).save_pretrained(work / "tiny_sd1", safe_serialization=True)
    (work / "prompts.csv").write_text("prompt_id,prompt\np0,a photo of a cat\np1,a photo of a dog\n")
    config = {
        "device": "auto",  # cuda on a cluster's GPU node; here the stand-in runs the jobs on the CPU
        "models": {"tiny": {"kind": "path", "path": str(work / "tiny_sd1"), "family": "sd1",
                            "sampling": {"steps": 1, "batch_size": 2}}},
        "promptsets": {"two": {"source": "csv", "path": str(work / "prompts.csv"), "images_per_prompt": 1}},
        "scorers": {"black": {"kind": "black"}},
        "evaluations": [{"model": "tiny", "promptset": "two", "variants": ["base"], "scorers": ["black"]}],
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    state = work / "slurm_state"
    state.mkdir()
    bin_dir = slurm_standin.install(work / "bin")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               FAKE_SLURM_STATE=str(state))
    env.pop("SLURM_JOB_ID", None)
    cmd = [snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--workflow-profile", str(repo / PROFILE),
           "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5", "--retries", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return work, state


def _options(argv: list[str]) -> dict[str, str]:
    """sbatch/srun argv as {option: value} (`--x=v` and `-x v` forms; flags map to '')."""
    opts, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            opts[k] = v
        elif a.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            opts[a] = argv[i + 1]
            i += 1
        else:
            opts[a] = ""
        i += 1
    return opts


def test_slurm_submissions_request_a_gpu_only_for_gpu_rules(slurm_run, repo):
    work, state = slurm_run
    # the study ran: its outputs were written by the jobs that the stand-in sbatch ran
    summary = pd.read_csv(work / "results/summaries/tiny/base/two/black.csv")
    assert summary["images"].iloc[-1] == 2

    submissions = {}
    for argv in slurm_standin.read_calls(state, "sbatch"):
        opts = _options(argv)
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", opts["--comment"]).group(1)
        submissions[rule] = opts
    # local rules (promptset, summaries, all) ran on the submit host; the rest went to SLURM
    assert sorted(submissions) == ["prepare_base_model", "sample_promptset", "score_images"]
    prof = profile(repo)
    for rule, opts in submissions.items():
        want = expected_resources(prof, rule)
        assert opts["-t"] == str(want["runtime"]) and opts["--mem"] == str(want["mem_mb"]), rule
        assert opts["-A"] == slurm_standin.ACCOUNT and opts["-p"] == slurm_standin.DEFAULT_PARTITION, rule
        assert opts["--cpus-per-task"] == ("1" if rule == "score_images" else "2"), rule  # the rule's threads
        assert "--gres" not in opts, rule
    assert submissions["prepare_base_model"]["--gpus"] == "1"
    assert submissions["sample_promptset"]["--gpus"] == "1"
    assert "--gpus" not in submissions["score_images"]
    # CPU jobs state their task count; GPU jobs leave the task geometry to SLURM
    assert submissions["score_images"]["--ntasks"] == "1"

    # inside each job, the plugin's job step runs the rule with srun, again with the GPU only where asked
    steps = [_options(argv[:argv.index(next(a for a in argv if not a.startswith("-")))])
             for argv in slurm_standin.read_calls(state, "srun")]
    assert len(steps) == 3
    assert sorted(s.get("--gpus", "0") for s in steps) == ["0", "1", "1"]
