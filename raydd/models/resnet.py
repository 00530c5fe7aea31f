"""ResNet-18 for small images (3×3 stride-1 stem, no max-pool), the CIFAR/Tiny students and observers."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from raydd.models._weights import load_weights
from raydd.models.registry import register_model

__all__ = ["resnet18_small"]


@register_model("resnet18_small", input_size=32, num_classes=10)
def resnet18_small(*, num_classes: int = 10, weights: str | Path | None = None) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return load_weights(model, weights)
