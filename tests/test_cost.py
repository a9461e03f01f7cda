"""The cost estimate: FLOPs counted on the real code paths, the work each plugin declares, GPU
seconds from FLOPs (or from a GPU measurement, scaled), and the affordable paper config."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from editrobust import cost, preflight
from editrobust.config import load_yaml, validate_config
from editrobust.editors import EDITORS
from editrobust.finetune import make_finetuner
from editrobust.models.full_size import build_random_pipeline
from editrobust.sampling import SamplingSettings


@pytest.fixture(scope="module")
def tiny_flops():
    return cost.ModelFlops(lambda: build_random_pipeline("sd14", "tiny"))


def test_count_flops_counts_a_matmul_exactly():
    layer = torch.nn.Linear(8, 16, bias=False)
    assert cost.count_flops(lambda: layer(torch.zeros(4, 8))) == 2 * 4 * 8 * 16
    # the backward of a trained layer: the input's gradient and the weight's, twice the forward again
    x = torch.zeros(4, 8, requires_grad=True)
    assert cost.count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 4 * 8 * 16


def test_an_image_is_its_steps_rows_prompt_encodings_and_one_decode(tiny_flops):
    f, size = tiny_flops, tiny_flops.native
    assert f.denoiser(size) > 0 and f.text() > 0 and f.decode(size) > 0
    guided = SamplingSettings(steps=3, guidance=7.5)
    assert f.image(guided, size) == pytest.approx(3 * 2 * f.denoiser(size) + 2 * f.text() + f.decode(size))
    unguided = SamplingSettings(steps=3, guidance=1.0)  # no classifier-free guidance: one row per step
    assert f.image(unguided, size) == pytest.approx(3 * f.denoiser(size) + f.text() + f.decode(size))


def test_training_rows_count_the_gradients_the_finetuner_asks_for(tiny_flops):
    f, size = tiny_flops, tiny_flops.native
    forward = f.denoiser(size) + f.text()
    unet = f.train_row(None, size)  # the whole denoiser trained, text frozen: forward + twice it back
    assert 2.5 * f.denoiser(size) < unet - f.text() < 3.5 * f.denoiser(size)
    lora = f.train_row({"method": "lora", "dataset": "d", "steps": 1, "rank": 2, "alpha": 2}, size)
    # a text-encoder adapter: the frozen UNet passes gradients through (no weight gradients of its own)
    assert forward < lora < unet
    checkpointed = f.train_row({"method": "full", "dataset": "d", "steps": 1, "gradient_checkpointing": True}, size)
    assert checkpointed == pytest.approx(f.train_row({"method": "full", "dataset": "d", "steps": 1}, size)
                                         + f.denoiser(size))


def test_plugins_declare_their_work():
    esd = EDITORS.get("esd")
    work = esd.work(esd.with_defaults({"method": "esd", "concepts": ["nudity"], "train_method": "esd-x"}))
    # 200 iterations: x_t drawn with 49 rows on average + 2 target rows, one trained row; 8 checks
    assert (work.denoiser_forwards, work.denoiser_trains, work.images) == (200 * 51 + 8 * 53, 200, 0)
    debias = EDITORS.get("uce_debias")
    entry = debias.with_defaults({"method": "uce_debias", "concepts": ["a ceo", "a nurse", "a farmer"],
                                  "max_iterations": 5, "images_per_iteration": 4, "reselect_top": 2,
                                  "reselect_rounds": 3})
    assert debias.work(entry).images == (5 + 2 * 3) * 3 * 4 and debias.work(entry).bound
    assert EDITORS.get("uce_erase").work({}).images == 0  # a closed form
    full = make_finetuner({"method": "full", "dataset": "d", "steps": 10, "batch": 2, "gradient_accumulation_steps": 3})
    assert full.work() == (60, 0, None)
    prior = make_finetuner({"method": "dreambooth", "dataset": "d", "steps": 10, "batch": 1,
                            "with_prior_preservation": True, "num_class_images": 7})
    assert prior.work()[:2] == (20, 7)


def test_the_measured_settings_are_gpu_checks(repo):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", repo / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert cost.GPU_CHECK_SAMPLING == {a: (s["steps"], s["guidance"]) for a, s in gpu_check.SAMPLING.items()}


def test_vit_flops_from_the_architecture_name():
    assert cost.vit_flops({"arch": "ViT-B-32"}) == (2 * 87.8e6 * 50, "ViT-B-32")
    assert cost.vit_flops({"hub_id": "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"})[1] == "ViT-bigG-14"
    assert cost.vit_flops({"arch": "RN50"})[1] == "ViT-L-14 (assumed)"


@pytest.fixture
def tiny_config(repo, tmp_path, monkeypatch):
    """The nano workflow config on a tiny random SD1 model (a family, so GPU measurements apply)."""
    monkeypatch.chdir(tmp_path)
    config = load_yaml(repo / "tests" / "configs" / "nano.yaml")
    config = copy.deepcopy(config)
    config["models"] = {"nano": {"kind": "random", "family": "sd1", "size": "tiny", "seed": 0,
                                 "sampling": config["models"]["nano"]["sampling"]}}
    config["scorers"] = {"black": {"kind": "black"}}  # the oracle reads the toy world only
    for evaluation in config["evaluations"]:
        evaluation["scorers"] = ["black"]
    return validate_config(config)


def test_estimate_converts_flops_to_gpu_seconds(tiny_config):
    est = cost.estimate(tiny_config, card="a100", utilisation=0.5)
    rate = 312e12 * 0.5
    rules = {j.rule for j in est.jobs}
    assert {"sample", "edit uce_erase", "edit refact"} <= rules
    for job in est.jobs:
        assert job.seconds == pytest.approx(job.flops / rate * (2.0 if job.float32 else 1.0))
    samples = [j for j in est.jobs if j.rule == "sample"]
    f = cost.ModelFlops(lambda: build_random_pipeline("sd14", "tiny"))
    per_image = f.image(SamplingSettings.from_dict(tiny_config["models"]["nano"]["sampling"]), f.native)
    assert samples and all(j.flops == pytest.approx(j.work * per_image) for j in samples)
    assert est.gpu_hours == pytest.approx(sum(j.seconds for j in est.jobs) / 3600)
    text = cost.render(est)
    assert "NVIDIA A100 SXM" in text and "extrapolated" in text and "total" in text and "images:" in text


def test_a_gpu_measurement_replaces_the_extrapolation_scaled_by_flops(tiny_config, tmp_path):
    measured = tmp_path / "gpu_check.json"
    measured.write_text(json.dumps({"machine": {"gpu": "NVIDIA H100 80GB HBM3"}, "size": "full", "rows": [
        {"arch": "sd14", "task": "sampling", "value": 2.0, "unit": "images/s", "status": "ok"}]}))
    est = cost.estimate(tiny_config, measured=measured)
    f = cost.ModelFlops(lambda: build_random_pipeline("sd14", "tiny"))
    study = SamplingSettings(steps=50, guidance=7.5)  # what gpu_check measures on SD1.4
    ratio = f.image(SamplingSettings.from_dict(tiny_config["models"]["nano"]["sampling"]), f.native) / f.image(
        study, f.native)
    for job in est.jobs:
        if job.rule == "sample":
            assert job.basis == "measured (NVIDIA H100 80GB HBM3)"
            # measured in bfloat16; this model samples in float32, at half the speed
            assert job.float32 and job.seconds == pytest.approx(job.work * 0.5 * ratio * 2)
        else:
            assert job.basis == "extrapolated"
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"size": "tiny", "rows": []}))
    with pytest.raises(ValueError, match="full-size"):
        cost.estimate(tiny_config, measured=tiny)


def test_paper_lite_plans_the_headline_tables_offline(repo):
    """The affordable config: SD1.4 only, 20 RoAD edits paired with their promptsets, one model per
    edit, the study's four fine-tunes of each edited model (config/README.md, "An affordable grid")."""
    config = validate_config(load_yaml(repo / "config" / "paper_lite.yaml"))
    table = config["tables"]["refact_sd14"]
    assert len(set(table["editors"])) == len(table["promptsets"]) == 20
    assert list(config["models"]) == ["sd14"]
    plan = preflight.plan_targets(config, [f"results/tables/{t}.csv" for t in config["tables"]])
    variants = {f["variant"] for f in plan.matching("results/models/{model}/{variant}/variant.json")}
    edited_finetunes = {v for v in variants if v.startswith("ed-") and "+ft-" in v}
    assert len(edited_finetunes) == (20 + 2) * 4  # ReFACT's 20, debias and erase; x full, LoRA, DoRA, DreamBooth
    assert preflight._image_count(config, "professions") == 6 * 3 * 60  # the planned 180 per profession


def test_jobs_counted_from_a_promptset_of_unknown_size_say_so(repo, monkeypatch):
    """A promptset whose size is known only once its inputs exist (a download not yet fetched) is
    counted as 0 images, and every job counted from it, sampling and CLIP embeddings alike, says
    so instead of passing for free."""
    config = validate_config(load_yaml(repo / "config" / "paper_lite.yaml"))
    monkeypatch.setattr(preflight, "image_counter", lambda config: (lambda promptset: None))
    est = cost.estimate(config)
    by_images = [j for j in est.jobs if j.unit == "images"]
    rules = {j.rule.split()[0] for j in by_images}
    assert {"sample", "embed"} <= rules
    assert all(j.unknown and j.work == 0 and j.flops == 0 for j in by_images)
    text = cost.render(est)
    embed = next(line for line in text.splitlines() if line.lstrip().startswith("embed"))
    assert "job(s) of unknown size" in embed
