"""`kind: hub` models: a pinned snapshot in the project cache, verified, recorded, loaded offline.

The network is replaced by `hub_fake.FakeHub`: tiny random SDXL / FLUX pipelines saved to local
folders play the hub repos, and a fetch writes them into a real hub cache layout.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from editrobust import hub
from editrobust.models.base import prepare_base_model, snapshot_hub_model
from editrobust.models.variants import load_pipeline, read_variant
from hub_fake import FakeHub, populate

pytestmark = pytest.mark.usefixtures("one_thread")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
VAE_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def remotes(tmp_path_factory):
    """Saved tiny pipelines playing hub repos, plus files a snapshot must never fetch."""
    from editrobust.models.tiny import build_tiny_flux_pipeline, build_tiny_sdxl_pipeline

    root = tmp_path_factory.mktemp("remote")
    sdxl, flux = build_tiny_sdxl_pipeline(seed=0), build_tiny_flux_pipeline(seed=0)
    sdxl.save_pretrained(root / "sdxl", safe_serialization=True)
    flux.save_pretrained(root / "flux", safe_serialization=True)
    for repo in ("sdxl", "flux"):
        (root / repo / "single_file_checkpoint.safetensors").write_bytes(b"not part of the pipeline")
        (root / repo / "unet_or_transformer_code.py").write_text("raise SystemExit('remote code ran')")
    (root / "sdxl" / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")  # never fetched
    # a replacement VAE repo (as madebyollin/sdxl-vae-fp16-fix): other weights, same architecture
    torch.manual_seed(1)
    vae = type(sdxl.vae).from_config(sdxl.vae.config)
    vae.save_pretrained(root / "vae", safe_serialization=True)
    return dict(root=root, sdxl=sdxl, flux=flux, vae=vae)


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITROBUST_HUB_CACHE", str(tmp_path / "resources" / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return tmp_path


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa)


def _prepare(name, entry, tmp_path):
    snap = tmp_path / "resources" / "snapshots" / f"{name}.json"
    snapshot_hub_model(name, entry, snap)
    out = tmp_path / "results" / "models" / name / "base"
    prepare_base_model(name, entry, out, snapshot_json=snap)
    return out, json.loads(snap.read_text())


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_hub_snapshot_is_pinned_verified_recorded_and_loads(family, remotes, caches, monkeypatch):
    fake = FakeHub().install(monkeypatch)
    fake.add(f"org/{family}", remotes["root"] / family, COMMIT)
    entry = {"kind": "hub", "hub_id": f"org/{family}", "revision": COMMIT, "family": family}
    base, record = _prepare(family, entry, caches)

    info = read_variant(base)
    assert info["source"]["revision"] == COMMIT and info["source"]["hub_id"] == f"org/{family}"
    snapshot = caches / "resources" / "hub" / f"models--org--{family}" / "snapshots" / COMMIT
    assert info["source"]["path"] == str(snapshot.resolve())
    # only the pipeline's components, safetensors and text files: no pickles, code or root checkpoints
    files = set(info["source"]["checksums"])
    assert "model_index.json" in files and any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".py")) or f == "single_file_checkpoint.safetensors" for f in files)
    for rel, digest in info["source"]["checksums"].items():
        assert hashlib.sha256((snapshot / rel).read_bytes()).hexdigest() == digest
    # loads through the ordinary loader, with the snapshot's weights
    pipe = load_pipeline(base)
    assert type(pipe).__name__ == type(remotes[family]).__name__
    denoiser = "unet" if family == "sdxl" else "transformer"
    assert _same_weights(getattr(pipe, denoiser), getattr(remotes[family], denoiser))
    # a second preparation is offline: nothing is downloaded again
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(fake.downloads)
    snapshot_hub_model(family, entry, caches / "again.json")
    assert len(fake.downloads) == n


def test_offline_and_missing_is_a_clear_error_naming_repo_revision_and_command(caches, monkeypatch):
    fake = FakeHub().install(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = {"kind": "hub", "hub_id": "org/sdxl", "revision": COMMIT, "family": "sdxl"}
    out = caches / "snap.json"
    with pytest.raises(hub.SnapshotMissing) as err:
        snapshot_hub_model("sdxl", entry, out)
    message = str(err.value)
    assert "models.sdxl" in message and "org/sdxl" in message and COMMIT in message
    assert "hf download org/sdxl" in message and "HF_HUB_OFFLINE" in message
    assert not out.exists() and not fake.downloads


def test_a_snapshot_in_the_users_hf_home_is_used_offline(remotes, caches, monkeypatch):
    fake = FakeHub().install(monkeypatch)
    user_cache = caches / "hf_home" / "hub"
    populate(user_cache, "org/flux", "model", COMMIT, remotes["root"] / "flux")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = {"kind": "hub", "hub_id": "org/flux", "revision": "main", "family": "flux"}
    base, record = _prepare("flux", entry, caches)
    assert not fake.downloads
    assert record["revision"] == COMMIT and record["requested_revision"] == "main" and not record["pinned"]
    assert record["path"].startswith(str(user_cache.resolve()))
    assert type(load_pipeline(base)).__name__ == "FluxPipeline"


def test_sdxl_fp16_safe_vae_option_replaces_the_vae(remotes, caches, monkeypatch):
    fake = FakeHub().install(monkeypatch)
    fake.add("org/sdxl", remotes["root"] / "sdxl", COMMIT)
    fake.add("org/vae-fp16-fix", remotes["root"] / "vae", VAE_COMMIT)
    entry = {"kind": "hub", "hub_id": "org/sdxl", "revision": COMMIT, "family": "sdxl",
             "vae": {"hub_id": "org/vae-fp16-fix", "revision": VAE_COMMIT}}
    base, record = _prepare("sdxl", entry, caches)
    assert record["vae"]["revision"] == VAE_COMMIT and "config.json" in record["vae"]["checksums"]
    pipe = load_pipeline(base)
    assert _same_weights(pipe.vae, remotes["vae"]) and not _same_weights(pipe.vae, remotes["sdxl"].vae)


def test_dtype_option_loads_in_that_dtype(remotes, caches, monkeypatch):
    FakeHub().install(monkeypatch).add("org/flux", remotes["root"] / "flux", COMMIT)
    entry = {"kind": "hub", "hub_id": "org/flux", "revision": COMMIT, "family": "flux", "dtype": "bfloat16"}
    base, _ = _prepare("flux", entry, caches)
    assert load_pipeline(base).transformer.dtype == torch.bfloat16
    assert load_pipeline(base, dtype=torch.float32).transformer.dtype == torch.float32


def test_a_corrupted_cached_file_is_named(remotes, caches, monkeypatch):
    FakeHub().install(monkeypatch).add("org/flux", remotes["root"] / "flux", COMMIT)
    entry = {"kind": "hub", "hub_id": "org/flux", "revision": COMMIT, "family": "flux"}
    snapshot_hub_model("flux", entry, caches / "ok.json")
    weights = next((caches / "resources" / "hub" / "models--org--flux" / "snapshots" / COMMIT / "vae").glob("*.safetensors"))
    blob = os.path.realpath(weights)
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(100)
        f.write(b"\x00corrupted")
    with pytest.raises(hub.SnapshotCorrupt, match="vae/diffusion_pytorch_model.safetensors"):
        snapshot_hub_model("flux", entry, caches / "bad.json")
