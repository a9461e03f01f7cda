"""Prepare a base model variant: train the toy model, register a local diffusers directory or a hub
snapshot, or build a released architecture with random weights (`kind: random`)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from editrobust.io import atomic_dir, write_csv, write_json
from editrobust.models.variants import VARIANT_FILE, check_local_pipeline_dir, file_checksums, library_versions
from editrobust.sampling import SamplingSettings

log = logging.getLogger(__name__)


def prepare_base_model(name: str, entry: dict, out_dir: str | Path, snapshot_json: str | Path | None = None,
                       device: str = "cpu") -> dict:
    """Write `out_dir` (atomically) with the base variant of model `name`; returns variant.json.
    A hub model's snapshot record (`snapshot_hub_model`) is `snapshot_json`. Only the toy model
    runs torch here, and it trains on the CPU whatever `device` is (its numbers are CPU numbers)."""
    out_dir = Path(out_dir)
    if entry["kind"] == "toy":
        if device != "cpu":
            log.info("the toy model trains on the CPU (device %s is not used)", device)
        return _prepare_toy(name, entry, out_dir)
    if entry["kind"] == "path":
        src = check_local_pipeline_dir(entry["path"])
        info = dict(name=name, kind="base", parent=None, method=None, params=entry,
                    source={"type": "path", "path": str(src), "checksums": file_checksums(src)},
                    versions=library_versions())
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / VARIANT_FILE, info)
        log.info("registered local pipeline %s (%d files)", src, len(info["source"]["checksums"]))
        return info
    if entry["kind"] == "hub":
        return _prepare_hub(name, entry, out_dir, snapshot_json)
    if entry["kind"] == "random":
        return _prepare_random(name, entry, out_dir)
    raise ValueError(f"models.{name}.kind: unknown kind {entry['kind']!r}")


def snapshot_hub_model(name: str, entry: dict, out_json: str | Path) -> dict:
    """Snapshot a `kind: hub` model's pinned repo (and optional replacement VAE) into the local
    cache (editrobust.hub), verify it, and write what was found to `out_json`: the resolved commit,
    the snapshot's path and every file's sha256. The only step that may use the network."""
    from editrobust import hub
    from editrobust.io import atomic_path

    owner = f"models.{name}"
    if not hub.COMMIT.match(entry["revision"]):
        log.warning("%s.revision %r is not a commit sha: the snapshot's commit is recorded, pin it for reproducibility",
                    owner, entry["revision"])
    path = hub.snapshot(entry["hub_id"], entry["revision"], owner=owner, pipeline=True, variant=entry.get("variant"))
    check_local_pipeline_dir(path)
    info = dict(type="hub", variant=entry.get("variant"), **hub.describe_snapshot(entry["hub_id"], entry["revision"], path))
    if entry.get("vae"):
        vae = entry["vae"]
        vae_path = hub.snapshot(vae["hub_id"], vae["revision"], owner=f"{owner}.vae", **hub.MODEL_PATTERNS)
        info["vae"] = hub.describe_snapshot(vae["hub_id"], vae["revision"], vae_path)
    with atomic_path(out_json) as tmp:
        write_json(tmp, info)
    log.info("%s: %s at commit %s (%d files) in %s", owner, entry["hub_id"], info["revision"],
             len(info["checksums"]), path)
    return info


def _prepare_hub(name: str, entry: dict, out_dir: Path, snapshot_json: str | Path | None) -> dict:
    """The base variant of a hub model: variant.json pointing at the verified snapshot (used in
    place, like `kind: path`), with its resolved commit and checksums."""
    import json

    if snapshot_json is None:
        raise ValueError(f"models.{name}: a hub model needs its snapshot record (rule snapshot_hub_model)")
    source = json.loads(Path(snapshot_json).read_text())
    if source.get("hub_id") != entry["hub_id"] or source.get("requested_revision") != entry["revision"]:
        raise ValueError(f"{snapshot_json}: snapshot of {source.get('hub_id')}@{source.get('requested_revision')}, "
                         f"but models.{name} asks for {entry['hub_id']}@{entry['revision']}")
    check_local_pipeline_dir(source["path"])
    info = dict(name=name, kind="base", parent=None, method=None, params=entry, source=source,
                versions=library_versions())
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / VARIANT_FILE, info)
    return info


def _prepare_random(name: str, entry: dict, out_dir: Path) -> dict:
    """A released architecture (SD1.4, SDXL base 1.0, FLUX.1-schnell; `size: tiny`: the test
    models) with random weights, seeded, written once as a float32 diffusers directory: the whole
    grid runs on it at true size with nothing downloaded (its images and scores mean nothing; its
    time and memory are the real models')."""
    from editrobust.models import FAMILY_ARCHITECTURE
    from editrobust.models.full_size import build_random_pipeline

    size, seed = entry.get("size", "full"), int(entry.get("seed", 0))
    log.info("building %s (%s size) with random weights, seed %d", entry["family"], size, seed)
    pipe = build_random_pipeline(FAMILY_ARCHITECTURE[entry["family"]], size, seed=seed)
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        info = dict(name=name, kind="base", parent=None, method="random", params=entry,
                    source={"type": "random", "family": entry["family"], "size": size, "seed": seed},
                    versions=library_versions(), checksums=file_checksums(tmp))
        write_json(tmp / VARIANT_FILE, info)
    return info


def _prepare_toy(name: str, entry: dict, out_dir: Path) -> dict:
    from editrobust.models.toy import ToyTrainingConfig, train_toy_pipeline
    from editrobust.toyworld.evaluate import evaluate_concepts

    toy = dict(entry.get("toy", {}))
    n_eval = toy.pop("eval_images_per_concept", 8)
    cfg = ToyTrainingConfig.from_dict(toy)
    pipe, history = train_toy_pipeline(cfg)
    evaluation = None
    if n_eval:
        evaluation = evaluate_concepts(pipe, n_eval, SamplingSettings.from_dict(entry.get("sampling")))
        log.info("oracle accuracy on %d images per concept: mean %.3f, min %.3f", n_eval,
                 evaluation["mean_accuracy"], evaluation["min_accuracy"])
    with atomic_dir(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_csv(tmp / "training_log.csv", pd.DataFrame(history))
        if evaluation is not None:
            write_json(tmp / "oracle_eval.json", evaluation)
        info = dict(name=name, kind="base", parent=None, method="toy", params=entry,
                    source={"type": "toy"}, versions=library_versions(), checksums=file_checksums(tmp))
        write_json(tmp / VARIANT_FILE, info)
    return info
