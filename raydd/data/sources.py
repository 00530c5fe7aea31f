"""Image sources: what images exist and their class, listed without decoding a single one.

Two layouts are supported:

* an ImageFolder, ``root/<class>/<file>``, on local disk or any pyarrow filesystem;
* a Parquet table (file or folder of files) with an image-bytes column and a class-name column.

Each image gets a stable reference string: the file path, or ``table.parquet#ROW`` for a Parquet row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydd.data.filesystem import read_bytes, resolve

__all__ = ["IMAGE_EXTENSIONS", "ImageIndex", "list_images", "read_image_bytes"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_PARQUET_ROW = "#"


@dataclass(frozen=True)
class ImageIndex:
    """Every image of a source: references grouped by class folder name (both sorted).

    References are paths within the source's filesystem (``filesystem()``), so that a URI's options
    (an S3 endpoint, a region) are stated once, in ``root``.
    """

    root: str
    files: dict[str, list[str]]

    def filesystem(self) -> pafs.FileSystem:
        return resolve(self.root)[0]

    @property
    def classes(self) -> list[str]:
        return sorted(self.files)

    def __len__(self) -> int:
        return sum(len(v) for v in self.files.values())

    def counts(self) -> dict[str, int]:
        return {c: len(v) for c, v in sorted(self.files.items())}


def list_images(root: str | Path, *, image_column: str = "image", label_column: str = "label") -> ImageIndex:
    """List a source's images by class without reading their pixels.

    Examples:
        >>> index = list_images("data/train")          # doctest: +SKIP
        >>> index.classes[:2], len(index)              # doctest: +SKIP
        (['airplane', 'automobile'], 50000)

    Args:
        root: an ImageFolder root, a ``.parquet`` file, or a folder of ``.parquet`` files; local or a URI.
        image_column: Parquet only: the column of encoded image bytes (or a struct with a ``bytes`` field).
        label_column: Parquet only: the column of class names.

    Raises:
        FileNotFoundError: when ``root`` does not exist or holds no images.
    """
    fs, path = resolve(root)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such image source: {root}")
    if info.type == pafs.FileType.File and path.endswith(".parquet"):
        files = _list_parquet(fs, [path], image_column, label_column)
    else:
        entries = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        parquet = sorted(e.path for e in entries if e.is_file and e.path.endswith(".parquet"))
        files = (_list_parquet(fs, parquet, image_column, label_column) if parquet
                 else _list_folder(fs, path, entries))
    if not files:
        raise FileNotFoundError(f"{root}: no images found (expected root/<class>/<image> or Parquet files)")
    return ImageIndex(root=str(root) if "://" in str(root) else path, files=files)


def _list_folder(fs: pafs.FileSystem, root: str, entries: Iterable[pafs.FileInfo]) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for entry in entries:
        if entry.type != pafs.FileType.Directory or entry.base_name.startswith("."):
            continue
        if isinstance(fs, pafs.LocalFileSystem):
            images = _walk_local(entry.path)
        else:
            images = [e.path for e in fs.get_file_info(pafs.FileSelector(entry.path, recursive=True))
                      if e.is_file and e.path.lower().endswith(IMAGE_EXTENSIONS)]
        if images:
            files[entry.base_name] = sorted(images)
    return files


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


def _list_parquet(fs: pafs.FileSystem, paths: Sequence[str], image_column: str,
                  label_column: str) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for path in paths:
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            if image_column not in parquet.schema_arrow.names:
                raise ValueError(f"{path}: no image column {image_column!r}")
            table = parquet.read(columns=[label_column])
        for row, label in enumerate(table.column(label_column).to_pylist()):
            files.setdefault(str(label), []).append(f"{path}{_PARQUET_ROW}{row}")
    return files


def read_image_bytes(refs: Sequence[str], filesystem: pafs.FileSystem | None = None, *,
                     image_column: str = "image") -> list[bytes | None]:
    """Encoded bytes for each reference (``None`` where the file cannot be read), in order.

    Parquet rows of one file are read with one table read.
    """
    fs = filesystem or pafs.LocalFileSystem()
    out: list[bytes | None] = [None] * len(refs)
    by_table: dict[str, list[tuple[int, int]]] = {}
    for i, ref in enumerate(refs):
        path, sep, row = ref.rpartition(_PARQUET_ROW)
        if sep and path.endswith(".parquet"):
            by_table.setdefault(path, []).append((i, int(row)))
            continue
        try:
            out[i] = read_bytes(fs, ref)
        except OSError:
            out[i] = None
    for path, wanted in by_table.items():
        with fs.open_input_file(path) as f:
            column = pq.read_table(f, columns=[image_column]).column(image_column)
        rows = column.take(pa.array([r for _, r in wanted])).to_pylist()
        for (i, _), value in zip(wanted, rows, strict=True):
            out[i] = value["bytes"] if isinstance(value, dict) else value
    return out
