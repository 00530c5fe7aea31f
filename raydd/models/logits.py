"""Observers' logits as every job uses them: ensembles, per-patch views, and the compact top-k form.

RDED relabels its distilled images with them and evaluation's teachers produce them. Two granularities: one
label per distilled image, and one per patch ("region level": the observer's view of the patch alone, resized to
its input size — what a student's random-resized crop of that region shows). Stored as the top-k logits in
float16 with their class indices (k configurable; k = number of classes keeps everything), and the mean and std
of the rest: at a KD temperature of 20 the classes outside the top 10 of 1,000 hold most of the tempered mass,
so how they are filled back in decides what a stored label says (``dense_logits``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from raydd.models.observer import Observer
from raydd.models.precision import autocast
from raydd.transforms.grid import grid_cells

__all__ = ["dense_logits", "ensemble_logits", "in_fixed_batches", "patch_views", "tail_stats", "topk_logits"]


def in_fixed_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``fn`` over ``x`` in forwards of exactly ``batch_size`` rows, the last one padded with zeros.

    A network in eval mode treats rows independently, and a forward of a fixed shape runs the same kernels
    whatever the other rows hold: so a row's result does not depend on which rows Ray batched it with.
    """
    out = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        if len(chunk) < batch_size:
            chunk = torch.cat([chunk, chunk.new_zeros((batch_size - len(chunk), *chunk.shape[1:]))])
        out.append(fn(chunk)[: min(batch_size, len(x) - start)])
    return torch.cat(out) if out else x.new_zeros((0,))


@torch.inference_mode()
def ensemble_logits(observers: Sequence[Observer], images: torch.Tensor, *, batch_size: int = 64,
                    autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean logits of ``observers`` on images ``[N, 3, S, S]`` (uint8, on any device) resized to each
    observer's input, in forwards of exactly ``batch_size`` images (``in_fixed_batches``); on the CPU."""
    device = next(observers[0].parameters()).device

    def forward(chunk: torch.Tensor) -> torch.Tensor:
        pixels = chunk.to(device).float().div_(255.0)
        total = None
        for observer in observers:
            x = pixels
            if x.shape[-1] != observer.input_size:
                x = F.interpolate(x, size=(observer.input_size,) * 2, mode="bilinear", antialias=True,
                                  align_corners=False)
            with autocast(device, autocast_dtype):
                logits = observer(x).float()
            total = logits if total is None else total + logits
        return total / len(observers)

    return in_fixed_batches(forward, images, batch_size).cpu()


def patch_views(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Every grid cell of uint8 images ``[N, 3, S, S]`` resized back to ``S``: ``[N·factor², 3, S, S]``, on the
    images' device (a GPU actor keeps them there)."""
    size = images.shape[-1]
    views = [
        F.interpolate(images[:, :, top:top + h, left:left + w].float(), size=(size, size), mode="bilinear",
                      antialias=True, align_corners=False)
        for top, left, h, w in grid_cells(size, factor)
    ]
    return torch.stack(views, dim=1).flatten(0, 1).round().clamp(0, 255).to(torch.uint8)


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
