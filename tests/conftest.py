import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


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

    sizes = dict(vae_channels=[8, 8, 8], unet_channels=[16, 16], norm_num_groups=8, unet_head_dim=4,
                 text_hidden=32, text_layers=2, text_heads=2, text_intermediate=64)
    return build_sd1_pipeline(sizes, seed=0)
