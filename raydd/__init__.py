"""raydd: dataset distillation (RDED, IADD/MTT) at scale on Ray.

``raydd.evaluate`` is the evaluation package (its function: ``from raydd.evaluate import evaluate``). The public
names load lazily: every Ray worker imports this package, and pulling in Ray Train or torchvision
where a worker needs neither cost seconds per process on small machines.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ClassMap": "raydd.data",
    "list_images": "raydd.data",
    "load_class_map": "raydd.data",
    "DistilledSet": "raydd.io",
    "EvalConfig": "raydd.evaluate",
    "ExpertsConfig": "raydd.trajectories",
    "train_experts": "raydd.trajectories",
    "MatchConfig": "raydd.matching",
    "match": "raydd.matching",
    "get_model": "raydd.models",
    "list_models": "raydd.models",
    "load_observer": "raydd.models",
    "RdedConfig": "raydd.rded",
    "distill": "raydd.rded",
    "TrainConfig": "raydd.train",
    "fit": "raydd.train",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'raydd' has no attribute {name!r}")
