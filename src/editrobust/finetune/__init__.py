"""Fine-tuning: M_ft = F(M, D), one training loop with the methods as strategies.

A `finetuners.<name>` config entry names a `method` (a key of `METHODS`), a `dataset` (a key of
`datasets`) and the method's parameters; it becomes the variants `ft-<name>` (of the base model)
and `ed-<editor>+ft-<name>` (of an edited model), plus `<variant>@<step>` checkpoints.

| method | trains | stores | module |
|---|---|---|---|
| `full` | the UNet / transformer (+ text encoder if `train_text_encoder`) | delta `unet.safetensors` | `full.py` |
| `lora` | a LoRA on the text encoder(s) | `pytorch_lora_weights.safetensors` | `lora.py` |
| `dora` | a DoRA on the text encoder(s), Prodigy | `pytorch_lora_weights.safetensors` | `lora.py` |
| `dreambooth` | the UNet on a subject's photos (+ prior preservation) | delta `unet.safetensors` | `dreambooth.py` |

The loop (`loop.py`), the objectives per model family (`objectives.py`) and the shared latent
cache (`latents.py`) are common to all.
"""

from __future__ import annotations

import logging
from pathlib import Path

from editrobust.finetune.dreambooth import DreamBooth
from editrobust.finetune.full import FullFinetune
from editrobust.finetune.latents import cache_dataset_latents, load_latent_cache
from editrobust.finetune.lora import DoraFinetune, LoraFinetune
from editrobust.finetune.loop import checkpoint_steps, fingerprint, train
from editrobust.finetune.method import Method

log = logging.getLogger(__name__)

METHODS: dict[str, type[Method]] = {
    "full": FullFinetune,
    "lora": LoraFinetune,
    "dora": DoraFinetune,
    "dreambooth": DreamBooth,
}

__all__ = ["METHODS", "make_method", "run_finetune", "cache_dataset_latents", "checkpoint_steps", "train"]


def make_method(entry: dict) -> Method:
    """The strategy object of a `finetuners.<name>` entry (parameters checked, defaults filled)."""
    name = entry.get("method")
    if name not in METHODS:
        raise ValueError(f"unknown fine-tuning method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]({k: v for k, v in entry.items() if k not in ("method", "dataset")})


def run_finetune(parent_dir: str | Path, finetuner: str, entry: dict, dataset: dict, cache_path: str | Path,
                 out_dir: str | Path, state_dir: str | Path, device: str = "cpu") -> dict:
    """The rule `finetune_*`: load the parent variant, train, write `out_dir` (+ `@<step>` siblings).

    `dataset` is `{"name": ..., "entry": {...}}` (recorded in `variant.json`).
    """
    from editrobust.models.variants import load_pipeline, read_variant

    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    if parent_dir.parent != out_dir.parent:
        raise ValueError(f"{out_dir}: a variant's parent must be its sibling, got {parent_dir}")
    method = make_method(entry)
    cache = load_latent_cache(cache_path)
    import torch

    # Training runs in float32 whatever dtype the model is sampled in (models.<name>.dtype).
    pipe = load_pipeline(parent_dir, device=device, dtype=torch.float32)
    check_vae_unchanged(parent_dir)
    info = dict(parent=parent_dir.name, kind="finetune", method=method.name, finetuner=finetuner,
                params=method.params, dataset=dict(dataset, cache=cache.meta), steps=int(method.params["steps"]),
                parent_kind=read_variant(parent_dir)["kind"])
    fp = fingerprint(method.params, parent_dir, Path(cache_path))
    return train(pipe, method, cache, out_dir, state_dir, info, fingerprint_value=fp, device=device)


def check_vae_unchanged(variant_dir: Path) -> None:
    """The latent cache is encoded with the base VAE; no variant in the chain may change the VAE."""
    from editrobust.models.variants import read_variant, variant_chain

    for d in variant_chain(variant_dir)[1:]:
        if "vae" in read_variant(d).get("components", []):
            raise ValueError(f"{d} changes the VAE: the shared latent cache (base VAE) would not match it")
