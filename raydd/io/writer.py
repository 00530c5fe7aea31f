"""Writing a distilled set: the one place that lays out its files (``raydd.io.distilled`` reads them back).

Every method, RDED and trajectory matching alike, hands the writer encoded images with what each was made of,
in any order; the writer writes each at once through a temporary name (so the caller keeps no image), numbered
per class in arrival order or as the caller numbers it, keeps its row and labels in compact Arrow chunks (the
driver's memory grows by bytes an image), and at the end writes the manifest in class order (its
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


MANIFEST_SCHEMA = pa.schema([("class_index", pa.int64()), ("class_name", pa.string()), ("n", pa.int64()),
                             ("file", pa.string()), ("sha256", pa.string()), ("patch_sources", pa.list_(pa.string())),
                             ("patch_boxes", pa.list_(pa.list_(pa.int64()))), ("patch_scores", pa.list_(pa.float64()))])
OPTIONAL = ("patch_boxes", "patch_scores")  # a method gives them for every image or for none
CHUNK = 256  # images whose rows are kept as Python objects before they become one compact Arrow chunk


class DistilledSetWriter:
    """Writes a distilled set's images as they come and keeps their rows compactly (Arrow chunks of ``CHUNK``
    images, so that the driver's memory grows by bytes an image, not by Python objects); then writes its
    manifest, labels, montage and stats.

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
        self._counts: dict[int, int] = {}
        self._added: set[tuple[int, int]] = set()
        self._given = dict.fromkeys(OPTIONAL, 0)
        self._tails = 0  # soft labels given with a tail: all or none
        self._rows: list[dict[str, Any]] = []  # since the last chunk
        self._labels: list[tuple[int, int, int, tuple[np.ndarray, ...]]] = []
        self._row_chunks: list[pa.Table] = []
        self._label_chunks: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._added)

    def add(self, class_index: int, encoded: bytes, *, sources: list[str], n: int | None = None,
            sha256: str | None = None, boxes: list[list[int]] | None = None, scores: list[float] | None = None,
            label: tuple[np.ndarray, ...] | None = None,
            patch_labels: Sequence[tuple[np.ndarray, ...]] = ()) -> str:
        """Write one image and record its row; returns its path in the set.

        ``n`` is its number within its class (the next one when not given; give all or none); ``sources`` the
        real images it was made of (per patch, with ``boxes`` and realism ``scores`` when the method has them: all
        images or none); ``label`` and ``patch_labels`` its soft labels as top-k (indices, logits[, tail]), the
        whole image's and each patch's, ``tail`` the mean and std of the logits outside the top-k (all labels or
        none). ``sha256`` saves hashing what a worker hashed. The label arrays are copied: a caller's may be views
        of a Ray batch, and keeping a view would keep the whole block, images included, in the object store.
        """
        if n is None:
            n = self._counts.get(class_index, 0)
        self._counts[class_index] = max(self._counts.get(class_index, 0), n + 1)
        if (class_index, n) in self._added:
            raise ValueError(f"image {n} of class {self.classes[class_index]!r} was added twice")
        self._added.add((class_index, n))
        name = self.classes[class_index]
        rel = f"images/{name}/{n:05d}.{self.suffix}"
        target = self.folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp")
        tmp.write_bytes(encoded)
        os.replace(tmp, target)
        self._rows.append({"class_index": class_index, "class_name": name, "n": n, "file": rel,
                           "sha256": sha256 or hashlib.sha256(encoded).hexdigest(), "patch_sources": list(sources),
                           "patch_boxes": boxes, "patch_scores": scores})
        for key, value in (("patch_boxes", boxes), ("patch_scores", scores)):
            self._given[key] += value is not None
        labels = ([(-1, label)] if label is not None else []) + list(enumerate(patch_labels))
        self._labels += [(class_index, n, patch, tuple(np.array(part, copy=True) for part in lb))
                         for patch, lb in labels]
        self._tails += sum(len(lb) > 2 for _, lb in labels)
        if len(self._rows) >= CHUNK:
            self._compact()
        return rel

    def _compact(self) -> None:
        """The rows and labels kept since the last chunk, as one Arrow table and a few arrays."""
        if self._rows:
            self._row_chunks.append(pa.table({k: [r[k] for r in self._rows] for k in MANIFEST_SCHEMA.names},
                                             schema=MANIFEST_SCHEMA))
            self._rows = []
        if self._labels:
            tails = [lb[2] for *_, lb in self._labels if len(lb) > 2]
            chunk = {"class_index": np.array([c for c, *_ in self._labels], np.int64),
                     "n": np.array([n for _, n, *_ in self._labels], np.int64),
                     "patch": np.array([p for _, _, p, _ in self._labels], np.int8),
                     "indices": np.stack([lb[0] for *_, lb in self._labels]).astype(np.int32),
                     "logits": np.stack([lb[1] for *_, lb in self._labels]).astype(np.float16)}
            if tails:
                chunk["tail"] = np.stack(tails).astype(np.float32)
            self._label_chunks.append(chunk)
            self._labels = []

    def manifest(self) -> pa.Table:
        """The manifest's rows so far, one per image, in class order and each class's numbering."""
        self._compact()
        table = pa.concat_tables(self._row_chunks) if self._row_chunks else MANIFEST_SCHEMA.empty_table()
        for key in OPTIONAL:
            given = self._given[key]
            if given and given != table.num_rows:
                raise ValueError(f"{key} were given for {given} of {table.num_rows} images: give them for all or none")
            if not given:
                table = table.drop_columns([key])
        order = np.lexsort((table["n"].to_numpy(), table["class_index"].to_numpy()))
        return table.take(pa.array(order)).combine_chunks()

    def _soft_labels(self, manifest: pa.Table) -> pa.Table | None:
        """Every label's row, its image numbered by the manifest's order, each image's own label first."""
        if not self._label_chunks:
            return None
        labels = sum(len(c["patch"]) for c in self._label_chunks)
        if self._tails and self._tails != labels:
            raise ValueError(f"{self._tails} of {labels} soft labels have a tail: give it for all or none")
        parts = {k: np.concatenate([c[k] for c in self._label_chunks]) for k in self._label_chunks[0]}
        width = int(manifest["n"].to_numpy().max()) + 1  # every label's image is in the manifest
        keys = manifest["class_index"].to_numpy() * width + manifest["n"].to_numpy()  # ascending: class order
        image = np.searchsorted(keys, parts["class_index"] * width + parts["n"])
        order = np.lexsort((parts["patch"], image))
        soft = pa.table({"image": pa.array(image[order], pa.int32()), "patch": pa.array(parts["patch"][order]),
                         "indices": fixed_size_list(parts["indices"][order], pa.int32()),
                         "logits": fixed_size_list(parts["logits"][order], pa.float16())})
        if "tail" in parts:
            soft = soft.append_column("tail", fixed_size_list(parts["tail"][order], pa.float32()))
        return soft

    def finish(self, info: SetInfo, stats: dict[str, Any]) -> pa.Table:
        """Write ``manifest.parquet`` (``info`` as its metadata), ``soft_labels.parquet`` (when images had
        labels), ``montage.png`` and ``stats.json``; returns the manifest."""
        if not len(self):
            raise ValueError("a distilled set needs at least one image")
        manifest = self.manifest()
        write_parquet(manifest.replace_schema_metadata({b"raydd": info.to_json()}),
                      self.folder / "manifest.parquet")
        soft = self._soft_labels(manifest)
        if soft is not None:
            write_parquet(soft, self.folder / "soft_labels.parquet")
        write_montage(self.folder, manifest, self.classes, self.folder / "montage.png")
        write_json(stats, self.folder / "stats.json")
        return manifest
