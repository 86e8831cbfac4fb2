"""Where and how a model runs in this process: the device, the dtype, and handing memory back after a
model is dropped. Shared by the generator (agents/hf_generator.py), the trainers (training/trainer.py)
and the GGUF conversion (agents/model_source.py).
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any


def free_torch_memory() -> None:
    """Collect garbage and return cached GPU memory after a model is dropped; on Linux also hand the
    freed heap back to the system (glibc keeps it otherwise, so a dropped CPU model stays resident)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass


def resolve_device(device: str = "auto") -> str:
    """"auto" -> this process's GPU (LOCAL_RANK under accelerate/torchrun) or "cpu"."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def resolve_dtype(torch_dtype: str, device: Any = "cpu"):
    """Our "auto": bfloat16 on a GPU that supports it, float32 otherwise (CPU bf16 is slow)."""
    import torch

    if torch_dtype == "auto":
        on_cuda = str(device).startswith("cuda")
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, torch_dtype)
