"""The CIFAR ResNets of He et al. (2016), §4.2: 6n+2 layers in three stages of 16/32/64 channels.

Option-A shortcuts: where a block halves the resolution and doubles the width, the identity path takes every
second pixel and pads the new channels with zeros (no parameters). Parameter names follow the widely used
pretrained checkpoints (``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}, linear``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from raydd.models._weights import load_weights
from raydd.models.registry import register_model

__all__ = ["CifarResNet", "cifar_resnet"]


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - in_planes) // 2 if stride != 1 or in_planes != planes else None
        self.stride = stride

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is None:
            return x
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, *, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(_BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(*, depth: int, num_classes: int = 10, weights: str | Path | None = None) -> CifarResNet:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return load_weights(CifarResNet(blocks_per_stage=(depth - 2) // 6, num_classes=num_classes), weights)


def _register(depth: int) -> None:
    @register_model(f"cifar_resnet{depth}", input_size=32, num_classes=10)
    def build(*, num_classes: int = 10, weights: str | Path | None = None) -> CifarResNet:
        return cifar_resnet(depth=depth, num_classes=num_classes, weights=weights)


for _depth in (20, 32, 44, 56, 110):
    _register(_depth)
