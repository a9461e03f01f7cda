"""The one training loop every fine-tuning method runs (diffusers-examples style), resumable.

Per step: draw a batch by dataset index from the latent cache, sample latents from the cached
posteriors, compute the family's per-sample loss (`objectives`), reduce it (the method), check it
is finite, backward, clip the gradient norm, step the optimizer and the lr scheduler, update the EMA.

Resume. Every `checkpoint_every` steps the loop saves, to a state directory outside the final
output (`results/train_state/<model>/<variant>/state.pt`, written atomically): the trainable
parameters, optimizer, lr scheduler, EMA, the loop's own generator (it draws every batch, noise
and timestep), the RNG states of torch, numpy and python, the step and the log rows. Re-running
the job resumes from it and ends with the same weights as an uninterrupted run (tested bit for bit
on CPU). A state written for other parameters, another parent or another cache is ignored
(`fingerprint`). The state directory is deleted once the final variant is written.

Intermediate variants `<variant>@<step>` (every `save_every` steps) are first written inside the
state directory and moved next to the final variant only when the job succeeds: Snakemake deletes
a failed job's outputs, and a resumed job could not recreate checkpoints older than its state.

A non-finite loss raises `FloatingPointError` naming the step, method and variant; nothing is
written and the state is removed (resuming would only reach the same NaN).

Precision and memory (the fine-tuner's keys; the defaults are plain float32 on one device, bit
for bit the loop before these keys existed). The loop runs on `accelerate`'s `Accelerator`, as
diffusers' training scripts do:

- `gradient_accumulation_steps`: an optimizer step is that many micro-batches of `batch` rows, each
  drawn, forwarded and back-propagated in turn (`accelerator.accumulate`, the loss divided by the
  count); the gradient is that of the mean loss over all rows, as one step at the whole batch.
- `mixed_precision` (`bf16`, `fp16`): the forward pass runs under autocast; every frozen parameter
  is stored in the half dtype, the trained ones stay float32 (so do their gradients, the optimizer
  state and the EMA). fp16 adds the loss scaler: a step whose gradient overflows is skipped (and
  the scale lowered), counted in `variant.json` as `skipped_steps`; only CUDA offers it.
- `gradient_checkpointing`: the denoiser and the trained text encoders recompute their activations
  in the backward pass (non-reentrant checkpoints: the gradients are the same).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from editrobust import variant_names
from editrobust.finetune.latents import LatentCache
from editrobust.finetune.method import Finetuner
from editrobust.finetune.objectives import per_sample_loss, scale_latents
from editrobust.io import atomic_dir, atomic_path, write_csv, write_json
from editrobust.models.variants import VARIANT_FILE, file_checksums, library_versions

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
FAILED_STATE_FILE = "last_finite_state.pt"  # kept for diagnosis when a step turns non-finite
CHECKPOINTS = "checkpoints"


def checkpoint_steps(params: dict) -> list[int]:
    """Steps at which `<variant>@<step>` is written (multiples of save_every before the last step);
    the workflow declares the same list as outputs (both from variant_names.checkpoint_steps)."""
    return variant_names.checkpoint_steps(params.get("save_every"), params["steps"])


def fingerprint(params: dict, parent_dir: Path, cache_path: Path | None) -> str:
    """What a saved state is valid for: the method's parameters, the parent chain, the cache file."""
    from editrobust.models.variants import variant_chain

    parts = {"params": params,
             "chain": [hashlib.sha256((d / VARIANT_FILE).read_bytes()).hexdigest() for d in variant_chain(parent_dir)]}
    if cache_path is not None:
        st = Path(cache_path).stat()
        parts["cache"] = [st.st_size, st.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------ RNG states
def rng_states(generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    out = {"generator": generator.get_state(), "torch": torch.get_rng_state(),
           "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                     "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
           "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict, generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ------------------------------------------------------------------------------------- variants
def write_variant(out_dir: Path, pipe, method: Finetuner, info: dict, log_rows: list[dict]) -> dict:
    """A fine-tuned variant, atomically: the method's files, `training_log.csv`, `variant.json`."""
    with atomic_dir(out_dir) as tmp:
        written = method.export(pipe, tmp)
        write_csv(tmp / "training_log.csv", pd.DataFrame(log_rows, columns=["step", "loss", "lr", "steps_per_s"]))
        info = dict(info, **written, versions=library_versions(), checksums=file_checksums(tmp))
        write_json(tmp / VARIANT_FILE, info)
    return info


class _Ema:
    """`diffusers.training_utils.EMAModel` of the trainable parameters, with swap-in for export."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        from diffusers.training_utils import EMAModel

        self.params = params
        self.ema = EMAModel(params, decay=decay)

    def step(self):
        self.ema.step(self.params)

    def exported(self, fn):
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            return fn()
        finally:
            self.ema.restore(self.params)


# ------------------------------------------------------------------------- precision and memory
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
MAX_SKIPPED_STEPS = 100  # fp16 overflows beyond this are a diverged run, not a loss scale settling


def make_accelerator(settings: dict, device: torch.device, what: str):
    """The `Accelerator` of one fine-tune: its mixed precision, its accumulation count."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed = settings["mixed_precision"]
    if mixed == "fp16" and device.type != "cuda":
        raise ValueError(f"{what}: mixed_precision fp16 needs a CUDA device (its loss scaler), not {device}; "
                         f"use bf16 (or no)")
    # The accelerator state is a process-wide singleton that refuses a second, different precision;
    # a workflow job trains once, but tests and benchmarks train several models in one process.
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed, device_placement=False,
                       gradient_accumulation_steps=int(settings["gradient_accumulation_steps"]))


def store_frozen_in(pipe, trained: list[tuple[str, torch.nn.Parameter]], dtype: torch.dtype) -> None:
    """Mixed precision: every frozen parameter (and floating buffer) of the pipeline in `dtype`,
    except, in float16, those a model class keeps in float32 against overflow (T5's `wo`
    projections: `_keep_in_fp32_modules`); the trained parameters stay float32 (the optimizer's
    master weights)."""
    keep = {id(prm) for _, prm in trained}
    for module in pipe.components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        fp32_names = (getattr(module, "_keep_in_fp32_modules", None) or []) if dtype == torch.float16 else []
        for name, sub in module.named_modules():
            if any(part in fp32_names for part in name.split(".")):
                continue
            for prm in sub.parameters(recurse=False):
                if id(prm) not in keep and prm.is_floating_point():
                    prm.data = prm.data.to(dtype)
            for key, buf in sub.named_buffers(recurse=False):
                if buf.is_floating_point() and not any(id(p) in keep for p in sub.parameters(recurse=False)):
                    sub._buffers[key] = buf.to(dtype)


def enable_gradient_checkpointing(pipe, trained: list[tuple[str, torch.nn.Parameter]]) -> None:
    """Checkpoint the denoiser (a text-encoder adapter's gradient flows through it too) and every
    text encoder that trains; a frozen text encoder holds no activations for the backward pass."""
    from editrobust.finetune.objectives import denoiser, text_encoder_names

    denoiser(pipe).enable_gradient_checkpointing()
    training = {name.split(".", 1)[0] for name, _ in trained}
    for name in text_encoder_names(pipe):
        if name in training:
            getattr(pipe, name).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


# ------------------------------------------------------------------------------------------ loop
def hold_frozen(named: list[tuple[str, torch.nn.Parameter]], keep_frozen, variant: str):
    """(the trainable parameters without those in `keep_frozen`; those held, now frozen)."""
    held_pairs = [(name, prm) for name, prm in named if name in keep_frozen]
    for _, prm in held_pairs:
        prm.requires_grad_(False)
    held = sorted(name for name, _ in held_pairs)
    if held:
        log.info("fine-tune %s: %d tensors an edit changed stay frozen (keep_edit_frozen), e.g. %s", variant,
                 len(held), held[0])
    else:
        log.info("fine-tune %s: none of the %d trained tensors was changed by an edit (keep_edit_frozen has "
                 "nothing to hold)", variant, len(named))
    return [(n, p) for n, p in named if n not in keep_frozen], held_pairs


def train(pipe, method: Finetuner, cache: LatentCache, out_dir: str | Path, state_dir: str | Path, info: dict,
          fingerprint_value: str = "", device: str | torch.device = "cpu",
          on_step: Callable[[int], None] | None = None, checkpoints: list[int] | None = None,
          keep_frozen: set[str] | frozenset = frozenset()) -> dict:
    """Fine-tune `pipe` (the parent variant, loaded) with `method` on `cache`; write the variant
    `out_dir` (and its `@<step>` siblings). `info` is recorded in `variant.json`. Returns that info.

    `checkpoints`: the steps whose `@<step>` siblings are written (the workflow passes the ones
    its rule declares, only for variants something reads checkpoints of: a persistence figure's
    points); None = every multiple of the method's `save_every`. Which are written never changes
    the final variant.

    `keep_frozen`: "<component>.<parameter>" names that stay frozen although the method trains
    their module (edit-aware fine-tuning: the tensors the parent's edits changed); which of them
    the method would have trained is recorded in variant.json as `kept_frozen`.

    `on_step(step)` is called after each completed step (and its checkpointing); tests use it to
    simulate a kill.
    """
    from diffusers.optimization import get_scheduler

    out_dir, state_dir = Path(out_dir), Path(state_dir)
    p = method.settings
    variant = out_dir.name
    device = torch.device(device)
    accelerator = make_accelerator(p, device, f"fine-tune {variant}")
    generator = torch.Generator().manual_seed(int(p["seed"]))
    torch.manual_seed(int(p["seed"]))
    if method.samples_before_training:
        pipe.to(device)
    method.prepare(pipe, cache, generator)
    named = method.setup(pipe)
    held: list = []
    if keep_frozen:
        named, held = hold_frozen(named, keep_frozen, variant)
        info["kept_frozen"] = sorted(name for name, _ in held)
    if not named:
        raise ValueError(f"fine-tune {variant} ({method.name}): nothing to train")
    if p["mixed_precision"] != "no":
        # a held tensor stays float32 too: its module's delta is written whole, with the edit in it
        store_frozen_in(pipe, named + held, HALF[p["mixed_precision"]])
    if p["gradient_checkpointing"]:
        enable_gradient_checkpointing(pipe, named)
    pipe.to(device)  # after the casts: a half-precision frozen module never exists in float32 on the device
    params = [prm for _, prm in named]
    optimizer = method.make_optimizer(params)
    scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=int(p["lr_warmup_steps"]))
    # the optimizer steps (and the scheduler with it) only at the last micro-batch of a step, and
    # not at all when fp16's loss scaler finds an overflow
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    skipped = 0
    ema = _Ema(params, p["ema_decay"]) if p.get("use_ema") else None
    log_rows: list[dict] = []
    start = 0

    state_path = state_dir / STATE_FILE
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint_value:
            log.warning("ignoring the training state in %s: it was saved for other parameters or inputs", state_dir)
            shutil.rmtree(state_dir)
        else:
            with torch.no_grad():
                for (name, prm) in named:
                    prm.copy_(state["params"][name])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.ema.load_state_dict(state["ema"])
            if accelerator.scaler is not None and state.get("scaler"):
                accelerator.scaler.load_state_dict(state["scaler"])
            skipped = int(state.get("skipped", 0))
            set_rng_states(state["rng"], generator)
            start, log_rows = int(state["step"]), list(state["log"])
            log.info("resuming %s from step %d (%s)", variant, start, state_path)

    def save_state(step: int, path: Path = state_path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        state = {"fingerprint": fingerprint_value, "step": step, "log": log_rows,
                 "params": {n: prm.detach().cpu().clone() for n, prm in named},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "ema": ema.ema.state_dict() if ema is not None else None, "rng": rng_states(generator),
                 "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                 "skipped": skipped}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def export(target: Path, step: int) -> dict:
        record = dict(info, steps_trained=step)
        if accelerator.scaler is not None:
            record["skipped_steps"] = skipped
        fn = lambda: write_variant(target, pipe, method, record, [r for r in log_rows if r["step"] <= step])  # noqa: E731
        return ema.exported(fn) if ema is not None else fn()

    total = int(p["steps"])
    save_at = set(checkpoint_steps(p) if checkpoints is None else checkpoints)
    outside = sorted(s for s in save_at if not 0 < s < int(p["steps"]))
    if outside:
        raise ValueError(f"fine-tune {variant}: checkpoints {outside} are not steps between 0 and its {p['steps']} steps")
    t0, t_last, done_since = time.time(), time.time(), 0
    log.info("fine-tune %s with %s: %d steps, %d trainable tensors, on %s", variant, method.name, total,
             len(named), device)
    def stop(step: int, what: str, keep_state: bool) -> FloatingPointError:
        """The error of a non-finite number at `step`. The weights of the last finite step, when
        still intact, are saved for diagnosis (FAILED_STATE_FILE: a re-run does not resume from it,
        since it would fail the same way); the training state of the last checkpoint stays too."""
        last = log_rows[-1] if log_rows else None
        before = f"last finite loss {last['loss']} at step {last['step']}" if last else "no finite step before it"
        if keep_state:
            save_state(step, state_dir / FAILED_STATE_FILE)
        kept = (f"the state of the last finite step is kept in {state_dir / FAILED_STATE_FILE}" if keep_state else
                f"the weights are no longer finite, so only an earlier checkpoint's state (if any) is kept in "
                f"{state_dir}")
        return FloatingPointError(f"fine-tune {variant} ({method.name}): {what} at step {step + 1} ({before}); "
                                  f"{kept}. Lower the learning rate (lr) or max_grad_norm; nothing was written")

    for step in tqdm(range(start, total), desc=f"fine-tune {variant}", initial=start, total=total, mininterval=5):
        accumulated = 0.0  # the step's loss: the mean over its micro-batches
        for _ in range(accelerator.gradient_accumulation_steps):
            with accelerator.accumulate():
                latents, prompts = method.batch(cache, generator)
                z0 = scale_latents(pipe, latents.to(device))
                with accelerator.autocast():
                    loss = method.reduce(per_sample_loss(pipe, z0, prompts, generator))
                if not torch.isfinite(loss):
                    raise stop(step, f"loss is {loss.item()}", keep_state=True)
                accumulated += loss.item() / accelerator.gradient_accumulation_steps
                accelerator.backward(loss)  # divided by the accumulation count; scaled under fp16
                if accelerator.sync_gradients:
                    # unscales fp16 gradients first; clipping at infinity only measures the norm
                    # (the gradients are multiplied by exactly 1)
                    grad_norm = accelerator.clip_grad_norm_(params, p["max_grad_norm"] or float("inf"))
                    if not torch.isfinite(grad_norm) and accelerator.scaler is None:
                        raise stop(step, f"the gradient norm is {grad_norm.item()}", keep_state=True)
                optimizer.step()  # a no-op before the last micro-batch, or on an fp16 overflow
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if optimizer.step_was_skipped:
            skipped += 1
            log.warning("step %d: the fp16 gradient overflowed; the step was skipped and the loss scale lowered to "
                        "%g (%d skipped so far)", step + 1, accelerator.scaler.get_scale(), skipped)
            if skipped > MAX_SKIPPED_STEPS:
                raise stop(step, f"{skipped} steps were skipped for fp16 overflows", keep_state=True)
        else:
            if not torch.stack([torch.isfinite(prm).all() for prm in params]).all():  # one device sync
                raise stop(step, "a trained weight is no longer finite", keep_state=False)
            if ema is not None:
                ema.step()
        done = step + 1
        done_since += 1
        now = time.time()
        log_rows.append(dict(step=done, loss=round(accumulated, 6), lr=method.effective_lr(optimizer),
                             steps_per_s=round(done_since / max(now - t0, 1e-9), 3)))
        if done % 25 == 0 or done == total or now - t_last > 30:
            log.info("step %d/%d loss %.4f lr %.3g (%.2f steps/s)", done, total, accumulated,
                     log_rows[-1]["lr"], log_rows[-1]["steps_per_s"])
            t_last = now
        if done in save_at:
            export(state_dir / CHECKPOINTS / variant_names.at_step(variant, done), done)
        if p["checkpoint_every"] and done % p["checkpoint_every"] == 0 and done < total:
            save_state(done)
        if on_step is not None:
            on_step(done)

    # Success: the checkpoints move next to the final variant, then the final variant appears.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for ckpt in sorted((state_dir / CHECKPOINTS).glob(f"{variant}@*")) if (state_dir / CHECKPOINTS).is_dir() else []:
        target = out_dir.parent / ckpt.name
        if target.exists():
            shutil.rmtree(target)
        os.replace(ckpt, target)
    result = export(out_dir, total)
    shutil.rmtree(state_dir, ignore_errors=True)
    return result
