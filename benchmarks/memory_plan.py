"""The memory plan of a study grid: GPU memory per job, by precision setting, against 24 / 40 / 80 GB cards.

    .venv/bin/python benchmarks/memory_plan.py                          # config/paper.yaml, a text table
    .venv/bin/python benchmarks/memory_plan.py --configfile X --markdown  # the table for config/README.md
    .venv/bin/python benchmarks/memory_plan.py --measure                # measure missing points (delete the JSON: all, ~1 h)

Jobs are those Snakemake would run for the config (`editrobust.preflight.plan_targets`): per model,
sampling, each editor method (the editors of one method share a row: their memory is the same) and
each fine-tuner. Every byte figure is the job's peak on one GPU, in GiB (2^30 bytes):

- **weights**: every component of the pipeline (the jobs move the whole pipeline to the device),
  parameter counts from the real architectures built on the `meta` device
  (`editrobust.models.full_size.meta_pipeline`). Sampling: the model's `dtype`. Edits: float32
  (`editors.edit_model` loads float32). Fine-tunes: float32 (`mixed_precision: no`), or the trained
  parameters in float32 (master weights) and the frozen ones in the half dtype. The trainable
  parameters come from the fine-tuner's own `setup` run on the meta pipeline (a LoRA's adapter
  weights are added by it).
- **grads**: 4 bytes per trainable parameter (float32, as the master weights).
- **optimizer**: AdamW 2 x 4 bytes per trainable parameter (exp_avg, exp_avg_sq); Prodigy
  (prodigyopt 1.1.2, `Prodigy.step`) 4 x 4 bytes: exp_avg, exp_avg_sq, s and p0 (p0 is a scalar
  for a parameter that is all zeros at the first step, e.g. LoRA's B: counted in full, an upper
  bound). AdamW's default `foreach` step also makes one float32 temporary of the trainable size
  (`torch._foreach_sqrt(exp_avg_sqs)`); it lives after the backward, when the activations are
  freed, so the peak counts max(activations, that temporary).
- **EMA**: 4 bytes per trainable parameter when `use_ema` (diffusers' `EMAModel` keeps float32
  shadow weights on the device).
- **activations**: what one micro-batch (`batch`; DreamBooth with prior preservation: twice that)
  holds at the peak of forward + backward, measured and fitted (below).
  Sampling: the peak of one denoiser call on batch_size rows (x2 with classifier-free guidance) or
  of the VAE decode of the batch, whichever is larger; the text encoders run before, and their
  activations are gone by then.

Activations, how they are measured (`--measure`, stored in benchmarks/activation_measurements.json):
each point is one forward + backward (sampling: one forward under `no_grad`) of the real
architecture on the CPU, in a fresh subprocess, with every parameter a view into one shared random
buffer (activations depend on the shapes only; this keeps each process under ~4 GB, the SDXL UNet
alone being 10 GB in float32) and each gradient dropped as it is accumulated (gradients are
counted above). Peak = the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
right before the step) minus its resident set then, with glibc's mmap threshold fixed at 128 KiB
so that freed tensors go back to the OS at once. Modes: `train` (the denoiser's parameters train:
full, DreamBooth), `through` (the denoiser is frozen and the gradient flows through it to the
text-encoder conditioning: LoRA / DoRA), `infer` (sampling, batch rows at the model's dtype).
Precisions: float32; bf16 autocast with the frozen module stored in bf16 (`through`, `infer`);
for `train`, the trained parameters stored in bf16 under autocast (`bf16_params`: the activations
of mixed precision without autocast's bf16 copies of the float32 master weights, which the plan
adds as 2 bytes per trained Linear/Conv parameter; checked against a real float32-master autocast
run of SD1.4, see `tests/test_memory_plan.py`: the SDXL UNet's copies alone would break the 4 GB
limit). Denoisers are measured with and without `enable_gradient_checkpointing()` in bf16 (the
mixed+ckpt column). The text encoders are measured in float32 only; the plan halves them under
mixed precision and does not lower them for checkpointing (an upper bound: they are small beside
the denoiser's). fp16 is planned with the bf16 figures (the same bytes); float32 sampling (the
debias edit) with twice the bf16 figures. CPU and GPU kernels differ (attention: PyTorch's CPU
flash attention vs the GPU's flash / memory-efficient SDPA, both O(tokens) in memory): the
figures estimate the GPU's; `gpu_check.py` measures them on a GPU.

The fits (non-negative least squares: every term is memory), against the latent tokens n (UNet
and VAE: (px/8)^2; FLUX: (px/16)^2 image tokens plus its 256 text tokens) and the batch B:
UNet and VAE a + w n + b B n (w n grows with the image but not with the batch: per-call
workspaces, e.g. the CPU convolutions' im2col buffers; a second row added far less than the
first); CLIP (77 tokens) a + c B; FLUX's transformer does not fit the CPU at full depth, so it is
measured at reduced depth with the real width ((double, single) blocks = (1, 1), (2, 1), (1, 2))
and fitted as B (a0 + a1 n + d e n + s f n), read at d = 19, s = 38; with checkpointing each
block's term is its saved input, fixed at 3072 bf16 values per token (FLUX_CKPT_BYTES_PER_BLOCK_TOKEN).
The points are small (UNets 64-128 px with one 256 px point each for SDXL through / SD1.4 train
held out and then added, inference 256-384 px, FLUX 128-384 px, VAE 128-256 px; a few minutes
each on 2 shared cores), so the plan extrapolates 16-64x in tokens along these lines; fits with
more points than terms print their largest relative residual.

A card "fits" a job when the job's total plus 1.5 GiB (CUDA context, cuBLAS workspace, allocator
fragmentation) is at most the card's nominal size in GiB. The last column says what to change
when the configured setting does not fit 80 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEASUREMENTS = Path(__file__).resolve().parent / "activation_measurements.json"
GIB = 1024 ** 3
CARDS_GB = (24, 40, 80)
RESERVE_GIB = 1.5  # CUDA context, cuBLAS workspace and allocator fragmentation
RSS_CAP_BYTES = 4 * GIB  # a measuring process above this is stopped (the machine is shared)
FLUX_DEPTH = (19, 38)  # FLUX.1-schnell's (double, single) blocks
FLUX_TEXT_TOKENS = 256  # schnell's T5 length
# A checkpointed FLUX block keeps its input: 3072 bf16 values per token. At the measured sizes that is
# 3 MB per block, below the measurements' noise (~30 MB), so this term is fixed, not fitted.
FLUX_CKPT_BYTES_PER_BLOCK_TOKEN = 3072 * 2
CLIP_TOKENS = 77
# the measured text encoder of each pipeline component
TEXT_ENCODER_ARCH = {"text_encoder": "clip_l", "text_encoder_2": "clip_bigg"}


# ================================================================================== measuring
def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    status = Path("/proc/self/status").read_text()
    get = lambda key: int(re.search(key + r":\s+(\d+) kB", status).group(1)) * 1024  # noqa: E731
    return get("VmRSS"), get("VmHWM")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)


def _share_weights(module, dtype, requires_grad: bool):
    """Every parameter of `module` (built on the meta device) becomes a view into one random buffer
    of the largest parameter's size: real shapes, ~no memory. Buffers (CLIP's position ids) are
    made real."""
    import torch

    params = [p for p in module.parameters()]
    buffer = torch.randn(max(p.numel() for p in params), dtype=torch.float32).mul_(0.02).to(dtype)
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = torch.nn.Parameter(buffer[:p.numel()].view(p.shape), requires_grad=requires_grad)
        for name, b in list(sub._buffers.items()):
            if b is not None and b.is_meta:
                sub._buffers[name] = (torch.arange(b.shape[-1]).expand(b.shape).clone() if "position_ids" in name
                                      else torch.zeros(b.shape, dtype=b.dtype))
    if requires_grad:
        for p in module.parameters():  # gradients are planned separately: drop each as it arrives
            p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None))
    return module


def _build(component: str, depth: tuple[int, int] | None, latent_channels: int = 4):
    import torch
    from diffusers import FluxTransformer2DModel

    from editrobust.models import full_size

    with torch.device("meta"):
        if component == "flux_schnell" and depth is not None:
            cfg = dict(full_size.flux_schnell_transformer().config)
            cfg.update(num_layers=depth[0], num_single_layers=depth[1])
            return FluxTransformer2DModel.from_config(cfg)
        factories = {"sd14": full_size.sd14_unet, "sdxl": full_size.sdxl_unet,
                     "flux_schnell": full_size.flux_schnell_transformer, "clip_l": full_size.clip_l_text_encoder,
                     "clip_bigg": full_size.clip_bigg_text_encoder,
                     "vae": lambda: full_size.sd_vae(latent_channels)}
        return factories[component]()


def _denoiser_inputs(arch: str, px: int, batch: int, dtype, cond_grad: bool) -> dict:
    import torch

    def cond(*shape):
        return torch.randn(*shape, dtype=dtype).requires_grad_(cond_grad)
    if arch == "flux_schnell":
        side = px // 16
        n = side * side
        img_ids = torch.zeros(n, 3, dtype=dtype)
        img_ids[:, 1] = torch.arange(side).repeat_interleave(side)
        img_ids[:, 2] = torch.arange(side).repeat(side)
        return dict(hidden_states=torch.randn(batch, n, 64, dtype=dtype), timestep=torch.full((batch,), 0.5, dtype=dtype),
                    guidance=None, pooled_projections=cond(batch, 768),
                    encoder_hidden_states=cond(batch, FLUX_TEXT_TOKENS, 4096),
                    txt_ids=torch.zeros(FLUX_TEXT_TOKENS, 3, dtype=dtype), img_ids=img_ids, return_dict=False)
    side = px // 8
    out = dict(sample=torch.randn(batch, 4, side, side, dtype=dtype), timestep=torch.full((batch,), 500),
               return_dict=False)
    if arch == "sd14":
        out["encoder_hidden_states"] = cond(batch, CLIP_TOKENS, 768)
    else:
        out["encoder_hidden_states"] = cond(batch, CLIP_TOKENS, 2048)
        out["added_cond_kwargs"] = {"text_embeds": cond(batch, 1280),
                                    "time_ids": torch.tensor([[px, px, 0, 0, px, px]], dtype=dtype).repeat(batch, 1)}
    return out


def probe(point: Mapping) -> int:
    """Peak bytes above the resident set of one step described by `point` (run in a fresh process):
    {"component": sd14|sdxl|flux_schnell|clip_l|clip_bigg|vae, "mode": train|through|infer,
     "precision": fp32|bf16, "checkpointing": bool, "px": int, "batch": int, "depth": [d, s] (FLUX)}."""
    import contextlib

    import torch

    component, mode, precision = point["component"], point["mode"], point["precision"]
    half = precision in ("bf16", "bf16_params")
    # bf16: trained parameters float32 under autocast (its bf16 weight copies included), frozen ones
    # stored in bf16; bf16_params: trained parameters stored in bf16 too (the same activations
    # without autocast's weight copies, which the plan then adds as 2 bytes per trained weight)
    stored = torch.bfloat16 if half and (mode != "train" or precision == "bf16_params") else torch.float32
    depth = tuple(point["depth"]) if point.get("depth") else None
    module = _build(component, depth, point.get("latent_channels", 4))
    _share_weights(module, stored, requires_grad=(mode == "train"))
    if point.get("checkpointing"):
        if component.startswith("clip"):
            module.gradient_checkpointing_enable()
        else:
            module.enable_gradient_checkpointing()
    module.train(mode != "infer")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if half and mode != "infer" else contextlib.nullcontext()
    batch, px = point["batch"], point.get("px", 0)
    in_dtype = stored if mode == "infer" else torch.float32

    if component.startswith("clip"):
        ids = torch.randint(0, 49_000, (batch, CLIP_TOKENS))
        if mode == "through":  # frozen encoder, a gradient to every layer (a LoRA's adapters): from the embeddings on
            embeddings = getattr(module, "text_model", module).embeddings  # CLIPTextModel has no text_model
            embeddings.register_forward_hook(lambda mod, args, out: out.requires_grad_())

        def step():
            return module(ids, output_hidden_states=True).hidden_states[-2].float().square().mean()
    elif component == "vae":
        z = torch.randn(batch, module.config.latent_channels, px // 8, px // 8, dtype=stored)

        def step():
            return module.decode(z).sample
    else:
        kwargs = _denoiser_inputs(component, px, batch, in_dtype, cond_grad=(mode == "through"))

        def step():
            return module(**kwargs)[0].float().square().mean()

    import gc

    gc.collect()
    before, _ = _rss()
    _reset_peak()
    if mode == "infer":
        with torch.no_grad():
            step()
    else:
        with autocast:
            loss = step()
        loss.backward()
    _, peak = _rss()
    return peak - before


def measurement_points() -> list[dict]:
    """What `--measure` runs (one fresh process per point): as many points per fit as it has terms,
    the most important first, then one more point for some fits' residuals. The text encoders are
    measured in float32 only (the plan halves them for mixed precision and does not lower them for
    checkpointing: an upper bound; they are small beside the denoiser's)."""
    points = []

    def add(component, modes, precisions, sizes, **extra):
        for mode in modes:
            for precision, ckpt in precisions:
                for px, batch in sizes:
                    points.append(dict(component=component, mode=mode, precision=precision, checkpointing=ckpt,
                                       px=px, batch=batch, **extra))
    through = [("bf16", False), ("bf16", True), ("fp32", False)]
    train = [("bf16_params", False), ("bf16_params", True), ("fp32", False)]
    for depth in ([1, 1], [2, 1], [1, 2]):  # FLUX at reduced depth, the real width
        add("flux_schnell", ["through"], through, [(128, 1), (256, 1)], depth=depth)
    unet_sizes = [(64, 1), (128, 1), (128, 2)]
    add("sdxl", ["through"], through, unet_sizes)
    add("sdxl", ["train"], train, unet_sizes)
    infer_sizes = [(256, 1), (384, 1), (256, 2)]  # below 256 px the inference peak is within the noise
    add("sdxl", ["infer"], [("bf16", False)], infer_sizes)
    for te in ("clip_bigg", "clip_l"):
        add(te, ["through", "train"], [("fp32", False)], [(0, 1), (0, 2)])
    for channels in (4, 16):
        add("vae", ["infer"], [("bf16", False)], [(128, 1), (256, 1), (256, 2)], latent_channels=channels)
    for depth in ([1, 1], [2, 1], [1, 2]):
        add("flux_schnell", ["infer"], [("bf16", False)], [(256, 1), (512, 1)], depth=depth)
    add("sd14", ["through"], through, unet_sizes)
    add("sd14", ["train"], train, unet_sizes)
    add("sd14", ["infer"], [("bf16", False)], infer_sizes)
    add("sd14", ["train"], [("bf16", False)], [(128, 1)])  # autocast's weight copies, measured once
    # larger points where they matter most (the first two were first held out: the fits of the
    # smaller points over-predicted them by 11 % and 80 %)
    add("sdxl", ["through"], [("bf16", False)], [(256, 1)])
    add("sd14", ["train", "through"], [("fp32", False)], [(256, 1)])
    add("sdxl", ["train"], [("fp32", False)], [(256, 1)])
    for arch in ("sdxl", "sd14"):
        add(arch, ["through"], [("fp32", False), ("bf16", False), ("bf16", True)], [(256, 1)])
        add(arch, ["train"], [("bf16_params", False), ("bf16_params", True)], [(256, 1)])
    add("flux_schnell", ["through"], [("fp32", False), ("bf16", False), ("bf16", True)], [(512, 1)], depth=[1, 1])
    # one more point per fit: its residual
    for arch in ("sdxl", "sd14"):
        add(arch, ["train", "through"], [("fp32", False)], [(96, 1)])
    add("flux_schnell", ["through"], [("fp32", False), ("bf16", False)], [(384, 1)], depth=[1, 1])
    for arch in ("sdxl", "sd14"):
        add(arch, ["train"], train[:2], [(96, 1)])
        add(arch, ["through"], through[:2], [(96, 1)])
    return points


def _probe_main(spec: str) -> None:
    import torch

    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # the shared small weights make tiny activations: denormals are slow on a CPU
    points = json.loads(spec)
    for point in points:
        t0 = time.time()
        bytes_ = probe(point)
        print(json.dumps({**point, "bytes": bytes_, "seconds": round(time.time() - t0, 1)}), flush=True)


def run_probes(groups: list[list[dict]], log=print) -> list[dict]:
    """Each group of points (ascending sizes) in one fresh subprocess, its resident set watched: a
    process above RSS_CAP_BYTES is stopped and its remaining points are recorded as over the cap."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    results = []
    for group in groups:
        proc = subprocess.Popen([sys.executable, __file__, "--_probe", json.dumps(group)], env=env,
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
        over = False
        while proc.poll() is None:
            try:
                rss = int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{proc.pid}/status").read_text()).group(1))
            except (FileNotFoundError, AttributeError):
                break
            if rss * 1024 > RSS_CAP_BYTES:
                proc.kill()
                over = True
                break
            time.sleep(0.2)
        out, _ = proc.communicate()
        done = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        for point in group[len(done):]:
            done.append({**point, "bytes": None, "error": "over the RSS cap" if over else f"exit {proc.returncode}"})
        for row in done:
            log(json.dumps(row))
        results += done
    return results


POINT_KEYS = ("component", "mode", "precision", "checkpointing", "px", "batch", "depth", "latent_channels")


def _point_key(point: Mapping) -> str:
    return json.dumps({k: point.get(k) for k in POINT_KEYS}, sort_keys=True)


def measure(out: Path = MEASUREMENTS, log=print, workers: int = 2) -> dict:
    """Run every measurement point not yet in `out`'s log (a partial run resumes), one fresh process
    each; write `out` (atomically) after every point."""
    from editrobust.io import write_json

    data = json.loads(out.read_text()) if out.exists() else {}
    done = {_point_key(p) for p in data.get("points", []) if p.get("bytes") is not None}
    data.setdefault("points", [])
    data["method"] = ("peak RSS (VmHWM after a /proc/self/clear_refs reset) minus RSS before one forward+backward "
                      "at batch `batch` on the CPU, fresh process per point, shared-buffer weights, gradients "
                      "dropped as accumulated, MALLOC_MMAP_THRESHOLD_=131072; see benchmarks/memory_plan.py")
    import platform

    import torch

    data["machine"] = dict(cpu=platform.processor() or platform.machine(), torch=torch.__version__,
                           threads=os.environ.get("OMP_NUM_THREADS", "2"))
    import threading
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()

    def one(point):
        [row] = run_probes([[point]], log=log)
        with lock:
            data["points"] = [p for p in data["points"] if _point_key(p) != _point_key(row)] + [row]
            data["measured"] = time.strftime("%Y-%m-%d", time.gmtime())
            write_json(out, data)

    todo = [p for p in measurement_points() if _point_key(p) not in done]
    with ThreadPoolExecutor(workers) as pool:  # two processes of < 4 GB at a time
        list(pool.map(one, todo))
    return data



# ================================================================================ fitting
def tokens(component: str, px: int) -> int:
    """The token count the activations are fitted against: latent positions (UNet, VAE: pixels
    / 64), FLUX's image tokens plus its text tokens."""
    if component == "flux_schnell":
        return (px // 16) ** 2 + FLUX_TEXT_TOKENS
    return (px // 8) ** 2


def _features(component: str, point: Mapping, checkpointing: bool = False) -> list[float]:
    """The fit's terms. Activations grow with batch x tokens; what does not grow with the batch
    (caches, the process's noise) is a constant; per-row constants were within the noise and are
    left out."""
    b, n = point["batch"], tokens(component, point.get("px", 0))
    if component == "flux_schnell":
        d, s_ = point["depth"]
        if checkpointing:  # each block keeps its input (~ tokens), one block's activations at a time
            return [b, b * n, b * (d + s_) * n]
        return [b, b * n, b * d * n, b * s_ * n]  # base, each double and each single block ~ tokens
    if component.startswith("clip"):  # 77 tokens: a constant and a per-row part
        return [1.0, b]
    # UNet, VAE: a constant, a part that grows with the tokens but not with the batch (per-call
    # workspaces: on the CPU the convolutions' im2col buffers; a batch of 2 added far less than a
    # second row's share), and the per-row activations
    return [1.0, n, b * n]


@dataclass
class Fit:
    """Least-squares fit of measured activation bytes; `predict(px, batch)`."""

    component: str
    checkpointing: bool
    coef: list[float]
    points: int
    max_rel_residual: float | None  # None: as many points as terms (an exact fit)

    def predict(self, px: int, batch: int) -> float:
        point = {"px": px, "batch": batch}
        if self.component == "flux_schnell":
            point["depth"] = FLUX_DEPTH
        return max(0.0, sum(c * f for c, f in zip(self.coef, _features(self.component, point, self.checkpointing))))


def _nonnegative_least_squares(x, y):
    """argmin |x c - y| over c >= 0 (every term is memory: none may be negative), by trying every
    subset of the (at most four) terms."""
    import itertools

    import numpy as np

    best, best_err = np.zeros(x.shape[1]), float(np.sum(y ** 2))
    for k in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), k):
            c, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if (c >= 0).all():
                err = float(np.sum((x[:, cols] @ c - y) ** 2))
                if err < best_err:
                    best, best_err = np.zeros(x.shape[1]), err
                    best[list(cols)] = c
    return best


def fit(points: list[Mapping]) -> Fit:
    import numpy as np

    component, ckpt = points[0]["component"], bool(points[0].get("checkpointing"))
    x = np.array([_features(component, p, ckpt) for p in points], dtype=float)
    y = np.array([p["bytes"] for p in points], dtype=float)
    if len(points) < x.shape[1]:
        raise ValueError(f"{component}: {len(points)} measured point(s) for a fit of {x.shape[1]} terms; "
                         "run `benchmarks/memory_plan.py --measure`")
    fixed = np.zeros(x.shape[1], dtype=bool)
    known = np.zeros(x.shape[1])
    if component == "flux_schnell" and ckpt:
        fixed[-1], known[-1] = True, FLUX_CKPT_BYTES_PER_BLOCK_TOKEN
    free = _nonnegative_least_squares(x[:, ~fixed], y - x @ known)
    coef = known.copy()
    coef[~fixed] = free
    residual = None
    if len(points) > int((~fixed).sum()):
        residual = float(np.max(np.abs(x @ coef - y) / y))
    return Fit(component, ckpt, [float(c) for c in coef], len(points), residual)


class Activations:
    """The measurements of activation_measurements.json, fitted per (component, mode, precision,
    checkpointing)."""

    def __init__(self, data: Mapping):
        self.data = data
        self.groups: dict[tuple, list[dict]] = {}
        for p in data.get("points", []):
            if p.get("bytes") is not None:
                key = (p["component"], p["mode"], p["precision"], bool(p.get("checkpointing")),
                       p.get("latent_channels", 4))
                self.groups.setdefault(key, []).append(p)
        self.fits: dict[tuple, Fit] = {}

    @classmethod
    def load(cls, path: Path = MEASUREMENTS) -> "Activations":
        if not path.exists():
            raise FileNotFoundError(f"{path}: no activation measurements; run `python benchmarks/memory_plan.py --measure`")
        return cls(json.loads(path.read_text()))

    def get(self, component: str, mode: str, precision: str, checkpointing: bool, latent_channels: int = 4) -> Fit | None:
        key = (component, mode, precision, checkpointing, latent_channels)
        if key not in self.fits:
            points = self.groups.get(key) or []
            enough = points and len(points) >= len(_features(component, points[0], checkpointing))
            self.fits[key] = fit(points) if enough else None  # None: not (yet) measured
        return self.fits[key]

    def bytes(self, component: str, mode: str, precision: str, checkpointing: bool, px: int, batch: int,
              latent_channels: int = 4) -> float | None:
        f = self.get(component, mode, precision, checkpointing, latent_channels)
        return None if f is None else f.predict(px, batch)


# ============================================================================== the plan
SETTINGS = ("fp32", "mixed", "mixed+ckpt")  # the plan's three columns


@dataclass
class Memory:
    """Bytes of one job at its peak, by kind."""

    weights: float
    grads: float = 0.0
    optimizer: float = 0.0
    ema: float = 0.0
    activations: float | None = 0.0  # None: not measured
    step_temporaries: float = 0.0  # AdamW foreach's temporary, after the activations are freed

    @property
    def total(self) -> float:
        return (self.weights + self.grads + self.optimizer + self.ema
                + max(self.activations or 0.0, self.step_temporaries))

    def fits(self, card_gb: int) -> bool:
        return self.total / GIB + RESERVE_GIB <= card_gb


@dataclass
class Row:
    model: str
    job: str  # "sample", "edit <method> (<editors>)", "fine-tune <name>"
    trainable: int
    total_params: int
    by_setting: dict[str, Memory]
    configured: str  # one of SETTINGS (or the sampling dtype)
    configured_memory: Memory
    notes: list[str] = field(default_factory=list)
    change: str = ""


def optimizer_state_bytes(optimizer: str, trainable: int) -> int:
    """AdamW: exp_avg and exp_avg_sq; Prodigy 1.1.2: exp_avg, exp_avg_sq, s and p0 (all float32)."""
    per_parameter = {"adamw": 2, "prodigy": 4}
    if optimizer not in per_parameter:
        raise ValueError(f"optimizer {optimizer!r}: the plan knows {', '.join(per_parameter)}")
    return per_parameter[optimizer] * 4 * trainable


def autocast_copy_bytes(named_trainable, modules) -> int:
    """Autocast's bf16/fp16 copies of float32 trained weights, held for the backward pass: 2 bytes
    per trained parameter of a Linear or Conv layer (measured on SD1.4: see the README)."""
    import torch

    owners = {}
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)):
                for p in sub.parameters(recurse=False):
                    owners[id(p)] = True
    return 2 * sum(p.numel() for _, p in named_trainable if id(p) in owners)


def finetune_memory(pipe, arch: str, entry: Mapping, acts: Activations, px: int) -> tuple[int, int, dict, list[str]]:
    """(trainable, total parameters, {setting: Memory}, notes) of fine-tuner `entry` on `pipe` (a
    meta pipeline: `setup` runs on it)."""
    import torch

    from editrobust.finetune import make_finetuner
    from editrobust.finetune.objectives import denoiser_name, text_encoder_names

    method = make_finetuner(entry)
    named = method.setup(pipe)
    trainable = sum(p.numel() for _, p in named)
    modules = {n: m for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    total = sum(p.numel() for m in modules.values() for p in m.parameters())
    trained = {name.split(".", 1)[0] for name, _ in named}
    settings = method.settings
    micro_batch = settings["batch"] * (2 if settings.get("with_prior_preservation") else 1)
    den = denoiser_name(pipe)
    notes = []
    if den in trained and arch == "flux_schnell":
        notes.append("FLUX transformer training activations not measured (lower bound)")

    def module_mode(comp):  # how the backward meets this module
        whole = all(p.requires_grad for p in modules[comp].parameters())
        return "train" if whole else "through"

    out = {}
    for setting in SETTINGS:
        mixed, ckpt = setting != "fp32", setting == "mixed+ckpt"
        frozen = total - trainable
        weights = trainable * 4 + frozen * (2 if mixed else 4)
        act = 0.0
        # the denoiser: trained, or a gradient flows through it to a trained text encoder
        mode = "train" if den in trained else "through"
        component = arch
        precision = "fp32" if not mixed else ("bf16_params" if mode == "train" else "bf16")
        a = acts.bytes(component, mode, precision, ckpt, px, micro_batch)
        if a is None and not (mode == "train" and arch == "flux_schnell"):
            notes.append(f"no measurement for {component}/{mode}/{precision}/ckpt={ckpt}")
        act = None if a is None else a
        # text encoders that train (whole or an adapter); frozen ones hold no graph
        for comp in text_encoder_names(pipe):
            if comp in trained and act is not None:
                # measured in float32 only: halved under autocast, not lowered by checkpointing
                te = acts.bytes(TEXT_ENCODER_ARCH[comp], module_mode(comp), "fp32", False, 0, micro_batch)
                act = None if te is None else act + te * (0.5 if mixed else 1.0)
        if mixed and act is not None:
            act += autocast_copy_bytes(named, [modules[c] for c in trained])
        out[setting] = Memory(
            weights=weights, grads=4 * trainable, optimizer=optimizer_state_bytes(settings["optimizer"], trainable),
            ema=4 * trainable if settings.get("use_ema") else 0, activations=act,
            step_temporaries=4 * trainable if settings["optimizer"] == "adamw" else 0)
    return trainable, total, out, notes


def configured_setting(settings: Mapping) -> str:
    """The plan's column of a fine-tuner's settings (defaults filled: `Finetuner.settings`)."""
    if settings["mixed_precision"] == "no":
        return "fp32" if not settings["gradient_checkpointing"] else "fp32+ckpt"
    return "mixed+ckpt" if settings["gradient_checkpointing"] else "mixed"


def sampling_memory(pipe, arch: str, entry: Mapping, acts: Activations, dtype_bytes: int) -> tuple[Memory, list[str]]:
    """Sampling: the pipeline's weights in its dtype, and the larger of one denoiser call and the VAE
    decode of a batch (measured in bf16; float32 is planned as twice that)."""
    import torch

    from editrobust.sampling import SamplingSettings
    from editrobust.sampling.generate import native_resolution

    settings = SamplingSettings.from_dict(entry.get("sampling"))
    px = max(settings.height or native_resolution(pipe), settings.width or native_resolution(pipe))
    total = sum(p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())
    cfg = 2 if settings.guidance > 1 and arch != "flux_schnell" else 1
    scale = dtype_bytes / 2
    rows = settings.batch_size
    denoise = acts.bytes(arch, "infer", "bf16", False, px, rows * cfg)
    decode = acts.bytes("vae", "infer", "bf16", False, px, 1 if settings.vae_slicing else rows,
                        latent_channels=pipe.vae.config.latent_channels)
    notes = [f"{px} px, {rows} images per batch" + (" (x2 rows: classifier-free guidance)" if cfg == 2 else "")]
    act = None if denoise is None or decode is None else max(denoise, decode) * scale
    return Memory(weights=total * dtype_bytes, activations=act), notes


def edit_memory(pipe, arch: str, method: str, entry: Mapping, model_entry: Mapping, config: Mapping,
                acts: Activations) -> tuple[Memory, list[str]]:
    """An edit: the pipeline in float32 (`editors.edit_model`) and what the method computes."""
    import torch

    from editrobust.finetune.objectives import text_encoder_names

    total = sum(p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())
    if method == "uce_debias":  # samples images in float32 with a CLIP classifier in the loop
        mem, notes = sampling_memory(pipe, arch, {"sampling": {**(model_entry.get("sampling") or {}),
                                                               "batch_size": min(entry.get("images_per_iteration", 10),
                                                                                 (model_entry.get("sampling") or {})
                                                                                 .get("batch_size", 32))}},
                                     acts, 4)
        classifier = clip_classifier_parameters(config, entry)
        mem.weights += classifier * 4
        return mem, [f"samples in float32: {notes[0]}; classifier {classifier / 1e6:.0f} M parameters"]
    if method == "refact":  # backward through the text encoder(s) to one layer, 10 prompts
        act = 0.0
        for comp in text_encoder_names(pipe):
            te = acts.bytes(TEXT_ENCODER_ARCH[comp], "through", "fp32", False, 0, 10)
            act = None if te is None or act is None else act + te
        return Memory(weights=total * 4, activations=act), ["text-encoder backward, 10 prompts (upper bound)"]
    # UCE erase and other closed-form edits: a text-encoder forward and per-layer matrices
    return Memory(weights=total * 4, activations=0.0), ["closed form: text-encoder forward only (< 0.1 GiB)"]


def clip_classifier_parameters(config: Mapping, entry: Mapping) -> int:
    """Parameters of the debias edit's CLIP classifier (open_clip, built without weights)."""
    name = entry.get("clip_model")
    spec = (config.get("clip_models") or {}).get(name) or {}
    if entry.get("classifier") != "clip" or "arch" not in spec:
        return 0
    import open_clip

    model = open_clip.create_model(spec["arch"], pretrained=None, device="meta")
    return sum(p.numel() for p in model.parameters())


def planned_jobs(config: Mapping) -> dict[str, dict[str, list[str]]]:
    """{model: {"sample": [...], "edit": [editors], "finetune": [fine-tuners]}} of the jobs the
    config's targets need (the same walk as the pre-flight)."""
    from editrobust import paths
    from editrobust import variant_names as vn
    from editrobust.preflight import plan_targets

    plan = plan_targets(config)
    jobs: dict[str, dict[str, list[str]]] = {}
    for f in plan.matching(paths.SAMPLES_INDEX):
        jobs.setdefault(f["model"], {"sample": [], "edit": [], "finetune": []})["sample"].append(f["variant"])
    for f in plan.matching(paths.VARIANT_JSON):
        variant = vn.parse(f["variant"])
        if not variant.steps or variant.checkpoint is not None:
            continue
        last = variant.steps[-1]
        kind = "edit" if last.kind == vn.EDIT else "finetune"
        names = jobs.setdefault(f["model"], {"sample": [], "edit": [], "finetune": []})[kind]
        if last.name not in names:
            names.append(last.name)
    return jobs


def what_to_change(row: Row) -> str:
    """The first change (in the order a user would try them) that makes the row fit 80 GB, or why none does."""
    if row.configured_memory.activations is None:
        return "activations not measured: run `benchmarks/memory_plan.py --measure`"
    if row.configured_memory.fits(80):
        return ""
    if not row.job.startswith("fine-tune"):
        return "sampling/edit over 80 GB: lower sampling.batch_size or enable vae_slicing"
    for setting in ("mixed", "mixed+ckpt"):
        m = row.by_setting[setting]
        current = "fp32" if row.configured.startswith("fp32") else ("mixed+ckpt" if "ckpt" in row.configured else "mixed")
        if m.fits(80) and SETTINGS.index(setting) > SETTINGS.index(current):
            keys = "mixed_precision: bf16" + (", gradient_checkpointing: true" if "ckpt" in setting else "")
            return f"set {keys}"
    m = row.by_setting["mixed+ckpt"]
    static = m.weights + m.grads + m.optimizer + m.ema
    if static / GIB + RESERVE_GIB > 80:
        return ("weights, gradients and optimizer state alone exceed 80 GB: train fewer parameters (an adapter), "
                "drop use_ema, or shard over several GPUs")
    return "with mixed+ckpt: lower batch (micro-batch) and raise gradient_accumulation_steps"


def plan(config: Mapping, acts: Activations) -> list[Row]:
    from editrobust.finetune import make_finetuner
    from editrobust.models import FAMILY_ARCHITECTURE
    from editrobust.models.full_size import meta_pipeline
    from editrobust.preflight import DTYPE_BYTES

    rows = []
    for model, jobs in planned_jobs(config).items():
        entry = config["models"][model]
        if entry.get("family") not in FAMILY_ARCHITECTURE or entry.get("size") == "tiny":
            continue  # a released architecture only (hub, path, random): the toy runs on the CPU
        arch = FAMILY_ARCHITECTURE[entry["family"]]
        base = meta_pipeline(arch)
        total = sum(p.numel() for m in base.components.values() if hasattr(m, "parameters") for p in m.parameters())
        dtype = entry.get("dtype") or "float32"
        if jobs["sample"]:
            mem, notes = sampling_memory(base, arch, entry, acts, DTYPE_BYTES[dtype])
            fp32, _ = sampling_memory(base, arch, entry, acts, 4)
            half, _ = sampling_memory(base, arch, entry, acts, 2)
            rows.append(Row(model, "sample", 0, total, {"fp32": fp32, "mixed": half, "mixed+ckpt": half},
                            dtype, mem, notes))
        by_method: dict[str, list[str]] = {}
        for name in jobs["edit"]:
            by_method.setdefault(config["editors"][name]["method"], []).append(name)
        for method, names in by_method.items():
            mem, notes = edit_memory(base, arch, method, config["editors"][names[0]], entry, config, acts)
            label = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)})"
            rows.append(Row(model, f"edit {method}: {label}", 0, total, {s: mem for s in SETTINGS}, "float32", mem,
                            notes))
        for name in jobs["finetune"]:
            ft = config["finetuners"][name]
            px = int((config.get("datasets", {}).get(ft["dataset"]) or {}).get("resolution") or 0) or \
                _native_px(arch)
            trainable, n_total, by_setting, notes = finetune_memory(meta_pipeline(arch), arch, ft, acts, px)
            settings = make_finetuner(ft).settings
            setting = configured_setting(settings)
            configured = by_setting.get(setting) or by_setting["fp32"]  # fp32+ckpt is planned as fp32
            notes = [f"{px} px, micro-batch {settings['batch']} x {settings['gradient_accumulation_steps']} "
                     f"accumulation, {settings['optimizer']}"
                     + (", EMA" if settings.get("use_ema") else "")] + notes
            label = setting.replace("mixed", settings["mixed_precision"])  # e.g. "bf16+ckpt"
            rows.append(Row(model, f"fine-tune {name}", trainable, n_total, by_setting, label, configured, notes))
    for row in rows:
        row.change = what_to_change(row)
    return rows


PROPOSAL_MARGIN = 0.10  # the proposal wants 10 % headroom on the total: activations are a CPU estimate


def propose(rows: list[Row]) -> dict[str, str]:
    """Per fine-tuner, the first of fp32, mixed, mixed+ckpt under which every model's job fits 80 GB
    with PROPOSAL_MARGIN to spare (fine-tuners are global: one setting for all the models that run
    it); "none" if none does."""
    by_finetuner: dict[str, list[Row]] = {}
    for row in rows:
        if row.job.startswith("fine-tune "):
            by_finetuner.setdefault(row.job.split(" ", 1)[1], []).append(row)
    out = {}
    for name, mine in by_finetuner.items():
        def fits(m: Memory) -> bool:
            return m.activations is not None and m.total * (1 + PROPOSAL_MARGIN) / GIB + RESERVE_GIB <= 80
        unmeasured = {s for s in SETTINGS if any(r.by_setting[s].activations is None for r in mine)}
        out[name] = next((s for s in SETTINGS if all(fits(r.by_setting[s]) for r in mine)),
                         "unmeasured" if unmeasured else "none")
    return out


def proposal_yaml(proposal: Mapping[str, str]) -> str:
    keys = {"fp32": "mixed_precision: \"no\", gradient_checkpointing: false",
            "mixed": "mixed_precision: bf16, gradient_checkpointing: false",
            "mixed+ckpt": "mixed_precision: bf16, gradient_checkpointing: true", "none": "(no setting fits 80 GB)",
            "unmeasured": "(activations not measured: run --measure)"}
    return "\n".join(f"  {name}: {{..., {keys[setting]}}}" for name, setting in proposal.items())


def _native_px(arch: str) -> int:
    from editrobust.models.full_size import SPECS

    return SPECS[arch].resolution


# ============================================================================== rendering
def _gib(x: float | None) -> str:
    return "n/m" if x is None else f"{x / GIB:.1f}"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def render(rows: list[Row], acts: Activations, markdown: bool = False, compact: bool = False) -> str:
    """The table (compact: the configured setting only, one line per job), its notes and the fits."""
    head = ["model", "job", "trainable / total params", "setting", "weights", "grads", "optimizer", "EMA",
            "activations", "total", "fits 24/40/80 GB", "what to change"]
    lines = []
    for row in rows:
        settings = [("configured: " + row.configured, row.configured_memory)]
        if not compact:
            settings += [(s, row.by_setting[s]) for s in SETTINGS if row.job.startswith("fine-tune")]
        for i, (label, m) in enumerate(settings):
            configured = i == 0
            fits = "/".join("yes" if m.fits(c) else "no" for c in CARDS_GB) if configured else ""
            lines.append([row.model if i == 0 else "", row.job if i == 0 else "",
                          (f"{_params(row.trainable) if row.job.startswith('fine-tune') else '-'} / "
                           f"{_params(row.total_params)}") if i == 0 else "", label,
                          _gib(m.weights), _gib(m.grads), _gib(m.optimizer), _gib(m.ema), _gib(m.activations),
                          _gib(m.total), fits, row.change if configured else ""])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
    else:
        widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
        out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in lines]
    out += ["", "GiB (2^30 bytes); n/m: not measured. Notes:"]
    out += [f"- {row.model} {row.job}: {'; '.join(row.notes)}" for row in rows if row.notes]
    out += ["", "Activation fits (bytes at batch 1 vs tokens; largest relative residual on the measured points):"]
    for key in sorted(acts.groups):
        f = acts.get(*key)
        if f is None:
            continue
        res = "exact (as many points as terms)" if f.max_rel_residual is None else f"{100 * f.max_rel_residual:.1f} %"
        lines_key = "/".join(str(k) for k in key[:4]) + ("" if key[4] == 4 else f"/{key[4]}ch")
        out.append(f"- {lines_key}: {f.points} points, residual {res}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from editrobust.config import load_yaml, validate_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default=str(REPO / "config" / "paper.yaml"))
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (config/README.md)")
    parser.add_argument("--compact", action="store_true", help="the configured setting only, one line per job")
    parser.add_argument("--measure", action="store_true",
                        help="first measure the points not yet in --measurements (delete it to re-measure all; long)")
    parser.add_argument("--measurements", default=str(MEASUREMENTS))
    parser.add_argument("--propose", action="store_true",
                        help="also print, per fine-tuner, the first setting under which it fits 80 GB")
    args = parser.parse_args(argv)
    if args.measure:
        measure(Path(args.measurements))
    config = validate_config(load_yaml(args.configfile))
    acts = Activations.load(Path(args.measurements))
    rows = plan(config, acts)
    print(render(rows, acts, markdown=args.markdown, compact=args.compact))
    if args.propose:
        print("\nProposed (the first of fp32 / mixed / mixed+ckpt that fits 80 GB for every model):")
        print(proposal_yaml(propose(rows)))
    return 0 if all(r.configured_memory.fits(80) for r in rows) else 1

if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--_probe":
    _probe_main(sys.argv[2])
elif __name__ == "__main__":
    sys.exit(main())
