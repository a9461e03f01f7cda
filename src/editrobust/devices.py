"""Where torch runs and in what precision: the one home for device and dtype names.

A config says `device: auto | cpu | cuda | mps` (auto picks cuda, then mps, then cpu) and names
dtypes as strings (`float32`, `float16`, `bfloat16`); every job turns them into torch objects here.
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str, key: str = "dtype") -> torch.dtype:
    """The torch dtype of a config name; `key` names the config key in the error."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"{key}: unknown dtype {name!r} (choose from {', '.join(DTYPES)})") from None


def pick_device(requested: str = "auto") -> torch.device:
    """cuda, then mps, then cpu — unless the config forces one."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
