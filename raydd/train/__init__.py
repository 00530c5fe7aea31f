"""Classifier training on Ray Train (observers, or any classifier); checkpoints load back via ``raydd.models``."""

from raydd.models.checkpoint import find_checkpoint, save_checkpoint
from raydd.models.observer import load_model_checkpoint
from raydd.train.config import TrainConfig
from raydd.train.trainer import TrainResult, fit

__all__ = ["TrainConfig", "TrainResult", "find_checkpoint", "fit", "load_model_checkpoint", "save_checkpoint"]
