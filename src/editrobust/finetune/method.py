"""What a fine-tuning method is to the training loop: a plugin (editrobust.plugins) and a small
strategy object.

The loop (`loop.py`) is the same for every method. A method declares its config keys (`params`:
COMMON below plus its own) and says

- which parameters train (`setup`: freeze everything, then enable or inject what trains),
- its optimizer (`make_optimizer`: AdamW, or Prodigy where the method asks for it),
- what a batch is (`batch`: latents and prompts; DreamBooth adds prior-preservation rows) and how
  per-sample losses combine (`reduce`),
- what the variant stores (`export`: a delta of the trained module(s), or a LoRA adapter file).

A new method is one module with a subclass of `Finetuner`, named in the config as
`method: package.module:Class` (built-ins: finetune.FINETUNERS). This module imports no torch at
import time: config validation reads the declarations.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from editrobust.plugins import Param, Plugin, reference_problems

if TYPE_CHECKING:  # annotations only: importing torch here would slow config validation
    import torch

    from editrobust.finetune.latents import LatentCache

POSITIVE = {"type": "number", "exclusiveMinimum": 0}
BETA = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
# The keys every method takes (config `finetuners.<name>`), with their defaults.
COMMON = {
    "dataset": Param({"$ref": "#/$defs/name"}, required=True, doc="a name from `datasets`"),
    "steps": Param({"type": "integer", "minimum": 1}, required=True, doc="optimizer steps"),
    "batch": Param({"type": "integer", "minimum": 1}, 4, doc="images per step"),
    "lr": Param(POSITIVE, 1e-5, doc="learning rate"),
    "lr_warmup_steps": Param({"type": "integer", "minimum": 0}, 0,
                             doc="linear warm-up, then constant (the scripts' `constant_with_warmup`)"),
    "optimizer": Param({"enum": ["adamw", "prodigy"]}, "adamw", doc="`adamw` or `prodigy`"),
    "adam_beta1": Param(BETA, 0.9, doc="AdamW's (and Prodigy's) β1"),
    "adam_beta2": Param(BETA, 0.999, doc="β2"),
    "adam_weight_decay": Param({"type": "number", "minimum": 0}, 1e-2, doc="weight decay"),
    "adam_epsilon": Param(POSITIVE, 1e-8, doc="ε"),
    "prodigy_beta3": Param({"type": ["number", "null"]}, None, doc="Prodigy's β3 (null: √β2)"),
    "prodigy_decouple": Param({"type": "boolean"}, True, doc="Prodigy: decoupled weight decay"),
    "prodigy_use_bias_correction": Param({"type": "boolean"}, True, doc="Prodigy: bias correction"),
    "prodigy_safeguard_warmup": Param({"type": "boolean"}, True, doc="Prodigy: safeguard warm-up"),
    "prodigy_d0": Param(POSITIVE, 1e-6, doc="Prodigy's initial d (the Prodigy flags are the recommended ones)"),
    "gradient_accumulation_steps": Param({"type": "integer", "minimum": 1}, 1,
                                         doc="micro-batches of `batch` images per optimizer step (the effective "
                                             "batch is batch × this; the scripts' `--gradient_accumulation_steps`)"),
    # YAML reads an unquoted `no` as false: both mean float32
    "mixed_precision": Param({"enum": ["no", "bf16", "fp16", False]}, "no",
                             doc="`no` (YAML's unquoted `no` is `False`: the same): everything in float32; "
                                 "`bf16` / `fp16`: the forward pass under autocast, "
                                 "frozen modules stored in that dtype, trained parameters (and EMA, optimizer "
                                 "state) in float32; fp16 with a loss scaler (GPU only)"),
    "gradient_checkpointing": Param({"type": "boolean"}, False,
                                    doc="recompute activations in the backward pass (denoiser and trained text "
                                        "encoders): less memory, one more forward pass of them per step"),
    "max_grad_norm": Param({"type": "number", "minimum": 0}, 1.0, doc="gradient-norm clipping (0 = off)"),
    "random_flip": Param({"type": "boolean"}, False,
                         doc="mirror rows at random (from the cached mirrored latents); off for the toy world, "
                             "whose layout is not symmetric"),
    "posterior_sample": Param({"type": "boolean"}, True,
                              doc="train on a sample of each row's VAE posterior (the scripts' "
                                  "`latent_dist.sample()`); false: on the posterior mean (the toy base model was "
                                  "trained on means, and its VAE's posterior is loose)"),
    "seed": Param({"type": "integer", "minimum": 0}, 0,
                  doc="seeds batches, noise and timesteps (and the adapter's initialisation)"),
    "checkpoint_every": Param({"type": "integer", "minimum": 0}, 0,
                              doc="save the resumable training state every N steps (0 = never); a re-run after a "
                                  "kill resumes there and ends with the same weights"),
    "keep_edit_frozen": Param({"type": "boolean"}, False,
                              doc="edit-aware fine-tuning: the tensors an edit of the parent changed (UCE's "
                                  "cross-attention K/V, ReFACT's fc2) stay frozen; the rest trains as usual. "
                                  "Recorded in variant.json (`kept_frozen`); adapters (LoRA, DoRA) never overlap"),
    "save_every": Param({"type": "integer", "minimum": 0}, 0,
                        doc="checkpoints `<variant>@<step>` every N steps (0 = none), written only for the variants a "
                            "persistence figure or an evaluation reads"),
}


def with_default(param: Param, default) -> Param:
    """The same key with another default (a method's own, e.g. LoRA's lr)."""
    return Param(param.schema, default, param.required, param.doc)


class Finetuner(Plugin):
    """Base strategy. Subclasses set `name`, `params` ({**COMMON, own keys}) and override what differs."""

    name = "base"
    params: Mapping[str, Param] = COMMON

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        return reference_problems(f"finetuners.{name}.dataset", entry["dataset"], config, "datasets")

    def __init__(self, entry: Mapping):
        allowed = self.all_params()
        unknown = sorted(set(entry) - set(allowed) - {"method"})
        if unknown:
            raise ValueError(f"fine-tuning method {self.name!r}: unknown parameter(s) {', '.join(unknown)} "
                             f"(allowed: {', '.join(sorted(allowed))})")
        # the entry's values, defaults filled (`params` are the class's declarations)
        self.settings = {k: v for k, v in self.with_defaults(entry).items() if k not in ("method", "dataset")}
        if self.settings.get("mixed_precision") is False:  # YAML's unquoted `no`
            self.settings["mixed_precision"] = "no"

    # --- what trains -----------------------------------------------------------------------
    def setup(self, pipe) -> list[tuple[str, torch.nn.Parameter]]:
        """Freeze the pipeline, enable what this method trains; return the trainable parameters as
        ("<component>.<parameter name>", parameter), in a fixed order."""
        raise NotImplementedError

    @staticmethod
    def freeze(pipe) -> None:
        import torch

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
        import torch

        p = self.settings
        if p["optimizer"] == "adamw":
            return torch.optim.AdamW(params, lr=p["lr"], betas=(p["adam_beta1"], p["adam_beta2"]),
                                     weight_decay=p["adam_weight_decay"], eps=p["adam_epsilon"])
        if p["optimizer"] == "prodigy":
            from prodigyopt import Prodigy

            # One parameter group only: Prodigy rejects groups with different non-zero lrs, and a
            # group with lr 0 is not frozen (prodigyopt 1.1.2).
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

    def work(self) -> tuple[int, int, dict | None]:
        """The GPU work of the whole run (the cost estimate, `editrobust.cost`): (training rows: one
        image's forward + backward each, images sampled before training, their sampling settings)."""
        p = self.settings
        return p["steps"] * p["gradient_accumulation_steps"] * p["batch"], 0, None

    # --- data ------------------------------------------------------------------------------
    @property
    def samples_before_training(self) -> bool:
        """Whether `prepare` samples images from the parent model (it then runs on the training
        device, in float32); otherwise the model moves to the device only once it is set up."""
        return False

    def prepare(self, pipe, cache: LatentCache, generator: torch.Generator) -> None:
        """Work before the first step on the untouched parent model (DreamBooth's class images)."""

    def prompt(self, cache: LatentCache, index: int) -> str:
        return cache.captions[index]

    def batch(self, cache: LatentCache, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """Unscaled latent samples and their prompts. Rows are drawn by dataset index."""
        import torch

        size = self.settings["batch"]
        idx = torch.randint(len(cache), (size,), generator=generator)
        if self.settings["random_flip"]:
            flip = torch.rand(size, generator=generator) < 0.5
        else:
            flip = torch.zeros(size, dtype=torch.bool)
        latents = cache.sample(idx, flip, generator, posterior_sample=self.settings["posterior_sample"])
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
