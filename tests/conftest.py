import json
import os
import sys
from pathlib import Path

# Before torch loads OpenMP: passive waiting, so tests sharing the CPU with a job stay fast (see Snakefile).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "src" / "editrobust" / "schemas" / "config.schema.yaml"
# SD1Sizes of the tiny random SD1.x models the tests build.
TINY_SIZES = dict(vae_channels=[8, 8, 8], unet_channels=[16, 16], norm_num_groups=8, unet_head_dim=4,
                  text_hidden=32, text_layers=2, text_heads=2, text_intermediate=64)


def write_edit_record(root: Path, model: str, editor: str, reached: bool = True) -> Path:
    """The variant.json of an edit as edit_model writes it, as far as tables and figures read it."""
    path = root / f"results/models/{model}/ed-{editor}/variant.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    target = {"reached": reached, "measure": "a measure", "value": 1.0 if reached else 0.0, "threshold": 0.5,
              "already_met": False, "cause": ""}
    path.write_text(json.dumps({"kind": "edit", "reached": reached, "target": target}))
    return path


@pytest.fixture(scope="module")
def one_thread():
    # Tiny ops are dominated by thread start-up; on a busy machine 2 threads are ~100x slower than 1.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def snakemake_exe() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    return str(exe) if exe.exists() else "snakemake"


@pytest.fixture(scope="session")
def tiny_sd1():
    """A tiny random SD1.x pipeline (real module names), shared by the tests that only read it."""
    from editrobust.models.builders import build_sd1_pipeline

    return build_sd1_pipeline(TINY_SIZES, seed=0)


def build_tiny_safety_checker():
    """A tiny random StableDiffusionSafetyChecker (real class, seeded; random concept embeddings)
    and its CLIP image processor at 32 px."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100, max_position_embeddings=16),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8)
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
    return checker, CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
