"""Decode a (shard of a) source into one uint8 tensor: the training data of a worker.

Distilled sets and the CIFAR/Imagenette-sized training sets raydd trains experts, students and observers on
fit in memory; decoding once and indexing a tensor each epoch keeps 2-core machines busy with math.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow.fs as pafs
import torch
from PIL import Image, ImageOps

from raydd.data.decode import DecodeStats, decode_rgb
from raydd.data.sources import read_image_bytes

__all__ = ["LabelledImages", "load_labelled_images", "load_tensor_images"]


@dataclass
class LabelledImages:
    """Decoded images, their labels and references (the files kept), and why the others were dropped."""

    images: torch.Tensor
    labels: torch.Tensor
    refs: list[str]
    stats: DecodeStats = field(default_factory=DecodeStats)


def load_tensor_images(refs: Sequence[str], labels: Sequence[int], *, size: int,
                       filesystem: pafs.FileSystem | None = None, stats: DecodeStats | None = None,
                       chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as ``uint8 [N, 3, size, size]`` (centre crop of the shorter side, then resize) and labels.

    Bad files are skipped and counted in ``stats``; their labels are dropped with them.
    """
    loaded = load_labelled_images(refs, labels, size=size, filesystem=filesystem, stats=stats, chunk=chunk)
    return loaded.images, loaded.labels


def load_labelled_images(refs: Sequence[str], labels: Sequence[int], *, size: int,
                         filesystem: pafs.FileSystem | None = None, stats: DecodeStats | None = None,
                         chunk: int = 512) -> LabelledImages:
    """``load_tensor_images`` that also says which references it kept (in order)."""
    stats = stats if stats is not None else DecodeStats()
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    kept_refs: list[str] = []
    for start in range(0, len(refs), chunk):
        part = list(refs[start:start + chunk])
        for offset, (ref, data) in enumerate(zip(part, read_image_bytes(part, filesystem), strict=True)):
            image = decode_rgb(data, ref=ref, stats=stats, draft=lambda s: (size, size))
            if image is None:
                continue
            if image.size != (size, size):
                image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(image, dtype=np.uint8))
            kept.append(labels[start + offset])
            kept_refs.append(ref)
    if not arrays:
        return LabelledImages(torch.empty(0, 3, size, size, dtype=torch.uint8), torch.empty(0, dtype=torch.long),
                              [], stats)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return LabelledImages(images, torch.tensor(kept, dtype=torch.long), kept_refs, stats)
