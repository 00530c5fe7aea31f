"""Image sources: what images exist and their class, listed without decoding a single one.

Two layouts are supported:

* an ImageFolder, ``root/<class>/<file>``, on local disk or any pyarrow filesystem;
* a Parquet table (file or folder of files) with an image-bytes column and a class column: class names, or
  integers whose names the file's Hugging Face metadata gives (a ``ClassLabel``).

Each image gets a stable reference string: the file path, or ``table.parquet#ROW`` for a Parquet row.

Object stores answer each request after tens of milliseconds, so every read here keeps up to ``max_in_flight``
requests going at once (files, class-folder listings, Parquet shards), returning the results in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydd.data.filesystem import read_bytes, resolve
from raydd.io.names import check_class_names

__all__ = ["IMAGE_EXTENSIONS", "MAX_IN_FLIGHT", "ImageIndex", "list_images", "read_image_bytes"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
MAX_IN_FLIGHT = 32  # requests in flight per reading task: ~600 files/s per task at 50 ms a request
_PARQUET_ROW = "#"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ImageIndex:
    """Every image of a source: references grouped by class name.

    References are paths within the source's filesystem (``filesystem()``), so that a URI's options
    (an S3 endpoint, a region) are stated once, in ``root``. ``order`` is the source's own class order where it
    has one (integer labels: label 0 first); otherwise classes are sorted by name.
    """

    root: str
    files: dict[str, list[str]]
    order: tuple[str, ...] = ()

    def filesystem(self) -> pafs.FileSystem:
        return resolve(self.root)[0]

    @property
    def classes(self) -> list[str]:
        return list(self.order) if self.order else sorted(self.files)

    def __len__(self) -> int:
        return sum(len(v) for v in self.files.values())

    def counts(self) -> dict[str, int]:
        return {c: len(self.files[c]) for c in self.classes}


def in_flight(fn: Callable[[T], R], items: Iterable[T], max_in_flight: int = MAX_IN_FLIGHT) -> list[R]:
    """``[fn(item) for item in items]`` with up to ``max_in_flight`` calls running at once (I/O waits release
    the GIL), in the items' order."""
    items = list(items)
    if max_in_flight <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(max_in_flight, len(items))) as pool:
        return list(pool.map(fn, items))


def list_images(root: str | Path, *, image_column: str = "image", label_column: str = "label",
                max_in_flight: int = MAX_IN_FLIGHT) -> ImageIndex:
    """List a source's images by class without reading their pixels.

    Examples:
        >>> index = list_images("data/train")          # doctest: +SKIP
        >>> index.classes[:2], len(index)              # doctest: +SKIP
        (['airplane', 'automobile'], 50000)

    Args:
        root: an ImageFolder root, a ``.parquet`` file, or a folder of ``.parquet`` files; local or a URI.
        image_column: Parquet only: the column of encoded image bytes (or a struct with a ``bytes`` field).
        label_column: Parquet only: the column of class names, or of integer labels.
        max_in_flight: listings (one per class folder) or Parquet footers read at once.

    Raises:
        FileNotFoundError: when ``root`` does not exist or holds no images.
        UnsafeClassNameError: for a class name that is not one safe path component (``..``, a separator).
    """
    fs, path = resolve(root)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such image source: {root}")
    order: tuple[str, ...] = ()
    if info.type == pafs.FileType.File and path.endswith(".parquet"):
        files, order = _list_parquet(fs, [path], image_column, label_column, max_in_flight)
    else:
        entries = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        parquet = sorted(e.path for e in entries if e.is_file and e.path.endswith(".parquet"))
        files, order = (_list_parquet(fs, parquet, image_column, label_column, max_in_flight) if parquet
                        else (_list_folder(fs, entries, max_in_flight), ()))
    if not files:
        raise FileNotFoundError(f"{root}: no images found (expected root/<class>/<image> or Parquet files)")
    check_class_names(files, source=str(root))
    return ImageIndex(root=str(root) if "://" in str(root) else path, files=files,
                      order=tuple(c for c in order if c in files))


def _list_folder(fs: pafs.FileSystem, entries: Iterable[pafs.FileInfo], max_in_flight: int) -> dict[str, list[str]]:
    folders = [e for e in entries if e.type == pafs.FileType.Directory and not e.base_name.startswith(".")]

    def images(entry: pafs.FileInfo) -> list[str]:
        if isinstance(fs, pafs.LocalFileSystem):
            return _walk_local(entry.path)
        return [e.path for e in fs.get_file_info(pafs.FileSelector(entry.path, recursive=True))
                if e.is_file and e.path.lower().endswith(IMAGE_EXTENSIONS)]

    listed = in_flight(images, folders, max_in_flight if not isinstance(fs, pafs.LocalFileSystem) else 1)
    return {entry.base_name: sorted(found) for entry, found in zip(folders, listed, strict=True) if found}


def _walk_local(folder: str) -> list[str]:
    """The image files under a local class folder. Symlinked folders are followed (subsets of ImageNet are often
    built from links), each real folder once: a link back to an ancestor is not followed round and round. Only
    regular files count (a FIFO named ``x.jpg`` would block its reader forever)."""
    seen: set[tuple[int, int]] = set()
    images = []
    for path, folders, names in os.walk(folder, followlinks=True):
        stat = os.stat(path)
        if (stat.st_dev, stat.st_ino) in seen:
            folders.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        for name in names:
            full = os.path.join(path, name)
            if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(full):
                images.append(full)
    return images


def _list_parquet(fs: pafs.FileSystem, paths: Sequence[str], image_column: str, label_column: str,
                  max_in_flight: int) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """Class name → rows, and the class order when the labels are integers (label 0 first)."""
    def labels(path: str) -> tuple[pa.ChunkedArray, list[str] | None]:
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            if image_column not in parquet.schema_arrow.names:
                raise ValueError(f"{path}: no image column {image_column!r}")
            table = parquet.read(columns=[label_column])
        return table.column(label_column), _class_label_names(parquet.schema_arrow, label_column)

    read = in_flight(labels, paths, max_in_flight)
    integer = all(pa.types.is_integer(column.type) for column, _ in read)
    name_of = _integer_class_names(next((n for _, n in read if n is not None), None)) if integer else str
    files: dict[str, list[str]] = {}
    seen: set[int] = set()
    for path, (column, _) in zip(paths, read, strict=True):
        values = column.to_pylist()
        for row, label in enumerate(values):
            if label is None:  # an unlabelled row belongs to no class
                continue
            if integer:
                seen.add(label)
            files.setdefault(name_of(label), []).append(f"{path}{_PARQUET_ROW}{row}")
    return files, tuple(name_of(label) for label in sorted(seen)) if integer else ()


def _class_label_names(schema: pa.Schema, column: str) -> list[str] | None:
    """The names of a Hugging Face ``ClassLabel`` column, from the schema's ``huggingface`` metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][column]
    except (ValueError, KeyError, TypeError):
        return None
    names = feature.get("names") if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" else None
    return [str(n) for n in names] if isinstance(names, list) else None


def _integer_class_names(names: list[str] | None) -> Callable[[int], str]:
    """How an integer label becomes a class name: ImageNet-1K's wnid when the ``ClassLabel`` names are ImageNet's
    1000 classes in the standard index order (so ``--class-map imagenet`` works as on wnid folders), else the
    label's name (its number appended where two labels share a name), else the number itself."""
    if names is None:
        return str
    if is_imagenet_order(names):
        from raydd.data.class_map import imagenet_wnids

        wnids = imagenet_wnids()
        return lambda label: wnids[label] if 0 <= label < len(wnids) else str(label)  # -1: Hugging Face's "no label"
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    unique = [name if seen[name] == 1 else f"{name} ({i})" for i, name in enumerate(names)]
    return lambda label: unique[label] if 0 <= label < len(unique) else str(label)


def is_imagenet_order(names: Sequence[str]) -> bool:
    """Whether 1000 class names are ImageNet-1K's in the standard index order (Hugging Face's ``imagenet-1k``
    labels: "tench, Tinca tinca", "goldfish, Carassius auratus", …): at least 95 % of their first synonyms equal
    torchvision's ImageNet category names at the same index (a few of those were renamed to be unique)."""
    if len(names) != 1000:
        return False
    from torchvision.models import ResNet18_Weights

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    same = sum(name.split(",")[0].strip().lower() == category.lower()
               for name, category in zip(names, categories, strict=True))
    return same >= 950


def read_image_bytes(refs: Sequence[str], filesystem: pafs.FileSystem | None = None, *,
                     image_column: str = "image", max_in_flight: int = MAX_IN_FLIGHT) -> list[bytes | None]:
    """Encoded bytes for each reference (``None`` where the file cannot be read), in order.

    Files are read with up to ``max_in_flight`` requests at once, each one GET (no HEAD). Parquet rows are read
    by row group: only the row groups that hold a wanted row, each once per call.
    """
    fs = filesystem or pafs.LocalFileSystem()
    out: list[bytes | None] = [None] * len(refs)
    files: list[int] = []
    by_table: dict[str, list[tuple[int, int]]] = {}
    for i, ref in enumerate(refs):
        path, sep, row = ref.rpartition(_PARQUET_ROW)
        if sep and path.endswith(".parquet"):
            by_table.setdefault(path, []).append((i, int(row)))
        else:
            files.append(i)

    def read_file(i: int) -> bytes | None:
        try:
            return read_bytes(fs, refs[i])
        except OSError:
            return None

    tables = list(by_table.items())
    jobs: list[Callable[[], object]] = [lambda i=i: read_file(i) for i in files]
    jobs += [lambda t=t: _read_parquet_rows(fs, t[0], [r for _, r in t[1]], image_column) for t in tables]
    results = in_flight(lambda job: job(), jobs, max_in_flight)
    for i, data in zip(files, results, strict=False):
        out[i] = data
    for (_, wanted), values in zip(tables, results[len(files):], strict=True):
        for (i, _), value in zip(wanted, values, strict=True):
            out[i] = value
    return out


def _read_parquet_rows(fs: pafs.FileSystem, path: str, rows: Sequence[int], column: str) -> list[bytes | None]:
    """The image bytes of ``rows`` of one Parquet file, reading only the row groups that hold them."""
    with fs.open_input_file(path) as f:
        parquet = pq.ParquetFile(f)
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        wanted = np.asarray(rows, dtype=np.int64)
        groups = np.searchsorted(starts, wanted, side="right") - 1
        needed = sorted(set(groups.tolist()))
        values = parquet.read_row_groups(needed, columns=[column]).column(column)
    offset = {g: int(sum(sizes[h] for h in needed[:k])) for k, g in enumerate(needed)}
    local = [offset[g] + int(r - starts[g]) for g, r in zip(groups.tolist(), wanted.tolist(), strict=True)]
    taken = values.take(pa.array(local, pa.int64())).to_pylist()
    return [v["bytes"] if isinstance(v, dict) else v for v in taken]
