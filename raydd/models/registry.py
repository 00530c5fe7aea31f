"""One model registry: builders by name, each knowing its input size and normalization."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["IMAGENET_NORM", "MTT_NORMS", "ModelEntry", "Normalization", "build_model", "get_entry", "get_model",
           "list_models", "mtt_normalization", "register_model"]


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std applied to [0, 1] pixels before the model."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, 3, 1, 1)
        return (torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape),
                torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape))

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels ``[N, 3, H, W]`` → model input."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def to_input(self, images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """uint8 images ``[N, 3, H, W]`` → model input on ``device`` (the copy does not wait for the device)."""
        return self.apply(images.to(device, non_blocking=True).float().div_(255.0))

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Model input → [0, 1] pixels (unclamped)."""
        mean, std = self._stats(x)
        return x * std + mean


IMAGENET_NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The per-data-set constants MTT's code normalises with (its utils.get_dataset); Tiny-ImageNet and ImageNet's
# subsets use ImageNet's.
MTT_NORMS = {"imagenet": IMAGENET_NORM,
             "cifar10": Normalization((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
             "cifar100": Normalization((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762))}


def mtt_normalization(name: str, num_classes: int, size: int) -> tuple[str, Normalization]:
    """A preset of ``MTT_NORMS`` by name; ``"auto"`` tells CIFAR-10 and CIFAR-100 by their shape (10 or 100
    classes at 32 px) and takes ImageNet's for everything else, as MTT's code does."""
    if name == "auto":
        name = {(10, 32): "cifar10", (100, 32): "cifar100"}.get((num_classes, size), "imagenet")
    if name not in MTT_NORMS:
        raise ValueError(f"normalization must be auto or one of {sorted(MTT_NORMS)}, got {name!r}")
    return name, MTT_NORMS[name]


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder and the facts an observer needs about the model it builds."""

    name: str
    builder: Callable[..., nn.Module]
    input_size: int
    normalization: Normalization
    num_classes: int
    pretrained: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, input_size: int, num_classes: int,
                   normalization: Normalization = IMAGENET_NORM, pretrained: str = ""
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a keyword-only builder ``fn(*, num_classes, weights, **kwargs)`` under ``name``.

    ``pretrained`` says where default weights come from (empty: the builder has none of its own).
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, fn, input_size, normalization, num_classes, pretrained)
        return fn

    return wrap


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def get_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model, e.g. ``get_model("convnet3", num_classes=10)``."""
    return get_entry(name).builder(**kwargs)


def build_model(name: str, num_classes: int, input_size: int) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model of ``name`` and the keyword arguments that rebuild it (checkpoints and expert files keep
    them): ConvNets size their classifier by the input side, the other families do not take it."""
    args: dict[str, Any] = {"num_classes": num_classes}
    if name.startswith("convnet"):
        args["input_size"] = input_size
    return get_model(name, **args), args


def list_models() -> list[str]:
    return sorted(_REGISTRY)
