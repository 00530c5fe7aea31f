"""``raydd.train.fit``: train a classifier with Ray Train's ``TorchTrainer`` (DDP: gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from raydd.data import list_images, load_class_map
from raydd.models.registry import get_entry
from raydd.scaling import run_torch_trainer
from raydd.train.config import TrainConfig
from raydd.train.loop import train_loop_per_worker

__all__ = ["TrainResult", "fit"]

log = logging.getLogger("raydd.train")


@dataclass(frozen=True)
class TrainResult:
    """Where the final checkpoint is (loadable with ``checkpoint@PATH``) and the last reported metrics."""

    checkpoint: str
    metrics: dict[str, Any]


def _check_inputs(config: TrainConfig) -> None:
    """Fail in the driver, before any worker starts, on a missing source or a bad class map."""
    index = list_images(config.data)
    cmap = load_class_map(config.class_map, index.classes)
    get_entry(config.model)
    if config.val_data:
        cmap.check(list_images(config.val_data).classes)


def fit(config: TrainConfig) -> TrainResult:
    """Train (or resume) the classifier ``config`` describes.

    Examples:
        >>> from raydd.train import TrainConfig, fit
        >>> result = fit(TrainConfig(data="tiny/train", val_data="tiny/val", epochs=2))  # doctest: +SKIP
        >>> result.metrics["val_acc"]                                                     # doctest: +SKIP

    Rerunning with the same ``name`` and ``storage_path`` resumes from the last checkpoint of that run.
    """
    _check_inputs(config)
    result = run_torch_trainer(train_loop_per_worker, {"config": asdict(config)}, config, name=config.name,
                               storage_path=config.storage_path, keep_checkpoints=2)
    if result.checkpoint is None:
        raise RuntimeError(f"training run {config.name} finished without a checkpoint")
    log.info("final checkpoint: %s", result.checkpoint.path)
    return TrainResult(checkpoint=result.checkpoint.path, metrics=dict(result.metrics or {}))
