"""Writing a distilled set: the one place that lays out its files (``raydd.io.distilled`` reads them back).

Every method, RDED and trajectory matching alike, hands the writer encoded images in class order with what
each was made of; the writer numbers them per class, writes each through a temporary name, and at the end
writes the manifest (its metadata says how the set was made), the soft labels when there are any, the montage
and the stats. The run's folder (``RunFolder.work``) is the writer's; moving it into place is the run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raydd.io.distilled import write_json, write_parquet
from raydd.io.montage import write_montage

__all__ = ["DistilledSetWriter", "fixed_size_list"]

SUFFIXES = {"png": "png", "jpeg": "jpg"}


def fixed_size_list(array: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """Rows of a 2-D (or more) array as one Arrow fixed-size list each, flattened past the first axis."""
    width = int(np.prod(array.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1), dtype), width)


class DistilledSetWriter:
    """Collects a distilled set's images and rows, then writes its manifest, labels, montage and stats.

    Args:
        folder: the run's work folder; images go under ``folder/images/<class>/``.
        classes: class names in class-index order.
        image_format: ``png`` or ``jpeg`` (the suffix of the files; the bytes come encoded).
    """

    def __init__(self, folder: Path, classes: Sequence[str], *, image_format: str = "png") -> None:
        if image_format not in SUFFIXES:
            raise ValueError(f"image_format must be one of {sorted(SUFFIXES)}")
        self.folder = folder
        self.classes = list(classes)
        self.suffix = SUFFIXES[image_format]
        self._rows: dict[str, list] = {k: [] for k in ("class_index", "class_name", "n", "file", "sha256",
                                                        "patch_sources")}
        self._patch_boxes: list[list[list[int]]] = []
        self._patch_scores: list[list[float]] = []
        self._labels: dict[str, list] = {"image": [], "patch": [], "indices": [], "logits": []}
        self._counts: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._rows["file"])

    def add(self, class_index: int, encoded: bytes, *, sources: list[str], sha256: str | None = None,
            boxes: list[list[int]] | None = None, scores: list[float] | None = None,
            label: tuple[np.ndarray, np.ndarray] | None = None,
            patch_labels: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> str:
        """Write one image (the next of its class) and record its row; returns its path in the set.

        ``sources`` are the real images it was made of (per patch, with ``boxes`` and realism ``scores`` when
        the method has them: all images or none); ``label`` and ``patch_labels`` its soft labels as top-k
        (indices, logits), the whole image's and each patch's. ``sha256`` saves hashing what a worker hashed.
        """
        n = self._counts.get(class_index, 0)
        self._counts[class_index] = n + 1
        name = self.classes[class_index]
        rel = f"images/{name}/{n:05d}.{self.suffix}"
        target = self.folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp")
        tmp.write_bytes(encoded)
        os.replace(tmp, target)
        image = len(self)
        self._rows["class_index"].append(class_index)
        self._rows["class_name"].append(name)
        self._rows["n"].append(n)
        self._rows["file"].append(rel)
        self._rows["sha256"].append(sha256 or hashlib.sha256(encoded).hexdigest())
        self._rows["patch_sources"].append(list(sources))
        if boxes is not None:
            self._patch_boxes.append(boxes)
        if scores is not None:
            self._patch_scores.append(scores)
        if label is not None:
            self._add_label(image, -1, label)
        for p, patch_label in enumerate(patch_labels):
            self._add_label(image, p, patch_label)
        return rel

    def _add_label(self, image: int, patch: int, label: tuple[np.ndarray, np.ndarray]) -> None:
        self._labels["image"].append(image)
        self._labels["patch"].append(patch)
        self._labels["indices"].append(label[0])
        self._labels["logits"].append(label[1])

    def manifest(self) -> pa.Table:
        """The manifest's rows so far (one per image, in the order they were added)."""
        columns = dict(self._rows)
        for key, values in (("patch_boxes", self._patch_boxes), ("patch_scores", self._patch_scores)):
            if values and len(values) != len(self):
                raise ValueError(f"{key} were given for {len(values)} of {len(self)} images: give them for all or none")
            if values:
                columns[key] = values
        return pa.table(columns)

    def finish(self, info: dict[str, Any], stats: dict[str, Any]) -> pa.Table:
        """Write ``manifest.parquet`` (``info`` as its metadata), ``soft_labels.parquet`` (when images had
        labels), ``montage.png`` and ``stats.json``; returns the manifest."""
        if not len(self):
            raise ValueError("a distilled set needs at least one image")
        manifest = self.manifest()
        write_parquet(manifest.replace_schema_metadata({b"raydd": json.dumps(info).encode()}),
                      self.folder / "manifest.parquet")
        if self._labels["image"]:
            labels = self._labels
            soft = pa.table({"image": pa.array(labels["image"], pa.int32()),
                             "patch": pa.array(labels["patch"], pa.int8()),
                             "indices": fixed_size_list(np.stack(labels["indices"]).astype(np.int32), pa.int32()),
                             "logits": fixed_size_list(np.stack(labels["logits"]).astype(np.float16), pa.float16())})
            write_parquet(soft, self.folder / "soft_labels.parquet")
        write_montage(self.folder, manifest, self.classes, self.folder / "montage.png")
        write_json(stats, self.folder / "stats.json")
        return manifest
