"""The configuration of one classifier training job: the observers and teachers RDED and evaluation use."""

from __future__ import annotations

from dataclasses import dataclass

from raydd.config import option
from raydd.models.precision import check_train_precision
from raydd.models.training import OPTIMIZERS, SCHEDULES
from raydd.scaling import Restartable

__all__ = ["TrainConfig"]



@dataclass
class TrainConfig(Restartable):
    """One classifier training run; Ray Train workers (``Scaling``) split each batch (DDP)."""

    data: str = option(help="training images: ImageFolder root or Parquet, local or s3://, gs://")
    val_data: str | None = option(None, help="validation images, same class folders (optional)")
    model: str = option("convnet3", help="zoo model name (raydd.models.list_models())")
    input_size: int | None = option(None, help="image side in pixels (default: the model's)")
    class_map: str | None = option(None, help="'sorted' (default), 'imagenet', or a JSON/text file")
    max_per_class: int | None = option(None, help="train on at most this many images per class (seeded)")
    epochs: int = option(30, help="epochs to train")
    batch_size: int = option(256, help="global batch size, split across workers")
    optimizer: str = option("sgd", help="sgd or adamw")
    lr: float = option(0.01, help="peak learning rate")
    momentum: float = option(0.9, help="SGD momentum")
    weight_decay: float = option(5e-4, help="weight decay")
    schedule: str = option("cosine", help="cosine (to 0), half_cosine (to about half), step (x0.1 at half) or constant")
    label_smoothing: float = option(0.0, help="cross-entropy label smoothing")
    augment: bool = option(True, help="random crop (padding size/8) and horizontal flip")
    precision: str = option("auto", help="forward-pass autocast: auto (bf16 on GPU, fp32 on CPU), fp32, bf16")
    seed: int = option(0, help="seed for init, shuffling and augmentation")
    storage_path: str = option("runs", execution=True, help="where runs and checkpoints are stored (local or URI)")
    name: str = option("train", execution=True, help="run name; rerunning with the same name and storage resumes")
    checkpoint_every: int = option(1, execution=True, help="checkpoint every N epochs (and at the end)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        check_train_precision(self.precision)
