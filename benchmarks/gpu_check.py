"""GPU check: can this machine sample and fine-tune SD1.4, SDXL and FLUX.1-schnell, and how fast?

    python benchmarks/gpu_check.py --out gpu_check.json        # on a machine with a GPU
    python benchmarks/gpu_check.py --tiny                      # the same code, tiny models, on the CPU

Each architecture is built at full size with random weights from the released models' configs
(`editrobust.models.full_size`; nothing is downloaded). Measured, per architecture:

- sampling: images/s and peak GPU memory of `editrobust.sampling.generate` (the workflow's
  sampler) in --dtype, at the study's settings (SD1.4 512 px, 50 steps, CFG 7.5; SDXL 1024 px,
  50 steps, CFG 5; FLUX.1-schnell 1024 px, 4 steps, no CFG); the rate is images per second of one
  batch, median of --repeats timed batches after a warm-up batch;
- each fine-tuner (full, lora, dora, dreambooth, the workflow's methods with their default batch
  sizes): steps/s and peak GPU memory of the workflow's training loop (`editrobust.finetune.train`)
  on random cached latents, in --train-precision (the fine-tuners' `mixed_precision`: bf16 by
  default on a GPU, float32 with --tiny), with --gradient-checkpointing and --accumulation if
  given (a step is an optimizer step); median over --train-steps timed steps
  after --warmup steps. The loop is stopped before it writes anything.

Random weights give the real models' speed and memory, not their images. Every measurement runs
on its own: out of memory (status `OOM`) or any other error is reported in its row and the script
goes on. A table of the medians is printed; --out also writes them as JSON.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: no progress bars in the report

import numpy as np  # noqa: E402
import torch  # noqa: E402

from editrobust.finetune import make_finetuner  # noqa: E402
from editrobust.finetune.loop import train  # noqa: E402
from editrobust.finetune.latents import LatentCache  # noqa: E402
from editrobust.io import write_json  # noqa: E402
from editrobust.models.full_size import ARCHITECTURES, build_random_pipeline, spec  # noqa: E402
from editrobust.devices import DTYPES  # noqa: E402
from editrobust.sampling import SamplingSettings, generate  # noqa: E402

FINETUNERS = ("full", "lora", "dora", "dreambooth")
TASKS = ("sampling",) + FINETUNERS
# The study's sampling settings per architecture (steps, CFG, images per pipeline call).
SAMPLING = {"sd14": dict(steps=50, guidance=7.5, batch_size=8),
            "sdxl": dict(steps=50, guidance=5.0, batch_size=4),
            "flux_schnell": dict(steps=4, guidance=0.0, batch_size=4)}
TINY_SAMPLING = dict(steps=2, batch_size=2)
PROMPTS = ["a photo of a ceo", "a photo of a teacher", "an anime drawing of a house", "a red apple on a table"]


class _StopTraining(Exception):
    """Raised from the loop's per-step callback once enough steps are timed."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    """Peak memory allocated by tensors on the GPU since the last reset (None on a CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ measurements
def measure_sampling(arch: str, size: str, device: torch.device, dtype: torch.dtype, settings: SamplingSettings,
                     repeats: int) -> dict:
    pipe = build_random_pipeline(arch, size, device, dtype)
    n = settings.batch_size
    prompts, seeds = [PROMPTS[i % len(PROMPTS)] for i in range(n)], list(range(n))
    generate(pipe, prompts, seeds, settings, progress=False)  # warm-up: kernels, allocator, caches
    reset_peak_memory(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        generate(pipe, prompts, seeds, settings, progress=False)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return dict(value=n / statistics.median(times), unit="images/s", peak_gb=peak_memory_gb(device))


def random_latent_cache(arch: str, size: str, resolution: int, rows: int = 16) -> LatentCache:
    """A latent cache of images of `resolution` px with random posteriors (the loop's input)."""
    s = spec(arch, size)
    h = resolution // 8 if size == "full" else resolution // 4  # the tiny VAEs downsample 4x
    g = torch.Generator().manual_seed(0)
    mean = torch.randn((rows, s.latent_channels, h, h), generator=g)
    logvar = torch.full_like(mean, -6.0)
    captions = [PROMPTS[i % len(PROMPTS)] for i in range(rows)]
    return LatentCache(mean, logvar, mean.flip(-1), logvar, captions, class_name="dog",
                       meta=dict(dataset="random", resolution=resolution, rows=rows))


def measure_finetune(arch: str, size: str, device: torch.device, method_name: str, batch: int | None,
                     resolution: int, warmup: int, timed: int, precision: str = "no", checkpointing: bool = False,
                     accumulation: int = 1) -> dict:
    # built on the CPU: the loop casts the frozen modules before it moves the model to the device
    pipe = build_random_pipeline(arch, size, "cpu", torch.float32)
    entry = dict(method=method_name, steps=warmup + timed + 1, mixed_precision=precision,
                 gradient_checkpointing=checkpointing, gradient_accumulation_steps=accumulation)
    if batch:
        entry["batch"] = batch
    method = make_finetuner(entry)
    stamps: list[float] = []

    def on_step(step: int) -> None:
        synchronize(device)
        stamps.append(time.perf_counter())
        if step >= warmup + timed:
            raise _StopTraining

    reset_peak_memory(device)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            train(pipe, method, random_latent_cache(arch, size, resolution), Path(tmp) / "out", Path(tmp) / "state",
                  info={}, device=device, on_step=on_step)
        except _StopTraining:
            pass
    durations = np.diff(stamps)[warmup - 1:]  # stamps follow steps 1..warmup+timed
    return dict(value=1.0 / float(np.median(durations)), unit="steps/s", peak_gb=peak_memory_gb(device),
                batch=method.settings["batch"])


def run_one(fn, *args, device: torch.device, **kwargs) -> dict:
    """One measurement: its result, or its failure as a status (OOM or the error), never a crash."""
    try:
        return dict(fn(*args, **kwargs), status="ok")
    except torch.cuda.OutOfMemoryError:
        return dict(value=None, unit=None, peak_gb=peak_memory_gb(device), status="OOM")
    except Exception as e:  # noqa: BLE001 - report and go on with the next measurement
        traceback.print_exc(file=sys.stderr)
        status = "OOM" if "out of memory" in str(e).lower() else f"error: {type(e).__name__}: {str(e)[:160]}"
        return dict(value=None, unit=None, peak_gb=None, status=status)
    finally:
        free_memory(device)


# ----------------------------------------------------------------------------------------- output
def format_table(rows: list[dict]) -> str:
    header = ("architecture", "task", "setting", "median", "unit", "peak GPU GiB", "status")
    lines = [header]
    for r in rows:
        value = f"{r['value']:.3g}" if r["value"] is not None else "-"
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        lines.append((r["arch"], r["task"], r["setting"], value, r["unit"] or "-", peak, r["status"]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine_info(device: torch.device) -> dict:
    import diffusers

    info = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                diffusers=diffusers.__version__, device=str(device), cpu_threads=torch.get_num_threads())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU (a check of this script)")
    ap.add_argument("--archs", default=",".join(ARCHITECTURES), help=f"comma-separated subset of {ARCHITECTURES}")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {TASKS}")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                    help="sampling precision (default bfloat16; float32 with --tiny)")
    ap.add_argument("--train-precision", choices=["no", "bf16", "fp16"], default=None,
                    help="the fine-tuners' mixed_precision (default bf16; no, i.e. float32, with --tiny)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="the fine-tuners' gradient_checkpointing")
    ap.add_argument("--accumulation", type=int, default=1,
                    help="gradient_accumulation_steps (a timed step is an optimizer step)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: per architecture)")
    ap.add_argument("--batch", type=int, default=None, help="images per pipeline call (default: per architecture)")
    ap.add_argument("--resolution", type=int, default=None, help="image size in px (default: the model's native size)")
    ap.add_argument("--repeats", type=int, default=None, help="timed sampling batches (default 3; 2 with --tiny)")
    ap.add_argument("--train-batch", type=int, default=None, help="images per training step (default: the method's)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed training steps (default 2; 1 with --tiny)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 5; 2 with --tiny)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    archs, tasks = args.archs.split(","), args.tasks.split(",")
    for name, chosen, known in (("--archs", archs, ARCHITECTURES), ("--tasks", tasks, TASKS)):
        if unknown := [c for c in chosen if c not in known]:
            ap.error(f"{name}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    args.archs, args.tasks = archs, tasks
    args.size = "tiny" if args.tiny else "full"
    args.device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    args.dtype = args.dtype or ("float32" if args.tiny else "bfloat16")
    args.train_precision = args.train_precision or ("no" if args.tiny else "bf16")
    args.repeats = args.repeats or (2 if args.tiny else 3)
    args.warmup = max(1, args.warmup or (1 if args.tiny else 2))
    args.train_steps = args.train_steps or (2 if args.tiny else 5)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU machine, or use --tiny (CPU)")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # casts of random models warn about modules kept in fp32
    info = machine_info(args.device)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    rows = []
    for arch in args.archs:
        resolution = args.resolution or spec(arch, args.size).resolution
        for task in args.tasks:
            t0 = time.perf_counter()
            if task == "sampling":
                settings = SamplingSettings(**{**SAMPLING[arch], **(TINY_SAMPLING if args.tiny else {})})
                settings.steps = args.steps or settings.steps
                settings.batch_size = args.batch or settings.batch_size
                settings.height = settings.width = resolution  # the tiny FLUX's default would be 512 px
                setting = (f"batch {settings.batch_size}, {settings.steps} steps, CFG {settings.guidance:g}, "
                           f"{resolution} px, {args.dtype}")
                row = run_one(measure_sampling, arch, args.size, args.device, DTYPES[args.dtype], settings,
                              args.repeats, device=args.device)
            else:
                row = run_one(measure_finetune, arch, args.size, args.device, task, args.train_batch, resolution,
                              args.warmup, args.train_steps, args.train_precision, args.gradient_checkpointing,
                              args.accumulation, device=args.device)
                batch = row.pop("batch", args.train_batch)
                precision = "float32" if args.train_precision == "no" else args.train_precision
                micro = f" x {args.accumulation} accumulated" if args.accumulation > 1 else ""
                setting = (f"batch {batch or 'default'}{micro}, {resolution} px, {precision}"
                           + (", checkpointing" if args.gradient_checkpointing else ""))
            rows.append(dict(arch=arch, task=task, setting=setting, **row,
                             seconds=round(time.perf_counter() - t0, 1)))
            print(f"  {arch} {task}: {row['status']} ({rows[-1]['seconds']} s)", flush=True)
    print(format_table(rows))
    if args.out:
        write_json(args.out, dict(machine=info, size=args.size, rows=rows))
    return rows


if __name__ == "__main__":
    main()
