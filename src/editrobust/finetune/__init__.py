"""Fine-tuning: M_ft = F(M, D), one training loop with the methods as strategies.

A `finetuners.<name>` config entry names a `method` (a plugin of class `Finetuner`, see
method.py), a `dataset` (a key of `datasets`) and the method's parameters; it becomes the
variants `ft-<name>` (of the base model) and `ed-<editor>+ft-<name>` (of an edited model), plus
`<variant>@<step>` checkpoints.

| method | trains | stores | module |
|---|---|---|---|
| `full` | the UNet / transformer (+ text encoder if `train_text_encoder`) | delta `unet.safetensors` | `full.py` |
| `lora` | a LoRA on the text encoder(s) | `pytorch_lora_weights.safetensors` | `lora.py` |
| `dora` | a DoRA on the text encoder(s), Prodigy | `pytorch_lora_weights.safetensors` | `lora.py` |
| `dreambooth` | the UNet on a subject's photos (+ prior preservation) | delta `unet.safetensors` | `dreambooth.py` |

The loop (`loop.py`), the objectives per model family (`objectives.py`) and the shared latent
cache (`latents.py`) are common to all. Entry points (one per rule): `finetune_model` and
`cache_latents`. This module imports no torch: config validation reads the declarations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from editrobust.finetune.method import Finetuner
from editrobust.plugins import Registry

log = logging.getLogger(__name__)

FINETUNERS = Registry("finetuners", "method", Finetuner, {
    "full": "editrobust.finetune.full:FullFinetune",
    "lora": "editrobust.finetune.lora:LoraFinetune",
    "dora": "editrobust.finetune.lora:DoraFinetune",
    "dreambooth": "editrobust.finetune.dreambooth:DreamBooth",
})


def make_finetuner(entry: Mapping) -> Finetuner:
    """The strategy object of a `finetuners.<name>` entry (keys checked, defaults filled)."""
    return FINETUNERS.get(entry["method"])(entry)


def finetune_model(parent_dir: str | Path, finetuner: str, entry: Mapping, dataset: Mapping, cache_path: str | Path,
                   out_dir: str | Path, state_dir: str | Path, device: str = "cpu",
                   checkpoints: list[int] | None = None) -> dict:
    """The rule `finetune_<F>`: load the parent variant, train, write `out_dir` (+ `@<step>` siblings).

    `dataset` is `{"name": ..., "entry": {...}}` (recorded in `variant.json`). `checkpoints`: the
    `@<step>` siblings written (loop.train; None = every multiple of `save_every`).
    """
    import torch

    from editrobust.finetune.latents import load_latent_cache
    from editrobust.finetune.loop import fingerprint, train
    from editrobust.models.variants import load_pipeline, read_variant

    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    if parent_dir.parent != out_dir.parent:
        raise ValueError(f"{out_dir}: a variant's parent must be its sibling, got {parent_dir}")
    method = make_finetuner(entry)
    cache = load_latent_cache(cache_path)
    # Loaded in float32 whatever dtype the model is sampled in (models.<name>.dtype); under the
    # finetuner's mixed_precision the loop then stores the frozen modules in half (loop.store_frozen_in).
    pipe = load_pipeline(parent_dir, device=device, dtype=torch.float32)
    check_vae_unchanged(parent_dir)
    keep_frozen = edited_tensors(parent_dir) if method.settings["keep_edit_frozen"] else set()
    info = dict(parent=parent_dir.name, kind="finetune", method=method.name, finetuner=finetuner,
                params=method.settings, dataset=dict(dataset, cache=cache.meta), steps=int(method.settings["steps"]),
                parent_kind=read_variant(parent_dir)["kind"])
    # a state saved while writing other checkpoints cannot give back the ones before it
    fingerprinted = method.settings if checkpoints is None else {**method.settings, "checkpoints": sorted(checkpoints)}
    fp = fingerprint(fingerprinted, parent_dir, Path(cache_path))
    return train(pipe, method, cache, out_dir, state_dir, info, fingerprint_value=fp, device=device,
                 checkpoints=checkpoints, keep_frozen=keep_frozen)


def edited_tensors(variant_dir: str | Path) -> set[str]:
    """"<component>.<state-dict key>" of every tensor an edit in the variant's chain changed (the
    keys of the edits' deltas): what edit-aware fine-tuning (`keep_edit_frozen`) keeps frozen."""
    from safetensors import safe_open

    from editrobust.models.variants import read_variant, variant_chain

    out = set()
    for directory in variant_chain(variant_dir):
        info = read_variant(directory)
        if info.get("kind") != "edit":
            continue
        for component in info.get("components", []):
            with safe_open(str(Path(directory) / f"{component}.safetensors"), framework="pt") as f:
                out.update(f"{component}.{key}" for key in f.keys())
    return out


def cache_latents(base_dir: str | Path, dataset: str, entry: Mapping, out_path: str | Path, device: str = "cpu"):
    """The rule `cache_latents`: a dataset's VAE posteriors, once per (model, dataset)."""
    from editrobust.finetune.latents import cache_dataset_latents

    return cache_dataset_latents(base_dir, dataset, dict(entry), out_path, device=device)


def check_vae_unchanged(variant_dir: Path) -> None:
    """The latent cache is encoded with the base VAE; no variant in the chain may change the VAE."""
    from editrobust.models.variants import read_variant, variant_chain

    for d in variant_chain(variant_dir)[1:]:
        if "vae" in read_variant(d).get("components", []):
            raise ValueError(f"{d} changes the VAE: the shared latent cache (base VAE) would not match it")
