"""Toy base model figures: preparation time, oracle accuracy, sampling throughput.

    .venv/bin/python benchmarks/bench_toy_base.py                      # train a fresh toy model (~10 min)
    .venv/bin/python benchmarks/bench_toy_base.py --model results/models/toy/base   # reuse one

Prints: wall time of preparing the toy base model (training + its quick oracle evaluation, one
run: it is the slow part), the oracle's accuracy per concept on 32 images per concept, and
sampling throughput in images/s at batch 32 and batch 1 (median of --repeats runs each, the same
images), with their ratio. Run it on an otherwise idle machine: on 2 cores a second busy process
slows torch several-fold.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from editrobust.config import load_yaml
from editrobust.models.base import prepare_base_model
from editrobust.models.variants import load_pipeline
from editrobust.sampling import SamplingSettings, generate
from editrobust.toyworld.evaluate import evaluate_concepts

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="an existing toy base variant directory (skips training)")
    ap.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    ap.add_argument("--images", type=int, default=32, help="images per concept for the accuracy")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    entry = load_yaml(args.config)["models"]["toy"]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            model_dir = Path(tmp) / "base"
            t0 = time.perf_counter()
            prepare_base_model("toy", entry, model_dir)
            print(f"prepare toy base model: {time.perf_counter() - t0:.0f} s (one run)")
        pipe = load_pipeline(model_dir)
        settings = SamplingSettings.from_dict(entry.get("sampling"))

        ev = evaluate_concepts(pipe, args.images, settings)
        print(f"oracle accuracy, {args.images} images per concept, {settings.steps} steps, "
              f"guidance {settings.guidance}: mean {ev['mean_accuracy']:.3f}, min {ev['min_accuracy']:.3f}")
        for concept, row in ev["concepts"].items():
            extra = ""
            if "female_share" in row:
                extra = f"  female share {row['female_share']:.2f} (training {row['female_share_in_training']:.2f})"
            print(f"  {concept:12s} {row['accuracy']:.2f}{extra}")

        prompts = ["a lime", "a ceo", "blood splatter", "the king"] * 16  # 64 images
        seeds = list(range(len(prompts)))
        rates = {}
        for batch in (32, 1):
            s = SamplingSettings(**{**settings.to_dict(), "batch_size": batch})
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                generate(pipe, prompts, seeds, s, progress=False)
                times.append(time.perf_counter() - t0)
            rates[batch] = len(prompts) / statistics.median(times)
            print(f"sampling, batch {batch:2d}: {rates[batch]:.1f} images/s (median of {args.repeats}, "
                  f"{len(prompts)} images, {settings.steps} steps)")
        print(f"batch 32 vs batch 1: {rates[32] / rates[1]:.1f}x")


if __name__ == "__main__":
    main()
