"""Decode a (shard of a) source into one uint8 tensor: the training data of a worker.

Distilled sets and the CIFAR/Imagenette-sized training sets raydd trains experts, students and observers on
fit in memory; decoding once and indexing a tensor each epoch keeps 2-core machines busy with math. Every job
loads labelled images through ``load_labelled`` (a source's classes, all files or a drawn subset, or one
worker's shard) or, for files it picked itself, ``load_labelled_images``; both say what they kept and count why
they dropped the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow.fs as pafs
import torch
from PIL import Image, ImageOps

from raydd.data.decode import DecodeStats, decode_rgb
from raydd.data.sources import ImageIndex, read_image_bytes

__all__ = ["LabelledImages", "load_labelled", "load_labelled_images"]


@dataclass
class LabelledImages:
    """Decoded images, their labels and references (the files kept), and why the others were dropped."""

    images: torch.Tensor
    labels: torch.Tensor
    refs: list[str]
    stats: DecodeStats = field(default_factory=DecodeStats)


def load_labelled(index: ImageIndex, classes: Sequence[str], *, size: int,
                  files: Mapping[str, Sequence[str]] | None = None, shard: tuple[int, int] | None = None,
                  stats: DecodeStats | None = None) -> LabelledImages:
    """The images of ``classes`` in ``index`` (or only ``files`` per class, a drawn subset), labelled by their
    class's position in ``classes``, decoded to ``size`` (centre crop of the shorter side, then resize).

    In class order, each class's files in the order given; ``shard=(rank, world)`` keeps every ``world``-th of the
    (file, label) pairs sorted by file, from ``rank`` — a Ray Train worker's share, the same whatever the class
    order. A class the source lacks contributes nothing; files that do not decode are dropped and counted in
    ``stats``.
    """
    chosen = index.files if files is None else files
    pairs = [(ref, label) for label, name in enumerate(classes) for ref in chosen.get(name, [])]
    if shard is not None:
        rank, world = shard
        pairs = sorted(pairs)[rank::world]
    return load_labelled_images([ref for ref, _ in pairs], [label for _, label in pairs], size=size,
                                filesystem=index.filesystem(), stats=stats)


def load_labelled_images(refs: Sequence[str], labels: Sequence[int], *, size: int,
                         filesystem: pafs.FileSystem | None = None, stats: DecodeStats | None = None,
                         chunk: int = 512) -> LabelledImages:
    """Files ``refs`` with their ``labels``, decoded to ``size``: the images kept and their labels and references,
    in order; a file that does not decode is dropped (with its label) and counted in ``stats``."""
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
