"""Model zoo: observers and students, one family a module, all in one registry."""

from raydd.models import cifar_resnet, convnet, imagenet, resnet  # noqa: F401  (registers the builders)
from raydd.models.observer import Observer, load_model_checkpoint, load_observer, parse_spec
from raydd.models.registry import (
    IMAGENET_NORM,
    Normalization,
    build_model,
    get_entry,
    get_model,
    list_models,
    register_model,
)

__all__ = [
    "IMAGENET_NORM",
    "Normalization",
    "Observer",
    "build_model",
    "get_entry",
    "get_model",
    "list_models",
    "load_model_checkpoint",
    "load_observer",
    "parse_spec",
    "register_model",
]
