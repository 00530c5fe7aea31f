"""Writing a distilled set: the one place that lays out its files (``raydd.io.distilled`` reads them back).

Every method, RDED and trajectory matching alike, hands the writer encoded images with what each was made of,
in any order; the writer writes each at once through a temporary name (so the caller keeps no image), numbered
per class in arrival order or as the caller numbers it, and at the end writes the manifest in class order (its
metadata says how the set was made), the soft labels when there are any, the montage and the stats. The run's
folder (``RunFolder.work``) is the writer's; moving it into place is the run's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raydd.io.atomic import write_json, write_parquet
from raydd.io.montage import write_montage
from raydd.io.names import check_class_names
from raydd.io.set_info import SetInfo

__all__ = ["DistilledSetWriter", "fixed_size_list"]

SUFFIXES = {"png": "png", "jpeg": "jpg"}


def fixed_size_list(array: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """Rows of a 2-D (or more) array as one Arrow fixed-size list each, flattened past the first axis."""
    width = int(np.prod(array.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1), dtype), width)


def _own(label: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Copies of a label's arrays: a caller's arrays may be views of a Ray batch in the object store, and keeping
    a view keeps the whole block, its images included, pinned there and mapped in the driver until the end."""
    return tuple(np.array(part, copy=True) for part in label)


class DistilledSetWriter:
    """Writes a distilled set's images as they come and keeps their (small) rows; then writes its manifest,
    labels, montage and stats.

    Args:
        folder: the run's work folder; images go under ``folder/images/<class>/``.
        classes: class names in class-index order (each must be one safe path component).
        image_format: ``png`` or ``jpeg`` (the suffix of the files; the bytes come encoded).

    Raises:
        UnsafeClassNameError: for a class name such as ``..`` or one with a separator, before anything is written.
    """

    def __init__(self, folder: Path, classes: Sequence[str], *, image_format: str = "png") -> None:
        if image_format not in SUFFIXES:
            raise ValueError(f"image_format must be one of {sorted(SUFFIXES)}")
        check_class_names(classes, source="the distilled set")
        self.folder = folder
        self.classes = list(classes)
        self.suffix = SUFFIXES[image_format]
        self._images: dict[tuple[int, int], dict[str, Any]] = {}
        self._counts: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._images)

    def add(self, class_index: int, encoded: bytes, *, sources: list[str], n: int | None = None,
            sha256: str | None = None, boxes: list[list[int]] | None = None, scores: list[float] | None = None,
            label: tuple[np.ndarray, ...] | None = None,
            patch_labels: Sequence[tuple[np.ndarray, ...]] = ()) -> str:
        """Write one image and record its row; returns its path in the set.

        ``n`` is its number within its class (the next one when not given; give all or none); ``sources`` the
        real images it was made of (per patch, with ``boxes`` and realism ``scores`` when the method has them: all
        images or none); ``label`` and ``patch_labels`` its soft labels as top-k (indices, logits[, tail]), the
        whole image's and each patch's, ``tail`` the mean and std of the logits outside the top-k (all labels or
        none). ``sha256`` saves hashing what a worker hashed.
        """
        if n is None:
            n = self._counts.get(class_index, 0)
        self._counts[class_index] = max(self._counts.get(class_index, 0), n + 1)
        if (class_index, n) in self._images:
            raise ValueError(f"image {n} of class {self.classes[class_index]!r} was added twice")
        name = self.classes[class_index]
        rel = f"images/{name}/{n:05d}.{self.suffix}"
        target = self.folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp")
        tmp.write_bytes(encoded)
        os.replace(tmp, target)
        self._images[class_index, n] = {
            "class_index": class_index, "class_name": name, "n": n, "file": rel,
            "sha256": sha256 or hashlib.sha256(encoded).hexdigest(), "patch_sources": list(sources),
            "patch_boxes": boxes, "patch_scores": scores,
            "labels": [(patch, _own(lb)) for patch, lb in ([(-1, label)] if label is not None else [])
                       + list(enumerate(patch_labels))]}
        return rel

    def _in_order(self) -> list[dict[str, Any]]:
        return [self._images[key] for key in sorted(self._images)]

    def manifest(self) -> pa.Table:
        """The manifest's rows so far, one per image, in class order and each class's numbering."""
        rows = self._in_order()
        columns = {k: [r[k] for r in rows] for k in ("class_index", "class_name", "n", "file", "sha256",
                                                      "patch_sources")}
        for key in ("patch_boxes", "patch_scores"):
            given = [r[key] for r in rows if r[key] is not None]
            if given and len(given) != len(rows):
                raise ValueError(f"{key} were given for {len(given)} of {len(rows)} images: give them for all or none")
            if given:
                columns[key] = given
        return pa.table(columns)

    def finish(self, info: SetInfo, stats: dict[str, Any]) -> pa.Table:
        """Write ``manifest.parquet`` (``info`` as its metadata), ``soft_labels.parquet`` (when images had
        labels), ``montage.png`` and ``stats.json``; returns the manifest."""
        if not len(self):
            raise ValueError("a distilled set needs at least one image")
        manifest = self.manifest()
        write_parquet(manifest.replace_schema_metadata({b"raydd": info.to_json()}),
                      self.folder / "manifest.parquet")
        labels = [(image, patch, label) for image, row in enumerate(self._in_order()) for patch, label in row["labels"]]
        if labels:
            soft = pa.table({"image": pa.array([i for i, _, _ in labels], pa.int32()),
                             "patch": pa.array([p for _, p, _ in labels], pa.int8()),
                             "indices": fixed_size_list(np.stack([lb[0] for _, _, lb in labels]).astype(np.int32),
                                                        pa.int32()),
                             "logits": fixed_size_list(np.stack([lb[1] for _, _, lb in labels]).astype(np.float16),
                                                       pa.float16())})
            tails = [lb[2] for _, _, lb in labels if len(lb) > 2]
            if tails and len(tails) != len(labels):
                raise ValueError(f"{len(tails)} of {len(labels)} soft labels have a tail: give it for all or none")
            if tails:
                soft = soft.append_column("tail", fixed_size_list(np.stack(tails).astype(np.float32), pa.float32()))
            write_parquet(soft, self.folder / "soft_labels.parquet")
        write_montage(self.folder, manifest, self.classes, self.folder / "montage.png")
        write_json(stats, self.folder / "stats.json")
        return manifest
