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


# ------------------------------------------------------------------------------------------ loop
def train(pipe, method: Finetuner, cache: LatentCache, out_dir: str | Path, state_dir: str | Path, info: dict,
          fingerprint_value: str = "", device: str | torch.device = "cpu",
          on_step: Callable[[int], None] | None = None) -> dict:
    """Fine-tune `pipe` (the parent variant, loaded) with `method` on `cache`; write the variant
    `out_dir` (and its `@<step>` siblings). `info` is recorded in `variant.json`. Returns that info.

    `on_step(step)` is called after each completed step (and its checkpointing); tests use it to
    simulate a kill.
    """
    from diffusers.optimization import get_scheduler

    out_dir, state_dir = Path(out_dir), Path(state_dir)
    p = method.settings
    variant = out_dir.name
    device = torch.device(device)
    pipe.to(device)
    generator = torch.Generator().manual_seed(int(p["seed"]))
    torch.manual_seed(int(p["seed"]))
    method.prepare(pipe, cache, generator)
    named = method.setup(pipe)
    if not named:
        raise ValueError(f"fine-tune {variant} ({method.name}): nothing to train")
    params = [prm for _, prm in named]
    optimizer = method.make_optimizer(params)
    scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=int(p["lr_warmup_steps"]))
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
            set_rng_states(state["rng"], generator)
            start, log_rows = int(state["step"]), list(state["log"])
            log.info("resuming %s from step %d (%s)", variant, start, state_path)

    def save_state(step: int, path: Path = state_path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        state = {"fingerprint": fingerprint_value, "step": step, "log": log_rows,
                 "params": {n: prm.detach().cpu().clone() for n, prm in named},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "ema": ema.ema.state_dict() if ema is not None else None, "rng": rng_states(generator)}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def export(target: Path, step: int) -> dict:
        record = dict(info, steps_trained=step)
        fn = lambda: write_variant(target, pipe, method, record, [r for r in log_rows if r["step"] <= step])  # noqa: E731
        return ema.exported(fn) if ema is not None else fn()

    total = int(p["steps"])
    save_at = set(checkpoint_steps(p))
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
        latents, prompts = method.batch(cache, generator)
        z0 = scale_latents(pipe, latents.to(device))
        loss = method.reduce(per_sample_loss(pipe, z0, prompts, generator))
        if not torch.isfinite(loss):
            raise stop(step, f"loss is {loss.item()}", keep_state=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # clipping at infinity only measures the norm (the gradients are multiplied by exactly 1)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, p["max_grad_norm"] or float("inf"))
        if not torch.isfinite(grad_norm):
            raise stop(step, f"the gradient norm is {grad_norm.item()}", keep_state=True)
        optimizer.step()
        if not torch.stack([torch.isfinite(prm).all() for prm in params]).all():  # one device sync
            raise stop(step, "a trained weight is no longer finite", keep_state=False)
        scheduler.step()
        if ema is not None:
            ema.step()
        done = step + 1
        done_since += 1
        now = time.time()
        log_rows.append(dict(step=done, loss=round(loss.item(), 6), lr=method.effective_lr(optimizer),
                             steps_per_s=round(done_since / max(now - t0, 1e-9), 3)))
        if done % 25 == 0 or done == total or now - t_last > 30:
            log.info("step %d/%d loss %.4f lr %.3g (%.2f steps/s)", done, total, loss.item(),
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
