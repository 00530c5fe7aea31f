"""Outputs on object storage (s3://, gs://, any pyarrow filesystem) with the guarantees of local ones.

Object stores have no directory rename, so a remote run is built in a local mirror of its URI
(``$RAYDD_CACHE/remote/<scheme>/<bucket>/<path>``, default ``~/.cache/raydd``) exactly like a local run, then
uploaded file by file with the marker ``raydd.json`` written last: a reader that finds the marker complete
finds every file. Reading a remote set downloads it into the same mirror once.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
from pathlib import Path

import pyarrow.fs as pafs

__all__ = ["delete_tree", "download_file", "download_tree", "fetch", "is_remote", "list_files", "mirror_of",
           "read_text", "remote_is_empty", "upload_file", "upload_tree", "write_remote_text"]


def is_remote(path: str | Path) -> bool:
    text = str(path)
    return "://" in text and not text.startswith("file://")


def mirror_of(uri: str) -> Path:
    """The local folder that mirrors ``uri`` (the same on every rerun, so that partial runs resume)."""
    scheme, rest = uri.split("://", 1)
    cache = Path(os.environ.get("RAYDD_CACHE", "~/.cache/raydd")).expanduser()
    return cache / "remote" / scheme / rest.strip("/")


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def read_text(uri: str) -> str | None:
    """The text of a remote file, or None when there is none."""
    fs, path = _resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_remote_text(uri: str, text: str) -> None:
    """Write a small remote file (an object store replaces it whole)."""
    fs, path = _resolve(uri)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def remote_is_empty(uri: str) -> bool:
    fs, path = _resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return True
    if info.type == pafs.FileType.File:
        return False
    return not fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))


def list_files(uri: str, pattern: str = "*", *, recursive: bool = False) -> list[str]:
    """Sorted paths, relative to ``uri``, of the files under it that match ``pattern`` (none if it is absent)."""
    fs, path = _resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    names = (posixpath.relpath(i.path, path) for i in infos if i.type == pafs.FileType.File)
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def fetch(uri: str) -> Path:
    """The local mirror copy of a remote file, downloaded the first time it is asked for."""
    local = mirror_of(uri)
    if not local.exists():
        download_file(uri, local)
    return local


def upload_file(local: Path, uri: str) -> None:
    fs, path = _resolve(uri)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def download_file(uri: str, local: Path) -> None:
    """Download through a temporary name: concurrent readers never see half a file."""
    fs, path = _resolve(uri)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
    pafs.copy_files(path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    os.replace(tmp, local)


def upload_tree(local: Path, uri: str, *, last: str | None = None) -> None:
    """Copy every file under ``local`` to ``uri``; ``last`` (a relative name) goes after all the others."""
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    for rel in sorted(files, key=lambda rel: rel == last):  # stable: `last` moves to the end, nothing else
        upload_file(local / rel, posixpath.join(uri, rel))


def download_tree(uri: str, local: Path) -> None:
    """Copy everything under ``uri`` into ``local`` (built beside it, then renamed into place)."""
    fs, path = _resolve(uri)
    tmp = local.with_name(f".{local.name}.download")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type == pafs.FileType.File:
            dest = tmp / posixpath.relpath(info.path, path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(info.path, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    shutil.rmtree(local, ignore_errors=True)
    os.replace(tmp, local)


def delete_tree(uri: str) -> None:
    """Remove a remote folder (raydd's own partial work) if it exists."""
    fs, path = _resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
