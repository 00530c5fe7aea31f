"""Which dtype a forward pass autocasts to, from a config's precision name and the device it runs on.

"auto" means bf16 on a GPU and fp32 on a CPU: bf16 halves a GPU's memory traffic at no cost to selection or
accuracy, while on a CPU it only pays where the cores have bf16 instructions, so there it is asked for.
"""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "TRAIN_PRECISIONS", "autocast", "autocast_dtype", "check_train_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Training leaves fp16 out: its small range would need loss scaling, and bf16 does the same job without it.
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")


def check_train_precision(precision: str) -> None:
    """Refuse a precision that training cannot use, saying which it can (a config's ``__post_init__`` check)."""
    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAIN_PRECISIONS} (fp16 would need loss scaling)")


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The dtype to autocast to, or None for plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> torch.autocast:
    """A context that autocasts to ``dtype`` on ``device``'s kind, or leaves fp32 alone for None."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)
