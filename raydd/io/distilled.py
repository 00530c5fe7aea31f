"""The distilled-set format, and writing it without ever losing a user's files.

A distilled set is a folder::

    images/<class>/<n>.png      the distilled images (PNG by default, JPEG on request)
    manifest.parquet            one row per image: class, file, sha256, and per patch its source, box, score
    soft_labels.parquet         observer soft labels: top-k fp16 logits per image (patch = -1) and per patch
    scores.parquet              every candidate's crop boxes and realism scores ("score once, select many")
    config.yaml                 the resolved config;  stats.json  counts, skipped files, timings
    montage.png                 classes × images, to look at
    zca.pt                      (trajectory matching with ZCA only) the whitening its evaluation must apply

Runs build it in a work folder and rename it into place at the end (``raydd.io.run_folder``); its one writer is
``raydd.io.writer``. This module reads it back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from raydd.io.names import UnsafeClassNameError, check_class_names
from raydd.io.run_folder import MARKER, OutputExistsError, read_marker
from raydd.io.set_info import SetInfo
from raydd.io.soft_labels import dense_logits
from raydd.io.storage import download_tree, is_remote, mirror_of, remote_is_empty

__all__ = ["DistilledSet", "is_distilled_set"]


def is_distilled_set(path: str | Path) -> bool:
    """Whether ``path`` (local or remote) holds a raydd distilled set rather than a plain ImageFolder."""
    if is_remote(path):
        uri = str(path).rstrip("/")
        return bool(read_marker(uri).get("complete")) and not remote_is_empty(f"{uri}/manifest.parquet")
    return (Path(path) / "manifest.parquet").exists()


class DistilledSet:
    """A handle on a finished distilled set (RDED or IADD output)."""

    def __init__(self, path: str | Path) -> None:
        self.uri = str(path).rstrip("/") if is_remote(path) else None
        self.path = self._local_copy(self.uri) if self.uri else Path(path)
        if not (self.path / "manifest.parquet").exists():
            raise FileNotFoundError(f"{self.path} is not a raydd distilled set (no manifest.parquet)")
        self.manifest = pq.read_table(self.path / "manifest.parquet")
        meta = self.manifest.schema.metadata or {}
        self.info = SetInfo.from_json(meta.get(b"raydd"))

    @staticmethod
    def _local_copy(uri: str) -> Path:
        """The local mirror of a finished remote set, downloaded unless it already holds that very set."""
        marker = read_marker(uri)
        if not marker.get("complete"):
            raise FileNotFoundError(f"{uri} is not a finished raydd output (no complete {MARKER})")
        local = mirror_of(uri)
        if read_marker(local) != marker:
            download_tree(uri, local)
        return local

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def __len__(self) -> int:
        return self.manifest.num_rows

    def __repr__(self) -> str:
        return f"DistilledSet({self.uri or str(self.path)!r}, images={len(self)}, classes={len(self.classes)})"

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads((self.path / "stats.json").read_text())

    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as uint8 ``[N, 3, S, S]`` and their class indices, in manifest order."""
        files = self.manifest.column("file").to_pylist()
        arrays = [np.asarray(Image.open(self.path / f).convert("RGB")) for f in files]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(self.manifest.column("class_index").to_pylist(), dtype=torch.long)

    def _label_rows(self, patches: bool) -> pa.Table:
        table = pq.read_table(self.path / "soft_labels.parquet")
        rows = table.filter(pa.compute.greater_equal(table["patch"], 0) if patches
                            else pa.compute.equal(table["patch"], -1))
        return rows.take(pa.array(np.lexsort((rows["patch"].to_numpy(), rows["image"].to_numpy()))))

    def soft_labels(self, *, patches: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(indices, fp16 logits) of the stored top-k soft labels, per image (or per patch), manifest order."""
        rows = self._label_rows(patches)
        indices = np.stack(rows["indices"].to_numpy(zero_copy_only=False))
        values = np.stack(rows["logits"].to_numpy(zero_copy_only=False)).astype(np.float16)
        return indices, values

    def soft_label_tails(self, *, patches: bool = False) -> np.ndarray | None:
        """``[rows, 2]`` mean and std of the logits outside each stored top-k, in ``soft_labels``' order; None
        for sets written before they were stored."""
        rows = self._label_rows(patches)
        if "tail" not in rows.column_names:
            return None
        return np.stack(rows["tail"].to_numpy(zero_copy_only=False)).astype(np.float32)

    def export_ddranking(self, out: str | Path) -> Path:
        """DD-Ranking's input: an ImageFolder (``<class>/<n>.png``) and ``soft_labels.pt`` (dense logits
        ``[N, num_classes]`` in the ImageFolder's sorted file order). Refuses an existing non-empty ``out``."""
        target = Path(out)
        if target.exists() and any(target.iterdir()):
            raise OutputExistsError(f"{target} exists and is not empty")
        work = target.with_name(f".{target.name}.partial")
        shutil.rmtree(work, ignore_errors=True)
        files = self.manifest.column("file").to_pylist()
        check_class_names(self.classes, source=str(self.path))
        for name in files:  # images/<class>/<file>, each part one component: nothing lands outside ``out``
            parts = Path(name).parts
            if len(parts) != 3 or parts[0] != "images":
                raise UnsafeClassNameError(f"{self.path}: manifest file {name!r} is not images/<class>/<file>")
            check_class_names(parts[1:], source=f"{self.path}'s manifest")
        indices, values = self.soft_labels()
        dense = dense_logits(indices, values, len(self.classes), tail=self.soft_label_tails())
        order = sorted(range(len(files)), key=lambda i: files[i])
        for i in order:
            dest = work / Path(files[i]).relative_to("images")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path / files[i], dest)
        torch.save(dense[order], work / "soft_labels.pt")
        (work / "classes.txt").write_text("\n".join(self.classes) + "\n")
        if target.exists():
            target.rmdir()
        os.replace(work, target)
        return target
