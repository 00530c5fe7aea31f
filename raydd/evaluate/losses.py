"""Student losses and learning-rate schedules of the two published evaluation protocols."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["kd_loss", "mtt_lr", "rded_lr"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) at temperature T, averaged over the batch: RDED's only loss (no hard labels)."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")


def rded_lr(epoch: int, epochs: int, lr: float) -> float:
    """RDED's smoothed cosine: lr · ½(1 + cos(π·epoch / (2·epochs))) — from lr down to about lr/2."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / (2 * epochs)))


def mtt_lr(epoch: int, epochs: int, lr: float) -> float:
    """MTT's evaluation schedule: lr, then lr × 0.1 from half-way."""
    return lr * (0.1 if epoch >= epochs // 2 else 1.0)
