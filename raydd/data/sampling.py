"""Seeded per-class sampling of candidate images.

The draw depends only on the seed, the class name and the sorted list of the class's files, so the same
seed picks the same files on any machine, whatever the listing order or the number of workers.
"""

from __future__ import annotations

import zlib

import numpy as np

from raydd.data.sources import ImageIndex

__all__ = ["class_rng", "sample_per_class"]


def class_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one (seed, name) pair, independent of every other pair."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def sample_per_class(index: ImageIndex, count: int, *, seed: int, min_count: int = 1,
                     classes: list[str] | None = None) -> dict[str, list[str]]:
    """Draw up to ``count`` images of each class without replacement, in a seeded order.

    A class with fewer than ``count`` images contributes all of them; one with fewer than ``min_count``
    is an error.

    Raises:
        ValueError: naming the classes that have fewer than ``min_count`` images.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    wanted = classes if classes is not None else index.classes
    short = {c: len(index.files.get(c, [])) for c in wanted if len(index.files.get(c, [])) < min_count}
    if short:
        listing = ", ".join(f"{c} ({n})" for c, n in sorted(short.items())[:8])
        raise ValueError(f"class(es) with fewer than the {min_count} images needed: {listing}")
    out: dict[str, list[str]] = {}
    for name in wanted:
        files = sorted(index.files[name])
        order = class_rng(seed, name).permutation(len(files))[: min(count, len(files))]
        out[name] = [files[i] for i in order]
    return out
