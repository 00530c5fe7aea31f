"""The random baselines every distilled result stands beside, drawn from the same real training images.

* ``random``: ``ipc`` random real images per class (centre crop, resized to the input size);
* ``random_patches``: RDED without the observer — ``ipc · factor²`` random images per class, one random
  square crop each (RDED's box sampler), stitched in the same grid;
* ``herding`` (``herding.py``): the coreset the observer's features choose, no randomness.
"""

from __future__ import annotations

import numpy as np
import torch

from raydd.data import ImageIndex, decode_rgb, read_image_bytes, sample_per_class
from raydd.data.memory import load_labelled
from raydd.transforms.crops import crop_rng, cut_box, sample_boxes
from raydd.transforms.grid import grid_cells, stitch

__all__ = ["random_patches", "random_subset"]


def random_subset(index: ImageIndex, classes: list[str], ipc: int, size: int, *, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[str]]]:
    """The images, their labels and the files drawn (per class)."""
    drawn = sample_per_class(index, ipc, seed=seed, min_count=ipc, classes=classes)
    loaded = load_labelled(index, classes, size=size, files=drawn)
    return loaded.images, loaded.labels, drawn


def random_patches(index: ImageIndex, classes: list[str], ipc: int, size: int, factor: int, *, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[str]]]:
    """The stitched images, their labels and the files whose crops they hold (per class, in cell order)."""
    per_image = factor * factor
    drawn = sample_per_class(index, ipc * per_image, seed=seed, min_count=ipc * per_image, classes=classes)
    fs = index.filesystem()
    cells = grid_cells(size, factor)
    images, labels = [], []
    for c, name in enumerate(classes):
        refs = drawn[name]
        for i in range(ipc):
            chosen = refs[i * per_image:(i + 1) * per_image]
            patches = []
            for (_, _, h, w), ref, data in zip(cells, chosen, read_image_bytes(chosen, fs), strict=True):
                image = decode_rgb(data, ref=ref)
                if image is None:
                    raise ValueError(f"{ref} cannot be decoded; remove it from the real data")
                box = sample_boxes(image.width, image.height, 1, crop_rng(seed, ref))[0]
                patches.append(cut_box(image, box, (w, h)))
            images.append(stitch(patches, size, factor))
            labels.append(c)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long), {c: drawn[c][:ipc * per_image] for c in classes}
