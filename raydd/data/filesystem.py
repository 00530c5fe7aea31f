"""Paths on local disk or any pyarrow filesystem (s3://, gs://, hdfs://, hf://) behind one interface; schemes
pyarrow has no filesystem for come from fsspec (gcsfs, adlfs, a filesystem a user registers) through
``pyarrow.fs.FSSpecHandler``."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["join", "read_bytes", "resolve"]


def resolve(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem a path lives on and the path within it (local paths made absolute).

    Raises:
        ValueError: for a URI whose scheme neither pyarrow nor fsspec (when installed) knows.
    """
    text = str(path)
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(text)
    except pa.ArrowInvalid as error:
        if "Unrecognized filesystem type" not in str(error):
            raise
        return _from_fsspec(text, error)


def _from_fsspec(uri: str, arrow_error: Exception) -> tuple[pafs.FileSystem, str]:
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as error:  # no fsspec, or a protocol it does not know either
        raise ValueError(f"{uri}: pyarrow has no filesystem for this scheme ({arrow_error}) and fsspec has none "
                         f"either ({error}); install the fsspec package for it (gcsfs, adlfs, …)") from error
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """A whole file in one request: a stream needs no size first (``open_input_file`` asks an object store for
    it with a HEAD before the GET)."""
    with fs.open_input_stream(path, compression=None) as f:
        return f.read()
