"""Every performance figure of benchmarks/README.md, printed by one command (medians and ratios).

    .venv/bin/python benchmarks/run_all.py            # the toy figures; run on an otherwise idle machine
    .venv/bin/python benchmarks/run_all.py --quick    # a tiny random model, seconds: checks the command works

What it measures, in this order:
 1. sampling: images/s of the batched sampler (`editrobust.sampling.generate`, batch 32) vs one
    pipeline call per image with its own seeded generator (the usual research-script loop; see
    bench_sampling.py), the same images; ratio (target >= 4x at batch 32);
 2. shared work: wall time of the four toy fine-tunes (config `finetuners`) with the shared
    latent cache (encode each dataset once, then train) vs without (each fine-tune encodes its
    batches with the VAE at every step, as diffusers' training scripts do);
 3. storage: bytes per variant kind (an edit, each fine-tuning method) vs a full model copy, for
    the variants step 2 wrote and those under <workdir>/results/models if present;
 4. table1: the cold run's wall time as Snakemake logged it (the most recent complete run in
    <workdir>/.snakemake/log that built table1 from the base model), and the warm re-run's
    (`snakemake results/tables/table1.csv` with everything up to date, timed here, median of
    --repeats); 'not measured' when there is no such run or table;
 5. peak memory: the largest `max_rss` in <workdir>/benchmarks/rules/ (Snakemake `benchmark:`).

1 and 2 need a toy base model (--model, default <workdir>/results/models/toy/base; make it with
`snakemake --cores 2 results/models/toy/base/variant.json`). --quick builds a tiny random SD1.x
pipeline instead and shrinks every size (the figures then only show that the code runs).
--json PATH also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_sampling

from bench_sampling import median_rate, per_image_loop  # noqa: E402

from editrobust.config import load_yaml  # noqa: E402

# The tiny SD1.x of the tests (tests/conftest.py TINY_SIZES), for --quick.
TINY_SIZES = dict(vae_channels=[8, 8, 8], unet_channels=[16, 16], norm_num_groups=8, unet_head_dim=4,
                  text_hidden=32, text_layers=2, text_heads=2, text_intermediate=64)
PROMPTS = ["a lime", "a ceo", "blood splatter", "the king"]
NOT_PIPELINE_FILES = {"variant.json", "training_log.csv", "oracle_eval.json"}


def median(xs):
    return float(statistics.median(xs))


# ------------------------------------------------------------------------------------ 1. sampling
def sampling_figures(base_dir: Path, n_images: int, batch: int, steps: int, repeats: int) -> dict:
    from editrobust.models.variants import load_pipeline
    from editrobust.sampling import SamplingSettings, generate

    pipe = load_pipeline(base_dir)
    settings = SamplingSettings(steps=steps, guidance=4.0, batch_size=batch)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n_images)]
    seeds = list(range(n_images))
    batched, a = median_rate(lambda: generate(pipe, prompts, seeds, settings, progress=False), n_images, repeats)
    looped, b = median_rate(lambda: per_image_loop(pipe, prompts, seeds, settings), n_images, repeats)
    return dict(images=n_images, batch=batch, steps=steps, repeats=repeats, batched_images_per_s=batched,
                per_image_images_per_s=looped, ratio=batched / looped,
                max_pixel_difference=int(np.abs(a.astype(int) - b.astype(int)).max()))


# -------------------------------------------------------------------------------- 2. shared work
class EncodeEveryStep:
    """A stand-in for the latent cache that encodes each drawn batch with the VAE, as the
    diffusers training scripts do without `--cache_latents`: the baseline of the shared cache."""

    def __init__(self, vae, dataset, resolution: int):
        from editrobust.data.finetune_datasets import prepare_images
        from editrobust.finetune.latents import images_to_tensor

        self.vae = vae.eval()
        self.pixels = images_to_tensor(prepare_images(dataset.images, resolution))
        self.captions, self.class_name = list(dataset.captions), dataset.class_name

    def __len__(self) -> int:
        return len(self.captions)

    @torch.no_grad()
    def sample(self, idx, flip, generator, posterior_sample=True):
        pixels = self.pixels[idx]
        pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
        dist = self.vae.encode(pixels).latent_dist
        if not posterior_sample:
            return dist.mean
        return dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator)


def finetune_figures(base_dir: Path, finetuners: dict, datasets: dict, work: Path) -> dict:
    """Wall times (one run each) of the fine-tunes with the shared cache and without it."""
    from editrobust.data.finetune_datasets import load_finetune_dataset
    from editrobust.finetune import finetune_model, make_finetuner
    from editrobust.finetune.loop import train
    from editrobust.finetune.latents import cache_dataset_latents
    from editrobust.models.variants import load_pipeline
    from editrobust.sampling import native_resolution

    with_cache, without = {}, {}
    caches = {}
    for name in sorted({f["dataset"] for f in finetuners.values()}):
        t0 = time.perf_counter()
        caches[name] = work / "cache" / f"latents_{name}.safetensors"
        cache_dataset_latents(base_dir, name, datasets[name], caches[name])
        with_cache[f"cache {name}"] = time.perf_counter() - t0
    for fname, entry in finetuners.items():
        ds = {"name": entry["dataset"], "entry": datasets[entry["dataset"]]}
        t0 = time.perf_counter()
        finetune_model(base_dir, fname, entry, ds, caches[entry["dataset"]], base_dir.parent / f"ft-{fname}",
                     work / "state" / fname)
        with_cache[f"ft-{fname}"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        pipe = load_pipeline(base_dir)
        dataset = load_finetune_dataset(entry["dataset"], datasets[entry["dataset"]])
        res = int(datasets[entry["dataset"]].get("resolution") or native_resolution(pipe))
        train(pipe, make_finetuner(entry), EncodeEveryStep(pipe.vae, dataset, res), work / "nocache" / f"ft-{fname}",
              work / "state_nocache" / fname, {"kind": "finetune"})
        without[f"ft-{fname}"] = time.perf_counter() - t0
    total_with, total_without = sum(with_cache.values()), sum(without.values())
    return dict(with_cache_s=with_cache, without_cache_s=without, total_with_cache_s=total_with,
                total_without_cache_s=total_without, ratio=total_without / total_with,
                steps={f: int(e.get("steps", 100)) for f, e in finetuners.items()})


# ------------------------------------------------------------------------------------- 3. storage
def dir_bytes(d: Path, skip=()) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and p.name not in skip)


def storage_figures(models_dir: Path) -> dict | None:
    """{kind: median bytes, ratio to a full copy} over the variants in `models_dir` (<model>/<variant>)."""
    from editrobust.models.variants import pipeline_dir, read_variant

    if not models_dir.is_dir():
        return None
    out = {}
    for model in sorted(p for p in models_dir.iterdir() if (p / "base" / "variant.json").is_file()):
        full = dir_bytes(pipeline_dir(model / "base"), skip=NOT_PIPELINE_FILES)
        kinds: dict[str, list[int]] = {}
        for v in sorted(model.iterdir()):
            if v.name == "base" or "@" in v.name or not (v / "variant.json").is_file():
                continue
            info = read_variant(v)
            kinds.setdefault(f"{info['kind']} ({info['method']})", []).append(dir_bytes(v))
        out[model.name] = dict(full_copy_bytes=full, kinds={
            k: dict(variants=len(b), median_bytes=median(b), ratio_to_full_copy=median(b) / full)
            for k, b in sorted(kinds.items())})
    return out or None


# ---------------------------------------------------------------------- 4. table1 from run logs
def parse_snakemake_log(path: Path) -> dict:
    text = path.read_text(errors="replace")
    command = re.search(r"^\s*Command: (.*)$", text, re.M)
    elapsed = re.search(r"^Elapsed time: (?:(\d+) days?, )?(\d+):(\d+):(\d+(?:\.\d+)?)$", text, re.M)
    seconds = None
    if elapsed:
        d, h, m, s = elapsed.groups()
        seconds = int(d or 0) * 86400 + int(h) * 3600 + int(m) * 60 + float(s)
    return dict(file=path.name, command=command.group(1) if command else "",
                rules=set(re.findall(r"^(?:local)?rule (\w+):$", text, re.M)),
                tables=set(re.findall(r"^\s+wildcards: table=(\w+)$", text, re.M)),
                complete=bool(re.search(r"^\d+ of \d+ steps \(100%\) done$", text, re.M)),
                nothing_to_do="Nothing to be done" in text, elapsed_s=seconds)


def cold_run(workdir: Path, table: str) -> dict | None:
    """The most recent complete Snakemake run in `workdir` that built `table` starting from the
    base model: its elapsed time as Snakemake logged it (from the DAG's start: process start-up
    and Snakefile parsing, a few seconds, are not in it)."""
    runs = [parse_snakemake_log(p) for p in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))]
    cold = [r for r in runs if r["complete"] and table in r["tables"] and "prepare_base_model" in r["rules"]
            and r["elapsed_s"] is not None]
    return dict(seconds=cold[-1]["elapsed_s"], log=cold[-1]["file"], command=cold[-1]["command"]) if cold else None


def warm_rerun(workdir: Path, config: Path, table: str, repeats: int) -> dict:
    """Wall time of `snakemake results/tables/<table>.csv` when it is up to date (median of
    `repeats`): what re-running the whole study costs once everything is cached."""
    target = f"results/tables/{table}.csv"
    if not (workdir / target).is_file():
        return dict(seconds=None, why=f"no {target} in {workdir}")
    exe = Path(sys.executable).parent / "snakemake"
    cmd = [str(exe if exe.exists() else "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), "--cores", "2", target]
    dry = subprocess.run([*cmd, "-n"], capture_output=True, text=True)
    if "Nothing to be done" not in dry.stdout + dry.stderr:
        return dict(seconds=None, why=f"{target} is not up to date with {config} (a re-run would compute)")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
    return dict(seconds=median(times), repeats=repeats)


# ----------------------------------------------------------------------------------- 5. peak RSS
def peak_rss(workdir: Path, top: int = 3) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when loaded by path
    from rule_benchmarks import read_rule_benchmarks

    rows = [dict(job=f"{r['rule']}/{r['job']}", max_rss_mb=r["max_rss_mb"], wall_s=r["seconds"])
            for r in read_rule_benchmarks(workdir)]
    return sorted(rows, key=lambda r: -r["max_rss_mb"])[:top]


# ----------------------------------------------------------------------------------------- setup
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import diffusers

    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
            f"diffusers {diffusers.__version__}; {datetime.now():%Y-%m-%d}")


def quick_setup(work: Path, config: dict, model: Path | None) -> tuple[Path, dict, dict]:
    """A base variant of a tiny random SD1.x pipeline (`model`: a saved diffusers directory of one,
    else built here) and the config's fine-tuners shrunk to 1 step on 4 images."""
    from editrobust.models.base import prepare_base_model
    from editrobust.models.builders import build_sd1_pipeline

    if model is None:
        model = work / "pipeline"
        build_sd1_pipeline(TINY_SIZES, seed=0).save_pretrained(model, safe_serialization=True)
    base = work / "models" / "tiny" / "base"
    prepare_base_model("tiny", {"kind": "path", "path": str(model)}, base)
    # the four fine-tunes; their edit-aware twins train the same on the unedited base
    finetuners = {n: dict(e, steps=1, batch=2, save_every=0, checkpoint_every=0)
                  for n, e in config["finetuners"].items() if not e.get("keep_edit_frozen")}
    datasets = {n: dict(e, size=min(int(e.get("size", 4)), 4)) for n, e in config["datasets"].items()}
    return base, finetuners, datasets


def add_edit(base_dir: Path) -> None:
    """One UCE erasure (no classifier needed), so storage shows an edit's delta too."""
    from editrobust.editors import edit_model

    edit_model(base_dir, "erase", {"method": "uce_erase", "edit_concepts": ["naked", "blood"]},
             base_dir.parent / "ed-erase")


def report(fig: dict) -> None:
    print(f"machine: {fig['machine']}")
    s = fig.get("sampling")
    if s:
        print(f"\n1. sampling ({s['images']} images, {s['steps']} steps, median of {s['repeats']}):")
        print(f"   batched sampler, batch {s['batch']}: {s['batched_images_per_s']:.2f} images/s")
        print(f"   one pipeline call per image:  {s['per_image_images_per_s']:.2f} images/s")
        print(f"   ratio: {s['ratio']:.1f}x (target >= 4x at batch 32); largest pixel difference: "
              f"{s['max_pixel_difference']}")
    else:
        print(f"\n1. sampling: not measured ({fig['no_model']})")
    f = fig.get("finetune")
    if f:
        print("\n2. shared work: the fine-tunes with the shared latent cache vs encoding every step (one run each):")
        for k, v in f["with_cache_s"].items():
            other = f["without_cache_s"].get(k)
            print(f"   {k:24s} {v:8.1f} s" + (f"   without cache {other:8.1f} s" if other is not None else ""))
        print(f"   total: {f['total_with_cache_s']:.1f} s with the cache, {f['total_without_cache_s']:.1f} s "
              f"without; ratio {f['ratio']:.2f}x")
    else:
        print(f"\n2. shared work: not measured ({fig['no_model']})")
    print("\n3. storage per variant kind vs a full model copy:")
    for source, by_model in fig["storage"].items():
        for model, st in (by_model or {}).items():
            print(f"   {source}, model {model}: full copy {st['full_copy_bytes'] / 1e6:.2f} MB")
            for kind, k in st["kinds"].items():
                print(f"     {kind:26s} {k['median_bytes'] / 1e6:10.3f} MB  ({k['ratio_to_full_copy']:.4f} of a copy, "
                      f"median of {k['variants']})")
    if not any(fig["storage"].values()):
        print("   not measured (no variants)")
    t = fig["table1"]
    print(f"\n4. {t['table']} in {fig['workdir']}:")
    c = t["cold"]
    print("   cold run (Snakemake's elapsed time): " + (f"{c['seconds']:.1f} s ({c['log']})" if c else
          "not measured (no complete run from the base model in .snakemake/log)"))
    w = t["warm"]
    print("   warm re-run (nothing to do): " + (f"{w['seconds']:.1f} s (median of {w['repeats']})"
          if w["seconds"] is not None else f"not measured ({w['why']})"))
    print(f"\n5. peak memory (max_rss) from {fig['workdir']}/benchmarks/rules:")
    for r in fig["peak_rss"] or []:
        print(f"   {r['max_rss_mb']:9.1f} MB  {r['job']} ({r['wall_s']:.1f} s)")
    if not fig["peak_rss"]:
        print("   not measured (no benchmark files)")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny random model and tiny sizes (seconds)")
    ap.add_argument("--workdir", type=Path, default=REPO, help="where results/, .snakemake/ and benchmarks/rules are")
    ap.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    ap.add_argument("--model", type=Path, help="the toy base variant (default <workdir>/results/models/toy/base); "
                    "with --quick, a saved diffusers directory of a tiny SD1.x pipeline (default: build one)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", default="table1", help="the table whose cold and warm runs are looked up")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_yaml(args.config)
    fig: dict = dict(machine=machine(), quick=args.quick, workdir=str(args.workdir), storage={})

    with tempfile.TemporaryDirectory(prefix="editrobust_bench_") as tmp:
        work = Path(tmp)
        if args.quick:
            base, finetuners, datasets = quick_setup(work, config, args.model)
            n_images, batch, steps, repeats = 4, 4, 2, 1
        else:
            model_name = next(iter(config["models"]))
            base = args.model or args.workdir / "results" / "models" / model_name / "base"
            finetuners, datasets = config["finetuners"], config["datasets"]
            n_images, batch, repeats = args.images, args.batch, args.repeats
            steps = int(config["models"][model_name].get("sampling", {}).get("steps", 20))
            if (base / "variant.json").is_file():  # train next to a copy of the base's variant.json
                from shutil import copytree
                copytree(base, work / "models" / model_name / "base", dirs_exist_ok=True)
                base = work / "models" / model_name / "base"
        if (base / "variant.json").is_file():
            fig["sampling"] = sampling_figures(base, n_images, batch, steps, repeats)
            fig["finetune"] = finetune_figures(base, finetuners, datasets, work)
            add_edit(base)
            fig["storage"]["variants written here"] = storage_figures(base.parent.parent)
        else:
            fig["no_model"] = f"no toy base model at {base}"
        fig["storage"][f"{args.workdir}/results/models"] = storage_figures(args.workdir / "results" / "models")
    fig["table1"] = dict(table=args.table, cold=cold_run(args.workdir, args.table),
                         warm=warm_rerun(args.workdir, args.config, args.table, args.repeats))
    fig["peak_rss"] = peak_rss(args.workdir)
    report(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, default=str) + "\n")
    return fig


if __name__ == "__main__":
    main()
