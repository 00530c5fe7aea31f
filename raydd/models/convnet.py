"""ConvNet-D, the distillation literature's standard student.

D blocks of 3×3 conv (width 128) → instance norm (GroupNorm with a group per channel, affine) → ReLU →
2×2 average pool, then a linear classifier. D = 3 for 32 px, 4 for 64, 5 for 128, 6 for 256.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from raydd.models._weights import load_weights
from raydd.models.registry import register_model

__all__ = ["ConvNet", "convnet"]


class ConvNet(nn.Module):
    def __init__(self, *, depth: int = 3, width: int = 128, num_classes: int = 10, input_size: int = 32,
                 channels: int = 3) -> None:
        super().__init__()
        if input_size % (2**depth):
            raise ValueError(f"input_size {input_size} is not divisible by 2**depth = {2**depth}")
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Conv2d(channels if i == 0 else width, width, kernel_size=3, padding=1),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2, 2),
            ]
        self.features = nn.Sequential(*layers)
        side = input_size // (2**depth)
        self.classifier = nn.Linear(width * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def convnet(*, depth: int = 3, num_classes: int = 10, input_size: int | None = None,
            weights: str | Path | None = None, width: int = 128) -> ConvNet:
    model = ConvNet(depth=depth, width=width, num_classes=num_classes, input_size=input_size or 2 ** (depth + 2))
    return load_weights(model, weights)


def _register(depth: int) -> None:
    size = 2 ** (depth + 2)

    @register_model(f"convnet{depth}", input_size=size, num_classes=10)
    def build(*, num_classes: int = 10, weights: str | Path | None = None, input_size: int | None = None,
              width: int = 128) -> ConvNet:
        return convnet(depth=depth, num_classes=num_classes, input_size=input_size or size, weights=weights,
                       width=width)


for _depth in (3, 4, 5, 6):
    _register(_depth)
