"""Herding, the coreset baseline RDED's paper compares with: per class, the real images whose features' running
mean follows the class mean most closely (Welling 2009, in iCaRL's greedy form), on an observer's penultimate
features. Deterministic: files in sorted order, ties to the earlier file, no random draw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raydd.data import ImageIndex
from raydd.data.memory import load_labelled_images
from raydd.models.observer import Observer

__all__ = ["herding_order", "herding_subset", "penultimate_features"]


def herding_order(features: torch.Tensor, count: int) -> list[int]:
    """The first ``count`` rows chosen by herding: each step takes the row that brings the mean of the chosen
    (L2-normalised) rows closest to the mean of all of them."""
    if count > len(features):
        raise ValueError(f"herding {count} of {len(features)} rows")
    x = F.normalize(features.double(), dim=1)
    target = x.mean(0)
    total = torch.zeros_like(target)
    chosen: list[int] = []
    free = torch.ones(len(x), dtype=torch.bool)
    for step in range(1, count + 1):
        distance = ((target - (total + x) / step) ** 2).sum(1)
        distance[~free] = float("inf")
        pick = int(torch.argmin(distance))  # the first of equal distances
        chosen.append(pick)
        free[pick] = False
        total += x[pick]
    return chosen


@torch.inference_mode()
def penultimate_features(observer: Observer, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """What the observer's last linear layer receives, for ``uint8 [N, 3, H, W]`` pixels at its input size."""
    last = [m for m in observer.model.modules() if isinstance(m, torch.nn.Linear)]
    if not last:
        raise ValueError(f"observer {observer.spec} has no linear classifier to take features from")
    seen: list[torch.Tensor] = []
    handle = last[-1].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].flatten(1)))
    try:
        observer.eval()
        for start in range(0, len(pixels), batch_size):
            observer(pixels[start:start + batch_size].float() / 255)
    finally:
        handle.remove()
    return torch.cat(seen).float()


def herding_subset(index: ImageIndex, classes: list[str], ipc: int, size: int, observer: Observer
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[str]]]:
    """``ipc`` herded real images per class at ``size``, their labels, and the files chosen (per class)."""
    fs = index.filesystem()
    chosen: dict[str, list[str]] = {}
    for name in classes:
        files = sorted(index.files[name])
        pool = load_labelled_images(files, [0] * len(files), size=observer.input_size, filesystem=fs)
        if len(pool.refs) < ipc:
            raise ValueError(f"class {name}: {len(pool.refs)} readable images, fewer than the {ipc} to herd")
        order = herding_order(penultimate_features(observer, pool.images), ipc)
        chosen[name] = [pool.refs[i] for i in order]
    refs = [r for c in classes for r in chosen[c]]
    labels = [i for i, c in enumerate(classes) for _ in chosen[c]]
    picked = load_labelled_images(refs, labels, size=size, filesystem=fs)
    return picked.images, picked.labels, chosen
