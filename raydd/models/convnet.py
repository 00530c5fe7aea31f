"""ConvNet-D, the distillation literature's standard student.

D blocks of 3×3 conv (width 128) → norm → ReLU → 2×2 average pool, then a linear classifier. D = 3 for 32 px,
4 for 64, 5 for 128, 6 for 256. Two norms, two conventions: ``convnetD`` uses instance norm (GroupNorm with a
group per channel, affine), as MTT's code and trajectory matching do; ``convnetD_bn`` uses BatchNorm, as RDED's
reference builds every ConvNet observer and student (``ConvNet(net_norm="batch")``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from raydd.models._weights import load_weights
from raydd.models.registry import register_model

__all__ = ["NORMS", "ConvNet", "convnet"]

NORMS = ("instance", "batch")


class ConvNet(nn.Module):
    def __init__(self, *, depth: int = 3, width: int = 128, num_classes: int = 10, input_size: int = 32,
                 channels: int = 3, norm: str = "instance") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}")
        if input_size % (2**depth):
            raise ValueError(f"input_size {input_size} is not divisible by 2**depth = {2**depth}")
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Conv2d(channels if i == 0 else width, width, kernel_size=3, padding=1),
                nn.GroupNorm(width, width, affine=True) if norm == "instance" else nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2, 2),
            ]
        self.features = nn.Sequential(*layers)
        side = input_size // (2**depth)
        self.classifier = nn.Linear(width * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def convnet(*, depth: int = 3, num_classes: int = 10, input_size: int | None = None,
            weights: str | Path | None = None, width: int = 128, norm: str = "instance") -> ConvNet:
    model = ConvNet(depth=depth, width=width, num_classes=num_classes, input_size=input_size or 2 ** (depth + 2),
                    norm=norm)
    return load_weights(model, weights)


def _register(depth: int, norm: str) -> None:
    size = 2 ** (depth + 2)

    @register_model(f"convnet{depth}" + ("_bn" if norm == "batch" else ""), input_size=size, num_classes=10)
    def build(*, num_classes: int = 10, weights: str | Path | None = None, input_size: int | None = None,
              width: int = 128) -> ConvNet:
        return convnet(depth=depth, num_classes=num_classes, input_size=input_size or size, weights=weights,
                       width=width, norm=norm)


for _depth in (3, 4, 5, 6):
    for _norm in NORMS:
        _register(_depth, _norm)
