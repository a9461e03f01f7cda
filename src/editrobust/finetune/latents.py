"""The shared latent cache: a dataset's VAE posteriors, encoded once per (model, dataset).

Every fine-tune of a model on a dataset reads the same file
`results/cache/<model>/latents_<dataset>.safetensors`, so the VAE runs once, not once per job.
The cache stores the posterior's `mean` and `logvar` (not one sample: a cached sample would freeze
the noise, crop and flip of every image), for the image and for its horizontal mirror
(`mean_flip`, `logvar_flip`), so the training loop still draws a fresh latent sample each step and can still flip at random. Rows are
keyed by **dataset index** (row i of every tensor is dataset row i, whose caption is
`captions[i]` in the metadata), never by dataloader step: the bug of the official
`--cache_latents` (diffusers#14430) cannot happen.

Editors and fine-tuners never change the VAE, so the base model's VAE is the VAE of every
variant; `check_vae_unchanged` enforces that at training time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from editrobust.data.finetune_datasets import FinetuneDataset, prepare_images
from editrobust.io import atomic_path

CACHE_VERSION = "latents-1"
STORE_DTYPE = torch.float16  # halves the file; posterior statistics need no more precision


@dataclass
class LatentCache:
    mean: torch.Tensor  # (N, C, h, w) float32, unscaled VAE posterior mean
    logvar: torch.Tensor
    mean_flip: torch.Tensor
    logvar_flip: torch.Tensor
    captions: list[str]
    class_name: str | None
    meta: dict

    def __len__(self) -> int:
        return len(self.captions)

    def sample(self, idx: torch.Tensor, flip: torch.Tensor, generator: torch.Generator,
               posterior_sample: bool = True) -> torch.Tensor:
        """Unscaled latents of rows `idx` (mirrored where `flip`): a posterior sample
        `mean + std * eps` (the scripts' `latent_dist.sample()`), or the mean."""
        mean = torch.where(flip[:, None, None, None], self.mean_flip[idx], self.mean[idx])
        if not posterior_sample:
            return mean
        logvar = torch.where(flip[:, None, None, None], self.logvar_flip[idx], self.logvar[idx])
        eps = torch.randn(mean.shape, generator=generator)
        return mean + torch.exp(0.5 * logvar) * eps


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1] (Normalize([0.5], [0.5]))."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@torch.no_grad()
def encode_posteriors(vae, pixels: torch.Tensor, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, logvar) of the VAE posterior of `pixels` (N, 3, H, W) in [-1, 1]."""
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    means, logvars = [], []
    for i in tqdm(range(0, len(pixels), batch), desc="VAE latents", unit="batch", mininterval=5):
        dist = vae.encode(pixels[i:i + batch].to(device, dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        logvars.append(dist.logvar.float().cpu())
    return torch.cat(means), torch.cat(logvars)


def encode_dataset(vae, dataset: FinetuneDataset, resolution: int, batch: int = 16) -> LatentCache:
    """Encode every row (centre crop + resize to `resolution`) and its mirror image."""
    pixels = images_to_tensor(prepare_images(dataset.images, resolution))
    was_training = vae.training
    vae.eval()
    try:
        mean, logvar = encode_posteriors(vae, pixels, batch)
        mean_f, logvar_f = encode_posteriors(vae, pixels.flip(-1), batch)
    finally:
        vae.train(was_training)
    for name, t in (("mean", mean), ("logvar", logvar)):
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).flatten(1).any(1).nonzero()[0])
            raise FloatingPointError(f"dataset {dataset.name}: non-finite VAE {name} for {dataset.origins[bad]}")
    meta = dict(version=CACHE_VERSION, dataset=dataset.name, resolution=resolution, rows=len(dataset),
                source=dataset.info)
    return LatentCache(mean, logvar, mean_f, logvar_f, list(dataset.captions), dataset.class_name, meta)


def save_latent_cache(cache: LatentCache, path: str | Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: getattr(cache, k).to(STORE_DTYPE).contiguous() for k in ("mean", "logvar", "mean_flip", "logvar_flip")}
    metadata = {"captions": json.dumps(cache.captions), "class_name": json.dumps(cache.class_name),
                "meta": json.dumps(cache.meta, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_latent_cache(path: str | Path) -> LatentCache:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent cache not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{path}: not a readable latent cache: {e}") from None
    missing = [k for k in ("mean", "logvar", "mean_flip", "logvar_flip") if k not in tensors]
    missing += [k for k in ("captions", "meta") if k not in metadata]
    if missing:
        raise ValueError(f"{path}: not a latent cache (missing {', '.join(missing)})")
    captions = json.loads(metadata["captions"])
    if len(captions) != len(tensors["mean"]):
        raise ValueError(f"{path}: {len(captions)} captions for {len(tensors['mean'])} latents")
    return LatentCache(tensors["mean"], tensors["logvar"], tensors["mean_flip"], tensors["logvar_flip"], captions,
                       json.loads(metadata.get("class_name", "null")), json.loads(metadata["meta"]))


def cache_dataset_latents(base_dir: str | Path, name: str, entry: dict, out_path: str | Path,
                          device: str = "cpu") -> LatentCache:
    """Load the base model's VAE, encode dataset `name`, write the cache (finetune.cache_latents)."""
    from editrobust.data.finetune_datasets import load_finetune_dataset
    from editrobust.models.variants import load_pipeline
    from editrobust.sampling import native_resolution

    dataset = load_finetune_dataset(name, entry)
    pipe = load_pipeline(base_dir, device=device)
    resolution = int(entry.get("resolution") or native_resolution(pipe))
    cache = encode_dataset(pipe.vae, dataset, resolution)
    save_latent_cache(cache, out_path)
    return cache
