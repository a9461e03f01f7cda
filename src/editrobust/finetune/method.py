"""What a fine-tuning method is to the training loop: a small strategy object.

The loop (`loop.py`) is the same for every method. A method says

- which parameters train (`setup`: freeze everything, then enable or inject what trains),
- its optimizer (`make_optimizer`: AdamW, or Prodigy where the method asks for it),
- what a batch is (`batch`: latents and prompts; DreamBooth adds prior-preservation rows) and how
  per-sample losses combine (`reduce`),
- what the variant stores (`export`: a delta of the trained module(s), or a LoRA adapter file).

A new method is one module with a subclass of `Method` plus one entry in `finetune.METHODS`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from editrobust.finetune.latents import LatentCache

# Parameters every method takes (config `finetuners.<name>`), with their defaults.
COMMON_DEFAULTS = dict(
    steps=100,
    batch=4,
    lr=1e-5,
    lr_warmup_steps=0,  # linear warm-up, then constant (the scripts' `constant_with_warmup`)
    optimizer="adamw",
    adam_beta1=0.9,
    adam_beta2=0.999,
    adam_weight_decay=1e-2,
    adam_epsilon=1e-8,
    max_grad_norm=1.0,
    random_flip=False,
    # Train on posterior samples (SD's `latent_dist.sample()`) or on the posterior means (the toy
    # base model was trained on means; its loose VAE posterior would add visible noise).
    posterior_sample=True,
    seed=0,
    checkpoint_every=0,  # save the resumable training state every N steps (0 = never)
    save_every=0,  # write the variant `<variant>@<step>` every N steps (0 = never)
)
# Prodigy's recommended flags (HF blog "LoRA training scripts of the world, unite!").
PRODIGY_DEFAULTS = dict(prodigy_beta3=None, prodigy_decouple=True, prodigy_use_bias_correction=True,
                        prodigy_safeguard_warmup=True, prodigy_d0=1e-6)


class Method:
    """Base strategy. Subclasses set `name`, `defaults` and override what differs."""

    name = "base"
    defaults: dict = {}

    def __init__(self, params: dict):
        known = {**COMMON_DEFAULTS, **PRODIGY_DEFAULTS, **self.defaults}
        unknown = sorted(set(params) - set(known) - {"method", "dataset"})
        if unknown:
            raise ValueError(f"fine-tuning method {self.name!r}: unknown parameter(s) {', '.join(unknown)} "
                             f"(allowed: {', '.join(sorted(known))})")
        self.params = {**COMMON_DEFAULTS, **self.defaults, **params}
        if self.params["optimizer"] == "prodigy":
            self.params = {**PRODIGY_DEFAULTS, **self.params}

    # --- what trains -----------------------------------------------------------------------
    def setup(self, pipe) -> list[tuple[str, torch.nn.Parameter]]:
        """Freeze the pipeline, enable what this method trains; return the trainable parameters as
        ("<component>.<parameter name>", parameter), in a fixed order."""
        raise NotImplementedError

    @staticmethod
    def freeze(pipe) -> None:
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
                module.eval()

    @staticmethod
    def named_trainable(pipe, components: list[str]) -> list[tuple[str, torch.nn.Parameter]]:
        out = []
        for comp in components:
            module = getattr(pipe, comp)
            module.train()
            out += [(f"{comp}.{n}", p) for n, p in module.named_parameters() if p.requires_grad]
        return out

    # --- optimisation ----------------------------------------------------------------------
    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        p = self.params
        if p["optimizer"] == "adamw":
            return torch.optim.AdamW(params, lr=p["lr"], betas=(p["adam_beta1"], p["adam_beta2"]),
                                     weight_decay=p["adam_weight_decay"], eps=p["adam_epsilon"])
        if p["optimizer"] == "prodigy":
            from prodigyopt import Prodigy

            # One parameter group only: Prodigy rejects groups with different non-zero lrs, and a
            # group with lr 0 is not frozen (finetuning.md §5).
            return Prodigy(params, lr=p["lr"], betas=(p["adam_beta1"], p["adam_beta2"]), beta3=p["prodigy_beta3"],
                           weight_decay=p["adam_weight_decay"], eps=p["adam_epsilon"], decouple=p["prodigy_decouple"],
                           use_bias_correction=p["prodigy_use_bias_correction"],
                           safeguard_warmup=p["prodigy_safeguard_warmup"], d0=p["prodigy_d0"])
        raise ValueError(f"fine-tuning method {self.name!r}: unknown optimizer {p['optimizer']!r} (adamw, prodigy)")

    @staticmethod
    def effective_lr(optimizer: torch.optim.Optimizer) -> float:
        """The step size to log: `lr`, or Prodigy's `d * lr` (its `get_last_lr()` stays at 1.0)."""
        group = optimizer.param_groups[0]
        return float(group["lr"] * group.get("d", 1.0))

    # --- data ------------------------------------------------------------------------------
    def prepare(self, pipe, cache: LatentCache, generator: torch.Generator) -> None:
        """Work before the first step on the untouched parent model (DreamBooth's class images)."""

    def prompt(self, cache: LatentCache, index: int) -> str:
        return cache.captions[index]

    def batch(self, cache: LatentCache, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """Unscaled latent samples and their prompts. Rows are drawn by dataset index."""
        size = self.params["batch"]
        idx = torch.randint(len(cache), (size,), generator=generator)
        if self.params["random_flip"]:
            flip = torch.rand(size, generator=generator) < 0.5
        else:
            flip = torch.zeros(size, dtype=torch.bool)
        latents = cache.sample(idx, flip, generator, posterior_sample=self.params["posterior_sample"])
        return latents, [self.prompt(cache, i) for i in idx.tolist()]

    def reduce(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.mean()

    # --- output ----------------------------------------------------------------------------
    def export(self, pipe, out_dir: Path) -> dict:
        """Write this method's files into the (temporary) variant directory; return the keys
        `variant.json` needs to load them (`components` for a delta, `adapter` for a LoRA)."""
        raise NotImplementedError


def write_delta_files(pipe, components: list[str], out_dir: Path) -> dict:
    """The trained modules' full state dicts as `<component>.safetensors` (the delta format)."""
    from safetensors.torch import save_file

    for comp in components:
        state = {k: v.detach().to("cpu").contiguous() for k, v in getattr(pipe, comp).state_dict().items()}
        save_file(state, str(out_dir / f"{comp}.safetensors"))
    return {"components": sorted(components)}
