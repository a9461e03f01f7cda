"""The pre-flight check: what the targets need (the same files as Snakemake's own DAG), inputs
missing offline named with their fetch command, the disk estimate, and the GPU memory check."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections import namedtuple

import pandas as pd
import pytest
import torch

from editrobust import paths, preflight
from editrobust.config import load_yaml, validate_config
from editrobust.editors import EDITORS
from editrobust.models.full_size import build_random_pipeline
from editrobust.workflow import Rules


@pytest.fixture(scope="module")
def toy_config(repo):
    return validate_config(load_yaml(repo / "config" / "config.yaml"))


@pytest.fixture(scope="module")
def paper_config(repo):
    return validate_config(load_yaml(repo / "config" / "paper.yaml"))


@pytest.fixture
def offline_and_empty(tmp_path, monkeypatch):
    """An empty working directory, offline, with empty Hugging Face and torch caches."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("EDITROBUST_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_the_plan_is_the_files_of_snakemakes_own_dag(toy_config, repo, snakemake_exe, tmp_path):
    """Walking back through workflow.Rules finds exactly the jobs Snakemake plans for `report`;
    Snakemake lists besides only the other outputs of those jobs (a figure's CSV; a fine-tune
    writes only the checkpoints something reads, which the walk finds too)."""
    proc = subprocess.run([snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(tmp_path), "report",
                           "--summary", "--cores", "1", "--configfile", str(repo / "config" / "config.yaml")],
                          capture_output=True, text=True, timeout=300, check=True)
    summary = pd.read_csv(__import__("io").StringIO(proc.stdout), sep="\t")
    snakemake_files = set(summary["output_file"])
    R = Rules(toy_config)
    plan = preflight.plan_targets(toy_config, R.table_targets() + R.figure_targets())
    assert len(plan.files) > 300 and plan.files <= snakemake_files
    for extra in snakemake_files - plan.files:
        if extra.startswith("results/figures/"):
            stem = os.path.splitext(extra)[0]
            assert any(p.startswith(stem + ".") for p in plan.files), extra
        else:
            fields = preflight.match(paths.VARIANT_JSON, extra)
            assert fields and "@" in fields["variant"], extra
            final = paths.variant_json(fields["model"], fields["variant"].split("@")[0])
            assert final in plan.files, extra
    assert not plan.downloads and not plan.hub_models and plan.scorers == {"oracle"}


def test_nano_config_passes(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert preflight.main(["--configfile", str(repo / "tests" / "configs" / "nano.yaml")]) == 0
    out = capsys.readouterr().out
    assert "everything the targets need is here" in out
    assert "scorers.oracle" in out and "all planned outputs" in out


def test_paper_config_offline_names_every_missing_input_and_its_fetch_command(paper_config, offline_and_empty):
    checks = {(c.what, c.name): c for c in preflight.preflight(paper_config, configfile="config/paper.yaml")}
    for model in ("sd14", "sdxl", "flux", "sdxl.vae"):
        c = checks["hub snapshot", f"models.{model}"]
        assert c.status == preflight.MISSING
        record = paths.fill(paths.HUB_SNAPSHOT, model=model.split(".")[0])
        assert f"snakemake {record}" in c.fix and "hf download" in c.fix
    for download in ("naruto", "dreambooth", "road", "i2p", "wikitext103", "coco_captions", "coco_images"):
        c = checks["download", f"downloads.{download}"]
        assert c.status == preflight.MISSING and "--configfile config/paper.yaml" in c.fix
        assert f"snakemake {paths.fill(paths.MANIFEST, download=download)}" in c.fix
    for clip in ("vitb32", "vitb32_laion", "bigg", "vitl14"):
        assert checks["weights", f"clip_models.{clip}"].status == preflight.MISSING
        assert "hf download" in checks["weights", f"clip_models.{clip}"].fix
    assert checks["weights", "scorers.checker"].status == preflight.MISSING
    assert checks["weights", "quality_sets.coco.fid"].status == preflight.MISSING
    assert "torch-fidelity" in checks["weights", "quality_sets.coco.fid"].fix
    # the promptset CSV the config points at is not in this empty directory
    assert checks["input file", "config/paper_professions.csv"].status == preflight.MISSING
    # the study's grid: terabytes of images and full fine-tunes
    assert checks["disk", "all planned outputs"].status == preflight.FAIL
    text = preflight.render(list(checks.values()))
    assert "check(s) would fail" in text and "models.flux" in text


def test_a_present_download_and_snapshot_record_pass(paper_config, offline_and_empty):
    manifest = offline_and_empty / paths.fill(paths.MANIFEST, download="road")
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    record = offline_and_empty / paths.fill(paths.HUB_SNAPSHOT, model="sd14")
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    checks = {(c.what, c.name): c for c in preflight.input_checks(preflight.plan_targets(paper_config), paper_config)}
    assert checks["download", "downloads.road"].status == preflight.OK
    assert checks["hub snapshot", "models.sd14"].status == preflight.OK
    assert checks["hub snapshot", "models.sdxl"].status == preflight.MISSING


def test_scorer_weights_found_where_the_scorer_reads_them(tmp_path, offline_and_empty):
    from editrobust.scoring import SCORERS

    checker = SCORERS.get("sd_safety_checker")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        checker.locate_weights(checker.with_defaults({"kind": "sd_safety_checker", "weights": str(tmp_path)}))
    for f in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (tmp_path / f).write_text("{}")
    assert checker.locate_weights({"weights": str(tmp_path)}) == str(tmp_path)
    nudenet = SCORERS.get("nudenet")
    assert nudenet.locate_weights({}).endswith(".onnx")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        nudenet.locate_weights({"model_path": str(tmp_path / "nope.onnx")})


def test_editors_count_exactly_the_parameters_their_delta_writes(tiny_sd1):
    """`changed_parameters` (the disk estimate) is the size of the delta the edit stores."""
    erase = EDITORS.get("uce_erase")
    entry = erase.with_defaults({"method": "uce_erase", "edit_concepts": ["a cat"]})
    from editrobust.editors.uce import uce_erase

    delta = uce_erase(tiny_sd1, ["a cat"])
    assert erase.changed_parameters(tiny_sd1, entry) == sum(t.numel() for c in delta.values() for t in c.values())
    sdxl = build_random_pipeline("sdxl", size="tiny")
    refact = EDITORS.get("refact")
    from editrobust.editors.refact import (
        fc2_key,  # the key of the weight a ReFACT delta stores
    )

    fc2 = [enc.get_parameter(fc2_key(enc, 0)).numel() for enc in (sdxl.text_encoder, sdxl.text_encoder_2)]
    assert fc2[0] != fc2[1]  # two encoders of different widths: both are counted
    assert refact.changed_parameters(sdxl, {"layer": 0}) == sum(fc2)


def test_full_size_counts_on_the_meta_device():
    sizes = preflight.model_sizes({"kind": "hub", "family": "sd1", "dtype": "float16",
                                   "sampling": {"steps": 50, "guidance": 7.5}})
    assert (sizes.height, sizes.width, sizes.dtype_bytes) == (512, 512, 2)
    assert sizes.components["unet"] == 859_520_964
    assert preflight.trained_parameters(sizes, "full", {"method": "full", "dataset": "d", "steps": 1}) == 859_520_964
    lora = preflight.trained_parameters(sizes, "lora", {"method": "lora", "dataset": "d", "steps": 1, "rank": 4})
    # rank 4 on q, k, v, out of 12 CLIP-L layers: 4 x (768 + 768) x 4 x 12
    assert lora == 4 * (768 + 768) * 4 * 12


def test_disk_check_fails_when_the_outputs_do_not_fit(monkeypatch, tmp_path):
    items = [preflight.DiskItem("images", 3 * 1024 ** 3), preflight.DiskItem("edit", None),
             preflight.DiskItem("training state (largest, while it runs)", 5),
             preflight.DiskItem("training state (largest, while it runs)", 7)]
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(0, 0, 2 * 1024 ** 3))
    total = preflight.disk_checks(items, str(tmp_path))[-1]
    assert total.status == preflight.FAIL and total.failed
    assert "3.0 GiB (+1 of unknown size) of 2.0 GiB free" in total.detail
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(0, 0, 4 * 1024 ** 3))
    assert preflight.disk_checks(items, str(tmp_path))[-1].status == preflight.OK


def test_gpu_check_compares_the_largest_job_with_the_cards_memory(monkeypatch):
    props = namedtuple("props", "total_memory")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props(24 * 1024 ** 3))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Test GPU")
    jobs = [("sample sd14/base", 2 * 1024 ** 3), ("fine-tune sdxl/ft-full", 40 * 1024 ** 3)]
    check = preflight.gpu_check(jobs, "auto")
    assert check.failed and check.name == "fine-tune sdxl/ft-full" and "Test GPU" in check.detail
    assert preflight.gpu_check(jobs[:1], "cuda").status == preflight.OK
    assert preflight.gpu_check(jobs, "cpu") is None  # a CPU config never uses the card


def test_gpu_memory_of_the_paper_grid_names_its_largest_job(paper_config, offline_and_empty):
    plan = preflight.plan_targets(paper_config)
    sizes = {m: preflight.model_sizes(paper_config["models"][m]) for m in ("sd14", "sdxl", "flux")}
    jobs = dict(preflight.job_memory(plan, paper_config, sizes))
    # editors load the whole pipeline in float32: FLUX's 17 B parameters are the largest job
    job, need = max(jobs.items(), key=lambda j: j[1])
    assert job.startswith("edit flux/") and need == sizes["flux"].total * 4
    # fp16 weights, then per trained parameter fp32 master, gradient and 2 moments (+ EMA): SD1.4's full
    # fine-tune (EMA) trains the UNet and the text encoder; SDXL's (no EMA) the UNet and both text
    # encoders; the UNet-only reference script the UNet alone
    sd, xl = sizes["sd14"].components, sizes["sdxl"].components
    assert jobs["fine-tune sd14/ft-full"] == sizes["sd14"].total * 2 + (sd["unet"] + sd["text_encoder"]) * 4 * 5
    assert jobs["fine-tune sdxl/ft-full_sdxl"] == \
        sizes["sdxl"].total * 2 + (xl["unet"] + xl["text_encoder"] + xl["text_encoder_2"]) * 4 * 4
    assert jobs["fine-tune sdxl/ft-full_unet_sdxl"] == sizes["sdxl"].total * 2 + xl["unet"] * 4 * 4
    assert jobs["sample sd14/base"] == sizes["sd14"].total * 2


def test_a_missing_input_file_fails_naming_it(toy_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(toy_config)
    config["promptsets"]["toy_professions"] = {"source": "csv", "path": "my_prompts.csv"}
    checks = preflight.preflight(config, [paths.table("table1")])
    bad = [c for c in checks if c.failed]
    assert [(c.what, c.name) for c in bad] == [("input file", "my_prompts.csv")]


@pytest.mark.workflow
def test_snakemake_preflight_exits_non_zero_naming_what_fails(repo, snakemake_exe, tmp_path):
    import yaml

    def preflight_run(configfile):
        return subprocess.run([snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(tmp_path), "preflight",
                               "--cores", "1", "--configfile", str(configfile)],
                              capture_output=True, text=True, timeout=300)

    ok = preflight_run(repo / "tests" / "configs" / "nano.yaml")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "everything the targets need is here" in ok.stdout
    assert not (tmp_path / "results").exists()  # it builds nothing
    config = load_yaml(repo / "tests" / "configs" / "nano.yaml")
    config["promptsets"]["concepts"] = {"source": "csv", "path": "my_prompts.csv"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    bad = preflight_run(tmp_path / "bad.yaml")
    assert bad.returncode != 0
    assert "my_prompts.csv" in bad.stdout and "1 check(s) would fail" in bad.stdout
    assert "1 check(s) would fail" in (tmp_path / "logs" / "preflight.log").read_text()


def test_human_labels_wait_for_the_annotators_files(toy_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    R = Rules(toy_config)
    kit = next(iter(toy_config["annotation_kits"]))
    labels = sorted(R.kit_labels(kit).values())[0]
    fields = preflight.match(toy_config["scorers"]["human"]["labels"], labels)
    target = paths.scores(fields["model"], fields["variant"], fields["promptset"], "human")
    check = next(c for c in preflight.preflight(toy_config, [target]) if c.name == labels)
    assert check.status == preflight.MISSING and "snakemake annotation_kits" in check.fix
    returned = tmp_path / R.kit_spec(kit)["returned"]
    returned.mkdir(parents=True)
    (returned / "alice.csv").write_text("file,label\n")
    check = next(c for c in preflight.preflight(toy_config, [target]) if c.name == labels)
    assert check.status == preflight.OK and "1 annotator file(s)" in check.detail
