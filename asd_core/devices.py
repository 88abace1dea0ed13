"""Device and dtype words (`auto`, `cuda`, `bfloat16`, ...) resolved one way for the CLIs and the nodes.

`auto` picks what real users run: bfloat16 on a CUDA GPU that supports it (float16 on older
ones), float32 on the CPU, where bf16 matmuls are slow. The model casts its inputs at its
boundary, so any of these dtypes takes float32 conditioning and latents.
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` = cuda if available; anything else must be a torch device this machine has."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: CUDA is not available in this torch build / machine; use cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """A dtype word for weights on `device`; `auto` follows the module docstring's rule."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]
