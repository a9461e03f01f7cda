"""Model variants on disk: a directory with `variant.json` and (for derived variants) only a delta.

`variant.json` records the variant's parent, kind, method and full parameters, library versions
and the sha256 of every file it owns. A base variant either holds a diffusers pipeline (the toy
model) or points to one (a local directory given with `path:`). Loading walks the parent chain:
base weights first, then each delta.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path

import torch

from editrobust.devices import torch_dtype

VARIANT_FILE = "variant.json"


def library_versions() -> dict[str, str]:
    names = ["editrobust", "torch", "diffusers", "transformers", "peft", "safetensors", "numpy"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_checksums(root: Path) -> dict[str, str]:
    root = Path(root)
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != VARIANT_FILE and not p.name.startswith(".")}


def read_variant(variant_dir: str | Path) -> dict:
    path = Path(variant_dir) / VARIANT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"not a model variant (no {VARIANT_FILE}): {variant_dir}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable {VARIANT_FILE}: {e}") from None


def check_local_pipeline_dir(path: str | Path) -> Path:
    """A user-supplied diffusers directory: must exist, have model_index.json and safetensors weights."""
    path = Path(path).expanduser().resolve()
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"models.path: {path} is not a diffusers pipeline directory "
                                "(no model_index.json)")
    for component in sorted(p for p in path.iterdir() if p.is_dir()):
        pickled = [p for ext in ("*.bin", "*.ckpt", "*.pt", "*.pth") for p in component.glob(ext)]
        if pickled and not list(component.glob("*.safetensors")):
            raise ValueError(f"{path}: {component.name}: weights are not in safetensors format ({pickled[0].name}); "
                             "convert them first: only safetensors are loaded, since pickled checkpoints can run code")
    return path


def pipeline_dir(variant_dir: str | Path) -> Path:
    """Where the base pipeline's files are for a base variant."""
    variant_dir = Path(variant_dir)
    info = read_variant(variant_dir)
    if info["kind"] != "base":
        raise ValueError(f"{variant_dir} is a {info['kind']} variant, not a base model")
    src = info.get("source", {})
    return Path(src["path"]) if src.get("type") in ("path", "hub") else variant_dir


def write_delta_variant(out_dir: str | Path, delta: dict, info: dict) -> dict:
    """Write a derived variant atomically: one `<component>.safetensors` per changed component
    (only the changed tensors) and `variant.json` (given `info` plus versions and checksums)."""
    from safetensors.torch import save_file

    from editrobust.io import atomic_dir, write_json

    with atomic_dir(out_dir) as tmp:
        for component, tensors in delta.items():
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / f"{component}.safetensors"))
        info = dict(info, components=sorted(delta), versions=library_versions(), checksums=file_checksums(tmp))
        write_json(tmp / VARIANT_FILE, info)
    return info


def read_delta(variant_dir: str | Path) -> dict:
    from safetensors.torch import load_file

    variant_dir = Path(variant_dir)
    info = read_variant(variant_dir)
    out = {}
    for c in info["components"]:
        path = variant_dir / f"{c}.safetensors"
        try:
            out[c] = load_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{variant_dir}: delta file {path.name} listed in {VARIANT_FILE} is missing") from None
        except Exception as e:  # safetensors raises its own error type for a damaged file
            raise ValueError(f"{path}: not a readable safetensors file: {e}") from None
    return out


def variant_chain(variant_dir: str | Path) -> list[Path]:
    """The directories from the base to this variant (parents are siblings: `<model>/<parent>`)."""
    chain = [Path(variant_dir)]
    while (parent := read_variant(chain[-1]).get("parent")) is not None:
        chain.append(chain[-1].parent / parent)
    return chain[::-1]


def load_pipeline(variant_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    """Load a variant as a ready-to-sample pipeline: the base pipeline (safetensors only, no remote
    code), then each delta along the chain base -> ... -> variant."""
    from editrobust.models.components import apply_delta

    chain = variant_chain(variant_dir)
    pipe = _load_base(chain[0], dtype)
    for derived in chain[1:]:
        info = read_variant(derived)
        if info.get("components"):
            apply_delta(pipe, read_delta(derived))
        if info.get("adapter"):
            fuse_lora_adapter(pipe, derived, info["adapter"])
    return pipe.to(device)


def fuse_lora_adapter(pipe, variant_dir: str | Path, adapter: dict):
    """Load a variant's diffusers-format LoRA/DoRA adapter and FUSE it into the weights.

    `pipe.load_lora_weights`, then `fuse_lora` + `unload_lora_weights`: the pipeline is a plain
    one again (no peft layers), so sampling is as fast as the base and the next delta in a chain
    composes with ordinary tensors. Fused outputs equal unfused ones only up to float rounding
    (W + s·BA is rounded once; peft#1904): tested within a tolerance, not bit for bit.

    Workaround: with transformers 5 and peft 0.21, `load_lora_weights` silently leaves DoRA
    magnitudes (`lora_magnitude_vector`) at their initial ||W|| (the key renaming misses the
    parameter's `.weight` suffix), so they are copied from the file here before fusing.
    """
    from safetensors.torch import load_file

    name = "editrobust_finetune"
    path = Path(variant_dir) / adapter["file"]
    pipe.load_lora_weights(str(Path(variant_dir)), weight_name=adapter["file"], adapter_name=name)
    with torch.no_grad():
        for key, value in load_file(str(path)).items():
            if not key.endswith(".lora_magnitude_vector"):
                continue
            component, module_path = key.removesuffix(".lora_magnitude_vector").split(".", 1)
            layer = getattr(pipe, component).get_submodule(module_path)
            magnitude = layer.lora_magnitude_vector[name].weight
            magnitude.copy_(value.to(magnitude.dtype))
    pipe.fuse_lora(components=list(adapter["components"]), lora_scale=1.0, safe_fusing=True, adapter_names=[name])
    pipe.unload_lora_weights()
    return pipe


def base_dtype(info: dict) -> torch.dtype | None:
    """The dtype a hub or random model is sampled in (`models.<name>.dtype`); None = the files' own."""
    name = (info.get("params") or {}).get("dtype")
    return torch_dtype(name) if name else None


def _dtype_kwarg() -> str:
    """from_pretrained's name for the dtype: diffusers renamed `torch_dtype` to `dtype` in 2026
    (huggingface/diffusers#14205); older releases reject `dtype`, newer ones warn on `torch_dtype`."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


def _load_base(variant_dir: Path, dtype: torch.dtype | None):
    import transformers
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    # Loading bars per component would drown the job logs.
    diffusers_logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    kwargs = dict(use_safetensors=True, local_files_only=True)
    source = read_variant(variant_dir).get("source", {})
    if dtype is None and source.get("type") in ("hub", "random"):
        dtype = base_dtype(read_variant(variant_dir))
    if dtype is not None:
        kwargs[_dtype_kwarg()] = dtype
    if source.get("variant"):
        kwargs["variant"] = source["variant"]
    if source.get("vae"):
        # e.g. SDXL with madebyollin/sdxl-vae-fp16-fix: the VAE SDXL's own decodes to NaN in fp16
        from diffusers import AutoencoderKL

        kwargs["vae"] = AutoencoderKL.from_pretrained(source["vae"]["path"], use_safetensors=True,
                                                      local_files_only=True, **{_dtype_kwarg(): dtype})
    pipe = DiffusionPipeline.from_pretrained(pipeline_dir(variant_dir), **kwargs)
    if hasattr(pipe, "safety_checker"):
        # Never the pipeline's own blackout: a promptset that asks for the NSFW filter gets it from the
        # sampling stage, which runs the same checker once and records what it blacked out
        # (sampling/safety_filter.py); scorers judge safety themselves.
        pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    return pipe
