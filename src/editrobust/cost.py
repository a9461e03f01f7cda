"""What a grid costs before it runs: GPU-hours per rule class, in total, and the disk it writes.

    snakemake cost [--configfile F]                 (rule in workflow/rules/preflight.smk)
    python -m editrobust.cost [--configfile F] [--card h100] [--measured gpu_check.json] [TARGET ...]

The jobs are the pre-flight's (`preflight.plan_targets`: every workflow file upstream of the targets,
found through the workflow's own input functions; default: everything the config asks for), all of
them whether built or not (`--remaining`: only those whose output is not on disk yet).

**Work** is counted in floating-point operations, with PyTorch's `FlopCounterMode` over the real
architectures built on the `meta` device (`models.full_size.meta_pipeline`; the toy model small on
the CPU): one denoiser forward of one row at the job's resolution, the prompt encoders, a VAE
decode and encode, and one training row (forward + backward of `finetune.objectives.per_sample_loss`
after the fine-tuner's own `setup`, so LoRA's frozen UNet passes gradients to the text encoder but
computes no weight gradients of its own). Per job:

- sampling: images x (steps x rows per step (2 with classifier-free guidance, FLUX: 1) x denoiser
  + prompt encoding x rows + one decode);
- a fine-tune: `Finetuner.work` training rows x one row (+ one denoiser forward per row with
  gradient checkpointing), and the images it samples first (DreamBooth's class images);
- an edit: `Editor.work` (images sampled in float32, denoiser forwards, denoiser training rows;
  closed forms and text-encoder optimisations count nothing);
- a latent cache: rows x 2 (each image and its mirror) VAE encodes at the training resolution;
- ReFACT's statistic: corpus lines x one prompt encoding;
- CLIP embeddings and the SD safety checker: one ViT pass per image, 2 x parameters x tokens of
  the named architecture (`VIT`); FID: one Inception-v3 pass per image (5.7 GMACs). Scorers that
  read embeddings or run on the CPU (the toy's oracle, black, human labels) count nothing.

**Seconds** are FLOPs / (the card's dense bf16/fp16 peak x `UTILISATION`), and twice that for
float32 work (TF32 runs at half the bf16 peak on A100 and H100): *extrapolated*. The utilisation
is calibrated on one public measurement of the same architecture: SD1.5 (SD1.4's UNet, text
encoder and VAE) in diffusers with PyTorch SDPA on an A100 80 GB SXM takes a median 1.603 s per
512 px image at 50 steps with guidance, batch 1 (fal-ai/stable-diffusion-benchmarks, README,
"Diffusers (torch 2.1, SDPA)"); our count for that image is 82.9 TFLOP, so 0.166 of the A100's
312 TFLOPS. Larger batches run closer to peak, so this errs long. With `--measured` (the JSON of
`benchmarks/gpu_check.py --out`), sampling and fine-tune rows of an architecture measured on a GPU
use its measured seconds per image / per training row instead, scaled by the FLOP ratio between
the job's settings and the measured ones, and say so in the `basis` column.

Not counted: data loading, checkpoint writes, EMA updates (memory-bound, no FLOPs), the toy base
model's training (a CPU job), FID's reference statistics (once per reference set).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from editrobust import paths
from editrobust import variant_names as vn
from editrobust.models import FAMILY_ARCHITECTURE

# Dense bf16 / fp16 tensor-core peaks (no sparsity), TFLOPS: the vendors' data sheets (SXM parts).
CARDS = {"h100": ("NVIDIA H100 SXM", 989.4), "h200": ("NVIDIA H200 SXM", 989.4), "a100": ("NVIDIA A100 SXM", 312.0)}
# The calibration above: 82.9 TFLOP per SD1.5 image (our count) / (1.603 s x 312 TFLOPS).
CALIBRATION = dict(seconds=1.603, card="a100", arch="sd14", steps=50, guidance=7.5, size=512)
UTILISATION = 0.166
# The sampling settings benchmarks/gpu_check.py measures per architecture (its SAMPLING: steps,
# guidance; native resolution, bfloat16), for scaling its seconds per image to a job's settings.
GPU_CHECK_SAMPLING = {"sd14": (50, 7.5), "sdxl": (50, 5.0), "flux_schnell": (4, 0.0)}
FLOAT32_SLOWDOWN = 2.0  # TF32 peak = half the bf16 peak (A100 156 vs 312, H100 SXM 494.7 vs 989.4)
# CLIP vision towers: (parameters, tokens incl. the class token) -> 2 x params x tokens FLOPs per image.
VIT = {"B-32": (87.8e6, 50), "B-16": (86.2e6, 197), "L-14": (303.2e6, 257), "H-14": (632.1e6, 257),
       "bigG-14": (1844.9e6, 257)}
INCEPTION_FLOPS = 2 * 5.71e9  # Inception-v3 at 299 px: 5.71 GMACs
# Finetuner keys that do not change one training row's graph (the rest key the count's cache).
_SCHEDULE_KEYS = {"dataset", "steps", "batch", "lr", "lr_warmup_steps", "optimizer", "gradient_accumulation_steps",
                  "mixed_precision", "max_grad_norm", "random_flip", "posterior_sample", "seed", "checkpoint_every",
                  "keep_edit_frozen", "save_every", "use_ema", "identifier", "class_name", "instance_prompt",
                  "with_prior_preservation", "prior_loss_weight", "num_class_images", "class_prompt", "class_seed",
                  "class_sampling", "alpha", "gradient_checkpointing", "text_encoder_lr"}


def count_flops(fn: Callable[[], object]) -> float:
    """Floating-point operations of `fn()` (forward and any backward it runs), by PyTorch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


class ModelFlops:
    """FLOPs of one model's passes, counted once each on a pipeline of its shapes."""

    def __init__(self, factory: Callable[[], object], pipe=None):
        """`factory` builds a fresh pipeline (a training row's fine-tuner setup changes it); `pipe`,
        one already built by it, is read for every forward count (default: built here)."""
        self.factory = factory
        self.pipe = factory() if pipe is None else pipe
        self._cache: dict = {}

    def _memo(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def _latents(self, pipe, size: int):
        import torch

        h = size // pipe.vae_scale_factor
        return torch.zeros(1, pipe.vae.config.latent_channels, h, h, device=_device(pipe))

    def _loss(self, pipe, size: int):
        import torch

        from editrobust.finetune.objectives import per_sample_loss

        return per_sample_loss(pipe, self._latents(pipe, size), ["a photo"], torch.Generator().manual_seed(0))

    def text(self) -> float:
        """Encoding one prompt (every text encoder)."""
        from editrobust.finetune.objectives import text_encoder_names

        counts = self._by_module(self.native)
        return sum(counts.get(type(getattr(self.pipe, n)).__name__, 0.0) for n in text_encoder_names(self.pipe))

    @property
    def native(self) -> int:
        from editrobust.sampling.generate import native_resolution

        return native_resolution(self.pipe)

    def _by_module(self, size: int) -> dict[str, float]:
        """FLOPs of one forward (prompt encoding and denoiser) at `size` px, by top-level module class."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        def run():
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                self._loss(self.pipe, size)
            return {k: float(sum(v.values())) for k, v in counter.get_flop_counts().items() if "." not in k}
        return self._memo(("forward", size), run)

    def denoiser(self, size: int) -> float:
        """One denoiser forward of one row at `size` px."""
        from editrobust.finetune.objectives import denoiser

        return self._by_module(size)[type(denoiser(self.pipe)).__name__]

    def decode(self, size: int) -> float:
        import torch

        def run():
            with torch.no_grad():
                self.pipe.vae.decode(self._latents(self.pipe, size))
        return self._memo(("decode", size), lambda: count_flops(run))

    def encode(self, size: int) -> float:
        import torch

        def run():
            with torch.no_grad():
                self.pipe.vae.encode(torch.zeros(1, 3, size, size, device=_device(self.pipe)))
        return self._memo(("encode", size), lambda: count_flops(run))

    def image(self, settings, size: int) -> float:
        """One sampled image: every step's denoiser rows, the prompt encodings, one decode."""
        from editrobust.models.components import model_family

        rows = 2 if settings.guidance > 1 and model_family(self.pipe) != "flux" else 1
        return settings.steps * rows * self.denoiser(size) + rows * self.text() + self.decode(size)

    def train_row(self, entry: Mapping | None, size: int) -> float:
        """One training row, forward + backward: after finetuner `entry`'s own setup, or (None) with
        the whole denoiser trained and the text encoders frozen (an edit that trains the UNet)."""
        key = ("train", size, None if entry is None else
               json.dumps({k: v for k, v in entry.items() if k not in _SCHEDULE_KEYS}, sort_keys=True, default=str))

        def run():
            from editrobust.finetune import make_finetuner
            from editrobust.finetune.objectives import denoiser

            pipe = self.factory()
            if entry is None:
                for module in pipe.components.values():
                    if hasattr(module, "requires_grad_"):
                        module.requires_grad_(False)
                denoiser(pipe).requires_grad_(True)
            else:
                make_finetuner(entry).setup(pipe)
            return count_flops(lambda: self._loss(pipe, size).sum().backward())
        flops = self._memo(key, run)
        if entry is not None and entry.get("gradient_checkpointing"):  # the forward runs again in the backward
            flops += self.denoiser(size)
        return flops


def _device(pipe):
    from editrobust.models.components import execution_device

    return execution_device(pipe)


def vit_flops(spec: Mapping) -> tuple[float, str]:
    """FLOPs of one image through a CLIP model's vision tower, from its architecture name (open_clip
    `arch`, or the ViT size in a hub id); ViT-L/14 where none is recognised (said in the note)."""
    text = f"{spec.get('arch', '')} {spec.get('hub_id', '')}"
    for name, (params, tokens) in VIT.items():
        if re.search(rf"ViT-{re.escape(name)}\b", text, flags=re.IGNORECASE):
            return 2 * params * tokens, f"ViT-{name}"
    params, tokens = VIT["L-14"]
    return 2 * params * tokens, "ViT-L-14 (assumed)"


# --- the estimate --------------------------------------------------------------------------------
@dataclass
class Job:
    rule: str  # the rule class, e.g. "sample", "fine-tune lora"
    model: str
    work: float  # the job's own unit: images, training rows, lines, ...
    unit: str
    flops: float
    float32: bool = False
    basis: str = "extrapolated"
    seconds: float = 0.0
    bound: bool = False
    unknown: bool = False  # its size is not known before its inputs exist (counted as 0)


@dataclass
class Estimate:
    card: str
    tflops: float
    utilisation: float
    jobs: list[Job] = field(default_factory=list)
    disk: list = field(default_factory=list)  # preflight.DiskItem

    def rows(self) -> list[dict]:
        """One row per (rule class, model): jobs, work, PFLOP, GPU-hours, the longest job."""
        groups: dict[tuple[str, str], list[Job]] = {}
        for j in self.jobs:
            groups.setdefault((j.rule, j.model), []).append(j)
        out = []
        for (rule, model), jobs in sorted(groups.items(), key=lambda kv: -sum(j.seconds for j in kv[1])):
            out.append(dict(rule=rule, model=model, jobs=len(jobs), work=sum(j.work for j in jobs), unit=jobs[0].unit,
                            pflop=sum(j.flops for j in jobs) / 1e15, gpu_hours=sum(j.seconds for j in jobs) / 3600,
                            longest_hours=max(j.seconds for j in jobs) / 3600,
                            basis=", ".join(sorted({j.basis for j in jobs})), bound=any(j.bound for j in jobs),
                            unknown=sum(j.unknown for j in jobs)))
        return out

    @property
    def gpu_hours(self) -> float:
        return sum(j.seconds for j in self.jobs) / 3600


class _Measured:
    """Seconds per image / per training row measured by benchmarks/gpu_check.py, by architecture."""

    def __init__(self, path: str | Path | None):
        self.rows, self.gpu = {}, None
        if path is None:
            return
        data = json.loads(Path(path).read_text())
        self.gpu = data.get("machine", {}).get("gpu") or data.get("machine", {}).get("device")
        if data.get("size") != "full":
            raise ValueError(f"{path}: measured on {data.get('size')!r} models; the estimate needs the full-size run")
        for r in data.get("rows", []):
            if r.get("status") == "ok" and r.get("value"):
                per = r["value"] if r["task"] == "sampling" else r["value"] * (r.get("batch") or 1)
                self.rows[r["arch"], r["task"]] = 1.0 / per  # seconds per image / per training row

    def get(self, family: str, task: str) -> float | None:
        return self.rows.get((FAMILY_ARCHITECTURE.get(family), task))


def estimate(config: Mapping, targets: Iterable[str] | None = None, card: str = "h100", utilisation: float = UTILISATION,
             measured: str | Path | None = None, remaining: bool = False) -> Estimate:
    """The GPU work and seconds of every planned job, and the disk of the outputs still to write."""
    from editrobust.editors import EDITORS
    from editrobust.finetune import make_finetuner
    from editrobust.preflight import _dataset_rows, disk_plan, image_counter, model_sizes, plan_targets
    from editrobust.sampling import SamplingSettings

    name, tflops = CARDS[card]
    plan = plan_targets(config, targets)
    rate = tflops * 1e12 * utilisation
    measures = _Measured(measured)
    out = Estimate(card=name, tflops=tflops, utilisation=utilisation)
    models = sorted({f["model"] for t in (paths.VARIANT_JSON, paths.SAMPLES_INDEX) for f in plan.matching(t)})
    sizes = {m: model_sizes(config["models"][m]) for m in models}
    flops = {m: ModelFlops(sizes[m].pipeline_factory, sizes[m].pipe) for m in models}
    reference: dict = {}  # (model, task) -> FLOPs of what gpu_check measured, for the ratio
    image_count = image_counter(config)

    def known(n: int | None) -> tuple[int, bool]:
        """A job's work when counted (0 when its size is not known before its inputs exist), and
        whether it was not: the row then says how many of its jobs are of unknown size."""
        return n or 0, n is None

    def todo(template: str) -> list[dict]:
        found = plan.matching(template)
        return [f for f in found if not Path(paths.fill(template, **f)).exists()] if remaining else found

    def settings_of(model: str, overrides: Mapping | None = None):
        entry = config["models"][model]
        settings = SamplingSettings.from_dict({**(entry.get("sampling") or {}), **(overrides or {})})
        dtype = (overrides or {}).get("dtype") or entry.get("dtype") or settings.dtype
        return settings, dtype

    def image_flops(model: str, settings) -> float:
        return flops[model].image(settings, settings.height or flops[model].native)

    def add(job: Job, task: str | None = None, reference_flops: Callable[[], float] | None = None) -> None:
        family = config["models"][job.model].get("family")
        per = measures.get(family, task) if task and family else None
        if per is not None:  # measured on a GPU (in bf16): seconds per unit, scaled to this job's FLOPs per unit
            ref = reference.setdefault((job.model, task), reference_flops())
            job.seconds = job.flops / ref * per * (FLOAT32_SLOWDOWN if job.float32 else 1.0)
            job.basis = f"measured ({measures.gpu})"
        else:
            job.seconds = job.flops / rate * (FLOAT32_SLOWDOWN if job.float32 else 1.0)
        out.jobs.append(job)

    for f in todo(paths.SAMPLES_INDEX):
        m = f["model"]
        settings, dtype = settings_of(m)
        n, unknown = known(image_count(f["promptset"]))

        def measured_image(m=m):
            steps, guidance = GPU_CHECK_SAMPLING[FAMILY_ARCHITECTURE[config["models"][m]["family"]]]
            return flops[m].image(SamplingSettings(steps=steps, guidance=guidance), flops[m].native)
        add(Job("sample", m, n, "images", n * image_flops(m, settings), dtype == "float32", unknown=unknown),
            "sampling", measured_image)
    for f in todo(paths.VARIANT_JSON):
        m, variant = f["model"], vn.parse(f["variant"])
        if not variant.steps or variant.checkpoint is not None:
            continue
        last = variant.steps[-1]
        native = flops[m].native
        if last.kind == vn.EDIT:
            entry = config["editors"][last.name]
            editor = EDITORS.get(entry["method"])
            work = editor.work(editor.with_defaults(entry))
            settings, _ = settings_of(m)
            total = (work.images * image_flops(m, settings) + work.denoiser_forwards * flops[m].denoiser(native)
                     + work.denoiser_trains * flops[m].train_row(None, native))
            add(Job(f"edit {entry['method']}", m, 1, "edits", total, float32=True, bound=work.bound))
        else:
            entry = config["finetuners"][last.name]
            method = make_finetuner(entry)
            rows, images, sampling = method.work()
            size = int(config["datasets"][entry["dataset"]].get("resolution") or native)
            row = flops[m].train_row(entry, size)
            total = rows * row
            if images:
                settings, _ = settings_of(m, {**(sampling or {}), "dtype": "float32"})
                total += images * image_flops(m, settings)
            precision = method.settings.get("mixed_precision") or "no"
            add(Job(f"fine-tune {method.name}", m, rows, "training rows", total, precision == "no"), method.name,
                lambda m=m, method=method: flops[m].train_row({"method": method.name}, flops[m].native))
    for f in todo(paths.LATENT_CACHE):
        m = f["model"]
        rows, unknown = known(_dataset_rows(config, f["dataset"]))
        size = int(config["datasets"][f["dataset"]].get("resolution") or flops[m].native)
        add(Job("latent cache", m, rows, "dataset rows", 2 * rows * flops[m].encode(size), True, unknown=unknown))
    for f in todo(paths.REFACT_STATISTIC):
        m = f["model"]
        lines = _corpus_lines(config, f["corpus"])
        add(Job("refact statistic", m, lines, "corpus lines", lines * flops[m].text(), True))
    for f in todo(paths.EMBEDDINGS):
        n, unknown = known(image_count(f["promptset"]))
        per, arch = vit_flops((config.get("clip_models") or {}).get(f["clip_model"], {}))
        add(Job(f"embed {arch}", f["model"], n, "images", n * per, unknown=unknown))
    for f in todo(paths.SCORES):
        if (config.get("scorers") or {}).get(f["scorer"], {}).get("kind") == "sd_safety_checker":
            n, unknown = known(image_count(f["promptset"]))
            add(Job("score sd_safety_checker (ViT-L-14)", f["model"], n, "images", n * vit_flops({"arch": "ViT-L-14"})[0],
                    unknown=unknown))
    for f in todo(paths.QUALITY):
        qs = config["quality_sets"][f["quality_set"]]
        if (qs.get("fid") or {}).get("extractor", "inception") != "inception":
            continue  # the toy's random-convolution features: a CPU job
        n, unknown = known(image_count(qs["promptset"]))
        add(Job("quality (FID, Inception-v3)", f["model"], n, "images", n * INCEPTION_FLOPS, unknown=unknown))
    out.disk = disk_plan(plan, config, sizes, only_missing=remaining)
    return out


def _corpus_lines(config: Mapping, corpus: str) -> int:
    from editrobust.editors.methods.refact import BUILTIN_CORPORA

    if corpus in BUILTIN_CORPORA:
        return BUILTIN_CORPORA[corpus]
    return int((config.get("downloads") or {}).get(corpus, {}).get("lines") or 0)


# --- output ----------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.3g}"


def render(est: Estimate) -> str:
    from editrobust.preflight import _size

    header = ("rule class", "model", "jobs", "work", "PFLOP", "GPU-hours", "longest job (h)", "basis")
    lines = [header]
    for r in est.rows():
        work = f"{_num(r['work'])} {r['unit']}" + (" (at most)" if r["bound"] else "")
        work += f" (+{r['unknown']} job(s) of unknown size)" if r["unknown"] else ""
        lines.append((r["rule"], r["model"], str(r["jobs"]), work, _num(r["pflop"]), _num(r["gpu_hours"]),
                      _num(r["longest_hours"]), r["basis"]))
    lines.append(("total", "", str(len(est.jobs)), "", _num(sum(j.flops for j in est.jobs) / 1e15),
                  _num(est.gpu_hours), "", ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    table.insert(1, "  ".join("-" * w for w in widths))
    kinds: dict[str, list] = {}
    for item in est.disk:
        kinds.setdefault(item.kind, []).append(item)
    disk = []
    for kind, items in kinds.items():
        known = [i.bytes for i in items if i.bytes is not None]
        size = max(known, default=0) if kind.startswith("training state") else sum(known)
        unknown = len(items) - len(known)
        disk.append(f"  {kind}: {len(items)} output(s), {_size(size)}" + (f" (+{unknown} of unknown size)" if unknown else ""))
    basis = (f"GPU-hours on one {est.card} ({est.tflops:g} TFLOPS dense bf16 x utilisation {est.utilisation:g}; "
             "float32 work at half that): extrapolated from FLOP counts unless the basis says measured")
    return "\n".join([basis, *table, "", "disk, by output kind:", *disk])


def main(argv: list[str] | None = None) -> int:
    from editrobust.config import load_yaml, validate_config

    parser = argparse.ArgumentParser(prog="python -m editrobust.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--card", choices=sorted(CARDS), default="h100")
    parser.add_argument("--utilisation", type=float, default=UTILISATION,
                        help=f"share of the card's peak the jobs reach (default {UTILISATION}, see the module doc)")
    parser.add_argument("--measured", default=None, help="benchmarks/gpu_check.py --out JSON of a full-size GPU run")
    parser.add_argument("--remaining", action="store_true", help="only the jobs whose output is not on disk yet")
    parser.add_argument("targets", nargs="*", help="target files (default: everything the config asks for)")
    args = parser.parse_args(argv)
    config = validate_config(load_yaml(args.configfile))
    est = estimate(config, args.targets or None, args.card, args.utilisation, args.measured, args.remaining)
    print(render(est))
    return 0


if __name__ == "__main__":
    sys.exit(main())
