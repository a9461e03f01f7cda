"""benchmarks/gpu_check.py at tiny size on the CPU, and the full-size architectures' shapes."""

import importlib.util
import json

import pytest
import torch

from editrobust.models.full_size import parameter_counts

from conftest import REPO


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_every_architecture_and_finetuner(gpu_check, tmp_path, capsys, one_thread):
    out = tmp_path / "gpu_check.json"
    rows = gpu_check.main(["--tiny", "--repeats", "1", "--train-steps", "1", "--out", str(out)])
    table = capsys.readouterr().out
    tasks = {(r["arch"], r["task"]) for r in rows}
    assert tasks == {(a, t) for a in ("sd14", "sdxl", "flux_schnell")
                     for t in ("sampling", "full", "lora", "dora", "dreambooth")}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["value"] > 0 and r["unit"] == ("images/s" if r["task"] == "sampling" else "steps/s")
        assert r["peak_gb"] is None  # no GPU memory on a CPU
    # the methods' own batch sizes (DreamBooth trains one image per step)
    assert {r["setting"].split(",")[0] for r in rows if r["task"] == "dreambooth"} == {"batch 1"}
    saved = json.loads(out.read_text())
    assert saved["size"] == "tiny" and saved["rows"] == json.loads(json.dumps(rows))
    assert "flux_schnell  dreambooth" in table and "images/s" in table


def test_a_failed_measurement_is_a_row_with_its_status(gpu_check):
    def out_of_memory():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def broken():
        raise ValueError("shapes do not match")

    cpu = torch.device("cpu")
    assert gpu_check.run_one(out_of_memory, device=cpu) == dict(value=None, unit=None, peak_gb=None, status="OOM")
    assert gpu_check.run_one(broken, device=cpu)["status"] == "error: ValueError: shapes do not match"
    assert gpu_check.run_one(lambda: dict(value=2.0, unit="steps/s", peak_gb=None), device=cpu)["status"] == "ok"


def test_unknown_architecture_is_refused(gpu_check):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--tiny", "--archs", "sd15"])


def test_full_size_architectures_have_the_released_models_parameter_counts():
    """Built on the meta device (no memory): the released checkpoints' sizes, in millions."""
    def millions(arch):
        return {k: round(v / 1e6, 1) for k, v in parameter_counts(arch).items()}

    assert millions("sd14") == {"vae": 83.7, "text_encoder": 123.1, "unet": 859.5}
    assert millions("sdxl") == {"vae": 83.7, "text_encoder": 123.1, "text_encoder_2": 694.7, "unet": 2567.5}
    flux = millions("flux_schnell")
    assert flux["transformer"] == 11891.2 and flux["text_encoder"] == 123.1
    # T5-XXL's 4,762.3 M with its 32,128-row embedding; ours has CLIP's 49,408 rows (see full_size.py)
    assert round(flux["text_encoder_2"] - (49408 - 32128) * 4096 / 1e6, 1) == 4762.3
