"""Which arithmetic a forward pass uses, from a config's precision name and the device it runs on.

Training's "auto" means bf16 autocast on a GPU and fp32 on a CPU. Scoring's "auto" (RDED) is chosen for speed
at fp32's selection: TF32 on a GPU (fp32 weights and activations, tensor-core products; no second pass) and,
on a CPU, bf16 only where the cores compute it natively (AVX-512-BF16 or AMX). Elsewhere bf16 is emulated and
runs many times slower than fp32, so there "auto" stays fp32.
"""

from __future__ import annotations

import functools
import os

import torch

__all__ = ["PRECISIONS", "TRAIN_PRECISIONS", "autocast", "autocast_dtype", "check_train_precision",
           "native_cpu_bf16", "resolve_scoring_precision", "set_fp32_math"]

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
# Training leaves fp16 out: its small range would need loss scaling, and bf16 does the same job without it.
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")
REDUCED = ("bf16", "fp16")


def check_train_precision(precision: str) -> None:
    """Refuse a precision that training cannot use, saying which it can (a config's ``__post_init__`` check)."""
    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAIN_PRECISIONS} (fp16 would need loss scaling)")


@functools.cache
def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-BF16 or AMX-BF16) and torch may use it.

    A cap on the instruction set (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY`` below AVX-512) counts as no.
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if cap and "AMX" not in cap and "BF16" not in cap and cap != "ALL":
        return False
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2"):
        return False
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        flags = get()
        return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & words)


def resolve_scoring_precision(precision: str, device: torch.device | str) -> str:
    """The precision scoring actually uses on ``device``: "auto" resolved, "tf32" meaning fp32 off CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        return "tf32" if cuda else ("bf16" if native_cpu_bf16() else "fp32")
    if precision == "tf32" and not cuda:
        return "fp32"
    return precision


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The dtype to autocast to, or None for fp32 weights and activations ("fp32", "tf32").

    "auto" here is training's: bf16 on a GPU, fp32 on a CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def set_fp32_math(precision: str) -> None:
    """Make CUDA's fp32 convolutions and matmuls exact ("fp32") or tensor-core TF32 ("tf32"), process-wide.

    cuDNN uses TF32 for fp32 convolutions unless told otherwise, so "fp32" must say so to mean fp32.
    """
    mode = "tf32" if precision == "tf32" else "ieee"
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = mode
        torch.backends.cuda.matmul.fp32_precision = mode
    else:
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> torch.autocast:
    """A context that autocasts to ``dtype`` on ``device``'s kind, or leaves fp32 alone for None."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)
