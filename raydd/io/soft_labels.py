"""The compact form a distilled set stores its soft labels in, and the way back to dense logits.

Each label is the observer's top-k logits in float16 with their class indices (k configurable; k = number of
classes keeps everything), and the mean and std of the rest: at a KD temperature of 20 the classes outside the
top 10 of 1,000 hold most of the tempered mass, so how they are filled back in decides what a stored label says
(``dense_logits``). RDED writes them; evaluation and DD-Ranking's export read them.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["dense_logits", "tail_stats", "topk_logits"]


def topk_logits(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int32, values float16) of the ``k`` largest logits per row."""
    k = min(k, logits.shape[1])
    values, indices = logits.float().topk(k, dim=1)
    return indices.numpy().astype(np.int32), values.numpy().astype(np.float16)


def tail_stats(logits: torch.Tensor, k: int) -> np.ndarray:
    """``[N, 2]`` float32: mean and std of each row's logits outside its ``k`` largest (zeros when none are)."""
    logits = logits.float()
    if k >= logits.shape[1]:
        return np.zeros((len(logits), 2), dtype=np.float32)
    rest = logits.sort(dim=1, descending=True).values[:, k:]
    return torch.stack([rest.mean(1), rest.std(1, correction=0)], 1).numpy().astype(np.float32)


def dense_logits(indices: np.ndarray, values: np.ndarray, num_classes: int, tail: np.ndarray | None = None,
                 temperature: float | None = None) -> torch.Tensor:
    """Back to ``[N, num_classes]`` float32, the classes outside the stored top-k filled in.

    With ``tail`` (mean μ and std σ of the rest, ``tail_stats``) each gets μ + σ² / (2T): the value whose
    tempered weight exp(·/T) is the rest's mean weight if their logits are normal, so the tempered softmax at
    ``temperature`` T keeps the rest's share of the mass (without T: μ). Sets written before the tail was stored
    fill with the row's smallest stored logit minus 10, which leaves the rest far too much mass at T = 20.
    """
    values = values.astype(np.float32)
    if tail is None:
        fill = values.min(axis=1, keepdims=True) - 10.0
    else:
        mean, std = tail[:, :1].astype(np.float32), tail[:, 1:].astype(np.float32)
        fill = mean + (std**2 / (2 * temperature) if temperature else 0.0)
    dense = np.repeat(fill, num_classes, axis=1)
    np.put_along_axis(dense, indices.astype(np.int64), values, axis=1)
    return torch.from_numpy(dense)
