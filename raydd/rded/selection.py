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

__all__ = ["best_crops", "combine_topk", "in_doubt", "partial_topk"]


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


def in_doubt(classes: np.ndarray, crop_scores: np.ndarray, per_class: int, gap: float) -> np.ndarray:
    """Which images a relative error below ``gap`` on every score could move across their class's cut-off, or
    (among those that could be selected) give another best crop. Two scores ``a < b`` can swap only when
    ``a·(1 + gap) >= b·(1 − gap)``.

    TF32's scores differ from fp32's by 0.8 % (median), 4.7 % (99th percentile) of the score itself on Imagenette;
    only where two scores are that close can the order change: with a gap of 0.05, rescoring the 3 % of images in
    doubt in fp32 gave fp32's selection exactly (BENCHMARKS.md).
    """
    with np.errstate(invalid="ignore"):
        ordered = np.sort(np.where(np.isnan(crop_scores), np.inf, crop_scores), axis=1)
        score = ordered[:, 0]
        runner_up = ordered[:, 1] if ordered.shape[1] > 1 else np.full(len(ordered), np.inf)
        unclear_crop = score * (1 + gap) >= runner_up * (1 - gap)
    doubt = np.zeros(len(score), dtype=bool)
    for c in np.unique(classes):
        rows = np.flatnonzero((classes == c) & np.isfinite(score))
        if len(rows) <= per_class:
            continue  # every scored image is selected: only the best crops can change
        ranked = np.sort(score[rows])
        last_in, first_out = ranked[per_class - 1], ranked[per_class]
        inside = score[rows] <= last_in
        crosses = np.where(inside, score[rows] * (1 + gap) >= first_out * (1 - gap),
                           score[rows] * (1 - gap) <= last_in * (1 + gap))
        doubt[rows] = crosses | ((inside | crosses) & unclear_crop[rows])
    return doubt
