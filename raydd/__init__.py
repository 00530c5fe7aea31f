"""raydd: dataset distillation (RDED, IADD/MTT) at scale on Ray."""

from raydd.data import ClassMap, list_images, load_class_map
from raydd.models import get_model, list_models, load_observer
from raydd.train import TrainConfig, fit

__version__ = "0.1.0"

__all__ = [
    "ClassMap",
    "TrainConfig",
    "__version__",
    "fit",
    "get_model",
    "list_images",
    "list_models",
    "load_class_map",
    "load_observer",
]
