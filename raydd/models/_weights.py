"""A model's weights from a file, read through ``raydd.io.torch_files`` (tensors and plain values only)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from raydd.io.torch_files import load_state_dict_file

__all__ = ["load_weights"]


def load_weights(model: nn.Module, weights: str | Path | None) -> nn.Module:
    if weights is not None:
        model.load_state_dict(load_state_dict_file(weights))
    return model
