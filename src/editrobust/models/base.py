"""Prepare a base model variant: train the toy model, or register a local diffusers directory."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from editrobust.io import atomic_dir, write_csv, write_json
from editrobust.models.variants import VARIANT_FILE, check_local_pipeline_dir, file_checksums, library_versions
from editrobust.sampling import SamplingSettings

log = logging.getLogger(__name__)


def prepare_base_model(name: str, entry: dict, out_dir: str | Path, log_dir: str | Path | None = None) -> dict:
    """Write `out_dir` (atomically) with the base variant of model `name`; returns variant.json."""
    out_dir = Path(out_dir)
    if entry["kind"] == "toy":
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
    raise ValueError(f"models.{name}.kind: unknown kind {entry['kind']!r}")


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
