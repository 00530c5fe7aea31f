"""Step 3 of RDED: realism scores of crops under one or several observers.

Score = cross-entropy of the true class, −log softmax(logits)[y]; lower is more realistic. A crop smaller
than the observer's input is zero-padded after normalization (that is, with the mean colour) to a centred
``input_size`` canvas; several observers average their scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from raydd.models.logits import in_fixed_batches
from raydd.models.observer import Observer
from raydd.models.precision import autocast

__all__ = ["pad_to_canvas", "realism_scores", "score_crops"]


def pad_to_canvas(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``x [N, C, h, w]`` on a zero canvas of ``size`` a side (no-op when already that size)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))


def realism_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of the true class (float32 whatever the logits' precision)."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


@torch.inference_mode()
def score_crops(observers: Sequence[Observer], crops: torch.Tensor, labels: torch.Tensor, *, input_size: int,
                autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
                batch_size: int | None = None) -> torch.Tensor:
    """Mean realism score over ``observers`` of crops ``[N, 3, s, s]`` (uint8, or float in [0, 255]) with
    data-order ``labels``, in forwards of ``batch_size`` crops (default: all at once)."""
    device = next(observers[0].parameters()).device
    labels = labels.to(device)

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(device, non_blocking=True).float().div_(255.0)
        logits = []
        for observer in observers:
            x = pad_to_canvas(observer.normalize(pixels), input_size)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, autocast_dtype):
                logits.append(observer.logits(x).float())
        return torch.stack(logits, dim=1)  # [N, observers, classes]: rows first, as batches are cut

    logits = in_fixed_batches(forward, crops, batch_size or max(1, len(crops))).transpose(0, 1)
    total = sum(realism_scores(per_observer, labels) for per_observer in logits)
    return (total / len(observers)).cpu()
