"""Classifier training on Ray Train: observers now, experts and students through the same loop."""

from raydd.train.checkpoint import find_checkpoint, load_model_checkpoint, save_checkpoint
from raydd.train.config import TrainConfig
from raydd.train.trainer import TrainResult, fit

__all__ = ["TrainConfig", "TrainResult", "find_checkpoint", "fit", "load_model_checkpoint", "save_checkpoint"]
