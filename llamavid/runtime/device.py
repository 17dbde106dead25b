"""Choosing where and in what precision to run, the same way for every entry point."""
from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def pick_device(requested: str | torch.device | None = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; an explicit request that cannot be met is an error."""
    if requested not in (None, "auto"):
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is available (try --device cpu)")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("--device mps was asked for but Apple MPS is not available (try --device cpu)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(requested: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """fp16 on GPUs as the reference ran; fp32 on CPUs, where half precision is slower, not faster."""
    if isinstance(requested, torch.dtype):
        return requested
    if requested not in (None, "auto"):
        try:
            return DTYPES[str(requested).lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {requested!r}: use one of fp32, fp16, bf16") from None
    return torch.float32 if device.type == "cpu" else torch.float16
