"""Paths on local disk or any pyarrow filesystem (s3://, gs://, hdfs://) behind one interface."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pyarrow.fs as pafs

__all__ = ["join", "read_bytes", "resolve"]


def resolve(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem a path lives on and the path within it (local paths made absolute)."""
    text = str(path)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """A whole file in one request: a stream needs no size first (``open_input_file`` asks an object store for
    it with a HEAD before the GET)."""
    with fs.open_input_stream(path, compression=None) as f:
        return f.read()
