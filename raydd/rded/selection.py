"""Step 4 of RDED: keep each image's best crop, then each class's best images.

Selection is a partial top-k: each block of scores keeps only its ``k`` best per class, and the partial
results combine into the global answer (the top-k of a union is the top-k of the blocks' top-k's), so no
full sort or shuffle of all crops ever happens. Ties break by image id, making the result independent of
how rows were split into blocks.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

__all__ = ["best_crops", "combine_topk", "partial_topk", "rank_selected"]


def best_crops(crop_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image (row): the index of its lowest-scoring crop and that score; NaN rows give (−1, +inf)."""
    filled = np.where(np.isnan(crop_scores), np.inf, crop_scores)
    index = filled.argmin(axis=1)
    score = filled[np.arange(len(filled)), index]
    return np.where(np.isinf(score), -1, index), score


def partial_topk(table: pa.Table, k: int) -> pa.Table:
    """Rows of ``table`` (``class_index``, ``image_id``, ``score``, …) that are among the ``k`` lowest scores
    of their class in this table, ordered by (class, score, image id). Unscored rows (inf) never qualify."""
    classes = table.column("class_index").to_numpy()
    scores = table.column("score").to_numpy()
    ids = table.column("image_id").to_numpy()
    order = np.lexsort((ids, scores, classes))
    sorted_classes = classes[order]
    starts = np.searchsorted(sorted_classes, sorted_classes, side="left")
    rank = np.arange(len(order)) - starts
    keep = order[(rank < k) & np.isfinite(scores[order])]
    return table.take(pa.array(keep, type=pa.int64()))


def combine_topk(parts: Iterable[pa.Table], k: int) -> pa.Table:
    """Merge partial top-k tables into the global per-class top-k."""
    tables = [p for p in parts if p.num_rows]
    if not tables:
        raise ValueError("no scored images to select from")
    return partial_topk(pa.concat_tables(tables), k)


def rank_selected(topk: pa.Table) -> dict[int, pa.Table]:
    """Per class: its selected rows, best first (the order stitching takes them in)."""
    out: dict[int, pa.Table] = {}
    classes = topk.column("class_index").to_numpy()
    for c in np.unique(classes):
        out[int(c)] = topk.filter(pa.array(classes == c))
    return out
