"""Loading weights from a local file: plain state dicts, wrapped ones, and ``module.``-prefixed keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_state_dict_file", "load_weights"]


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file; accepts ``{"state_dict": …}``/``{"model": …}`` wrappers."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, weights: str | Path | None) -> nn.Module:
    if weights is not None:
        model.load_state_dict(load_state_dict_file(weights))
    return model
