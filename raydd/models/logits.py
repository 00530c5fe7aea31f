"""Observers' logits as every job uses them: ensembles and per-patch views.

RDED relabels its distilled images with them and evaluation's teachers produce them. Two granularities: one
label per distilled image, and one per patch ("region level": the observer's view of the patch alone, resized to
its input size — what a student's random-resized crop of that region shows). How a set stores them (top-k and
the rest's mean and std) is ``raydd.io.soft_labels``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from raydd.models.observer import Observer
from raydd.models.precision import autocast
from raydd.transforms.grid import grid_cells

__all__ = ["ensemble_logits", "in_fixed_batches", "observer_logits", "patch_views"]


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
def observer_logits(observer: Observer, pixels: torch.Tensor, autocast_dtype: torch.dtype | None = None
                    ) -> torch.Tensor:
    """One observer's float32 logits for float pixels in [0, 1] (on its device), resized to its input first:
    the forward every relabelling and every online teacher shares."""
    if pixels.shape[-1] != observer.input_size:
        pixels = F.interpolate(pixels, size=(observer.input_size,) * 2, mode="bilinear", antialias=True,
                               align_corners=False)
    with autocast(pixels.device, autocast_dtype):
        return observer(pixels).float()


def ensemble_logits(observers: Sequence[Observer], images: torch.Tensor, *, batch_size: int = 64,
                    autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean logits of ``observers`` on images ``[N, 3, S, S]`` (uint8, on any device) resized to each
    observer's input, in forwards of exactly ``batch_size`` images (``in_fixed_batches``); on the CPU."""
    device = next(observers[0].parameters()).device

    def forward(chunk: torch.Tensor) -> torch.Tensor:
        pixels = chunk.to(device).float().div_(255.0)
        total = None
        for observer in observers:
            logits = observer_logits(observer, pixels, autocast_dtype)
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
