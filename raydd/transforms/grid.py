"""The ``factor × factor`` grid of a stitched image: RDED's assembly, the soft labels of its patches, and the
strip shuffling and random patches of its evaluation.

The grid splits ``input_size`` into cells of ``input_size // factor``; the first ``input_size % factor`` rows
and columns are one pixel wider. Distilled image ``i`` of a class takes the ranked patches
``i, ipc + i, 2·ipc + i, …`` (row-major in the grid), so every image mixes high- and lower-ranked patches.
"""

from __future__ import annotations

import numpy as np

__all__ = ["grid_cells", "grid_spans", "patch_ranks", "stitch"]


def grid_spans(size: int, factor: int) -> list[tuple[int, int]]:
    """``(start, length)`` of each of the ``factor`` strips along one side, the wider ones first."""
    base, extra = divmod(size, factor)
    spans, start = [], 0
    for i in range(factor):
        length = base + (1 if i < extra else 0)
        spans.append((start, length))
        start += length
    return spans


def grid_cells(size: int, factor: int) -> list[tuple[int, int, int, int]]:
    """Cells ``(top, left, height, width)`` in row-major order."""
    spans = grid_spans(size, factor)
    return [(top, left, h, w) for top, h in spans for left, w in spans]


def patch_ranks(image: int, ipc: int, factor: int) -> list[int]:
    """The ranks (0 = best) of the patches distilled image ``image`` is made of, in cell order."""
    return [image + ipc * j for j in range(factor * factor)]


def stitch(patches: list[np.ndarray], size: int, factor: int) -> np.ndarray:
    """Place ``factor²`` HWC uint8 patches (each already its cell's size) on a ``size × size`` canvas."""
    cells = grid_cells(size, factor)
    if len(patches) != len(cells):
        raise ValueError(f"need {len(cells)} patches for factor {factor}, got {len(patches)}")
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    for (top, left, h, w), patch in zip(cells, patches, strict=True):
        if patch.shape[:2] != (h, w):
            raise ValueError(f"patch of shape {patch.shape[:2]} does not fit a {h}x{w} cell")
        canvas[top:top + h, left:left + w] = patch
    return canvas
