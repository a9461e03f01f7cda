"""Sampling throughput: our batched sampler vs the usual research-script loop.

    .venv/bin/python benchmarks/bench_sampling.py --model results/models/toy/base

The research-script loop calls the pipeline once per image with its own seeded generator
(`pipe(prompt, generator=torch.Generator().manual_seed(seed))`); `editrobust.sampling.generate`
draws the same initial latents (one generator per image) but denoises 32 images per call. Both
produce the same images (the script prints the largest pixel difference); the figure is the
ratio of images/s, median of --repeats runs each. Run on an otherwise idle machine.

`--grad-mode`: instead, the batched sampler as it runs (under `torch.inference_mode`) vs the same
function under `torch.no_grad` (as it ran before), alternating, --repeats runs each, with
`--threads` torch threads (1: as a workflow job on the CPU); the images must be identical.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from editrobust.models.variants import load_pipeline
from editrobust.sampling import SamplingSettings, generate


def per_image_loop(pipe, prompts, seeds, settings: SamplingSettings) -> np.ndarray:
    out = []
    for prompt, seed in zip(prompts, seeds):
        image = pipe(prompt, num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                     generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
        out.append(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))
    return np.stack(out)


def median_rate(fn, n_images: int, repeats: int) -> tuple[float, np.ndarray]:
    times, images = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        images = fn()
        times.append(time.perf_counter() - t0)
    return n_images / statistics.median(times), images


def compare_grad_modes(pipe, prompts, seeds, settings: SamplingSettings, repeats: int) -> None:
    """images/s of `generate` (inference mode) and of its body under no_grad, runs alternating."""
    def under_no_grad():
        with torch.no_grad():
            return generate.__wrapped__(pipe, prompts, seeds, settings, progress=False)

    runs = {"inference_mode": lambda: generate(pipe, prompts, seeds, settings, progress=False), "no_grad": under_no_grad}
    times: dict[str, list[float]] = {name: [] for name in runs}
    images = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            images[name] = fn()
            times[name].append(time.perf_counter() - t0)
    rate = {name: len(prompts) / statistics.median(t) for name, t in times.items()}
    for name in runs:
        print(f"{name:15s}: {rate[name]:.1f} images/s (median of {repeats})")
    same = np.array_equal(images["inference_mode"], images["no_grad"])
    print(f"inference_mode / no_grad: {rate['inference_mode'] / rate['no_grad']:.2f}x; identical images: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("results/models/toy/base"))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grad-mode", action="store_true", help="inference_mode vs no_grad (see above)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    settings = SamplingSettings(steps=args.steps, guidance=4.0, batch_size=args.batch)
    base = ["a lime", "a ceo", "blood splatter", "the king"]
    prompts = [base[i % len(base)] for i in range(args.images)]
    seeds = list(range(args.images))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"{args.images} images, {args.steps} steps")
    if args.grad_mode:
        compare_grad_modes(pipe, prompts, seeds, settings, args.repeats)
        return
    batched, a = median_rate(lambda: generate(pipe, prompts, seeds, settings, progress=False), args.images, args.repeats)
    looped, b = median_rate(lambda: per_image_loop(pipe, prompts, seeds, settings), args.images, args.repeats)
    diff = int(np.abs(a.astype(int) - b.astype(int)).max())
    print(f"batched sampler, batch {args.batch}: {batched:.1f} images/s (median of {args.repeats})")
    print(f"one pipeline call per image:   {looped:.1f} images/s (median of {args.repeats})")
    print(f"speed-up: {batched / looped:.1f}x; largest pixel difference between the two image sets: {diff}")


if __name__ == "__main__":
    main()
