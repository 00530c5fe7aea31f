"""The training core every job's loop stands on: optimiser, learning-rate schedule, step, accuracy.

Three loops train networks — observers and teachers (``raydd.train``), experts (``raydd.trajectories``) and
evaluation's students (``raydd.evaluate``) — and each keeps only what its protocol adds (data sharding and DDP,
trajectory snapshots, augmentation and distillation losses). What they share is here, so that "AdamW without
decay on biases and norms" or "step ×0.1 at half" is one piece of code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from raydd.models.precision import autocast

__all__ = ["OPTIMIZERS", "SCHEDULES", "class_hits", "lr_at", "make_optimizer", "train_step"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "half_cosine", "step", "constant")


def make_optimizer(model: nn.Module, kind: str, *, lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD with momentum, or AdamW that exempts biases and norm parameters (every tensor of one dimension or
    none) from weight decay, as RDED's protocol does."""
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind != "adamw":
        raise ValueError(f"unknown optimizer {kind!r}; one of {', '.join(OPTIMIZERS)}")
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr)


def lr_at(schedule: str, epoch: int, epochs: int, lr: float) -> float:
    """The learning rate of a 0-based epoch: ``cosine`` to zero; ``half_cosine`` (RDED's evaluation: the first
    half of a cosine, lr · ½(1 + cos(π·epoch / 2·epochs)), from lr down to about lr/2); ``step`` (×0.1 from
    half-way, MTT's evaluation); ``constant``."""
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if schedule == "half_cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / (2 * epochs)))
    if schedule == "step":
        return lr * (0.1 if epoch >= epochs // 2 else 1.0)
    if schedule == "constant":
        return lr
    raise ValueError(f"unknown schedule {schedule!r}; one of {', '.join(SCHEDULES)}")


def train_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.inference_mode()
def class_hits(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
               inputs: Callable[[torch.Tensor], torch.Tensor], num_classes: int, device: torch.device,
               batch_size: int, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, total) per class of ``model`` in eval mode on uint8 ``images``; ``inputs`` makes a batch of them
    the model's input on ``device`` (normalised, whitened), and the forward is autocast to ``dtype``."""
    model.eval()
    correct = torch.zeros(num_classes)
    total = torch.bincount(labels, minlength=num_classes).float()
    for s in range(0, len(images), batch_size):
        with autocast(device, dtype):
            pred = model(inputs(images[s:s + batch_size])).argmax(1).cpu()
        hits = pred == labels[s:s + batch_size]
        correct += torch.bincount(labels[s:s + batch_size][hits], minlength=num_classes).float()
    return correct, total
