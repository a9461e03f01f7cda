"""A pipeline's components and model family, and deltas over them: the format every editor
returns and every derived variant stores (models/variants.py composes them).

A **delta** is what an editor returns and what a variant directory stores: only the changed
tensors, `{component: {parameter name as in component.state_dict(): new tensor}}`, e.g.
`{"unet": {"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": W}}`.
Tensors are contiguous, on the CPU, in the dtype of the parameter they replace, so a delta can be
written with `safetensors.torch.save_file(delta["unet"], ...)` and loaded on any device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

Delta = dict[str, dict[str, torch.Tensor]]

COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")


def model_family(pipe) -> str:
    """'flux' (has a transformer), 'sdxl' (UNet and two text encoders) or 'sd' (SD1.x/SD2.x)."""
    if getattr(pipe, "transformer", None) is not None:
        return "flux"
    if getattr(pipe, "unet", None) is None:
        raise ValueError(f"{type(pipe).__name__} has neither a unet nor a transformer: not a supported pipeline")
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"


def execution_device(pipe) -> torch.device:
    # `_execution_device` follows accelerate's offloading hooks; plain `.device` otherwise.
    return getattr(pipe, "_execution_device", None) or pipe.device


def component(pipe, name: str) -> torch.nn.Module:
    module = getattr(pipe, name, None)
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"{type(pipe).__name__} has no component {name!r}")
    return module


def new_tensor(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A delta entry: `value` in the dtype of the parameter it replaces, contiguous, on the CPU."""
    return value.detach().to(device="cpu", dtype=like.dtype).contiguous()


def check_delta(pipe, delta: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Raise `ValueError` unless every key of `delta` names an existing parameter of the same shape."""
    for comp_name, tensors in delta.items():
        state = component(pipe, comp_name).state_dict()
        for key, value in tensors.items():
            if key not in state:
                raise ValueError(f"delta key {comp_name}.{key} is not a parameter of the pipeline's {comp_name}")
            if tuple(state[key].shape) != tuple(value.shape):
                raise ValueError(f"delta {comp_name}.{key} has shape {tuple(value.shape)}, "
                                 f"the pipeline's has {tuple(state[key].shape)}")


def apply_delta(pipe, delta: Mapping[str, Mapping[str, torch.Tensor]]):
    """Load a delta into `pipe` in place (strict: every key must exist with the same shape); returns `pipe`."""
    check_delta(pipe, delta)  # all checks first, so a bad delta leaves the pipeline untouched
    for comp_name, tensors in delta.items():
        params = component(pipe, comp_name).state_dict()
        with torch.no_grad():
            for key, value in tensors.items():
                params[key].copy_(value)  # copy_ casts dtype and moves device as needed
    return pipe


def snapshot(pipe, keys: Mapping[str, Sequence[str]]) -> Delta:
    """The current values of the named tensors, as a delta (so it can restore them later)."""
    out: Delta = {}
    for comp_name, names in keys.items():
        state = component(pipe, comp_name).state_dict()
        out[comp_name] = {k: state[k].detach().clone().cpu() for k in names}
    return out


@contextmanager
def delta_applied(pipe, delta: Mapping[str, Mapping[str, torch.Tensor]]) -> Iterator:
    """Temporarily load `delta` into `pipe`; the original tensors come back on exit, even on error."""
    original = snapshot(pipe, {c: list(t) for c, t in delta.items()})
    apply_delta(pipe, delta)
    try:
        yield pipe
    finally:
        apply_delta(pipe, original)
