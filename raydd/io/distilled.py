"""The distilled-set format, and writing it without ever losing a user's files.

A distilled set is a folder::

    images/<class>/<n>.png      the distilled images (PNG by default, JPEG on request)
    manifest.parquet            one row per image: class, file, sha256, and per patch its source, box, score
    soft_labels.parquet         observer soft labels: top-k fp16 logits per image (patch = -1) and per patch
    scores.parquet              every candidate's crop boxes and realism scores ("score once, select many")
    config.yaml                 the resolved config;  stats.json  counts, skipped files, timings
    montage.png                 classes × images, to look at
    zca.pt                      (trajectory matching with ZCA only) the whitening its evaluation must apply

Runs build it in a sibling work folder ``.<name>.partial`` and rename it into place at the very end; an
existing non-empty output is never overwritten. Outputs on object storage (``s3://…``) are built the same way
in a local mirror and uploaded with the marker last (``raydd.io.storage``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from PIL import Image

from raydd.io.names import UnsafeClassNameError, check_class_names
from raydd.io.set_info import SetInfo
from raydd.io.soft_labels import dense_logits
from raydd.io.storage import (
    delete_tree,
    download_tree,
    is_remote,
    mirror_of,
    read_text,
    remote_is_empty,
    upload_tree,
    write_remote_text,
)

__all__ = ["DistilledSet", "OutputExistsError", "RunFolder", "is_distilled_set", "write_parquet"]

MARKER = "raydd.json"


class OutputExistsError(FileExistsError):
    """The output folder exists and holds something raydd must not overwrite."""


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write through a temporary name so that a crash never leaves a half-written table."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_json(data: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


@dataclass
class RunFolder:
    """The output of one run: finished at ``final``, built in ``work`` until then.

    For a remote ``uri`` both folders are its local mirror, and finishing uploads the result.
    """

    final: Path
    work: Path
    resumed: bool
    uri: str | None = None

    @property
    def storage(self) -> str:
        """Where Ray Train / Tune keep this run's checkpoints: on the output's own storage (every node of a
        cluster reaches it when the output is shared or remote), so that a rerun resumes."""
        if self.uri is None:
            return str(self.work)
        parent, name = posixpath.split(self.uri)
        return f"{parent}/.{name}.partial"

    @classmethod
    def open(cls, out: str | Path, result_hash: str, kind: str) -> RunFolder:
        """Prepare a run's folders, resuming a partial run of the same config.

        Raises:
            OutputExistsError: when ``out`` is non-empty (and not this very run, finished), or a partial run of
                a different config sits in the work folder.
        """
        uri = str(out).rstrip("/") if is_remote(out) else None
        if uri is not None:
            remote = _marker(uri)
            ours = remote.get("config_hash") == result_hash and not remote.get("complete")
            if not remote_is_empty(uri) and not ours:  # ours: this config's upload, cut off; it is redone
                raise OutputExistsError(f"{uri} exists and is not empty; raydd never overwrites it — choose another "
                                        "--out" + (" (it is already a finished run of this same config)"
                                                   if remote.get("config_hash") == result_hash else ""))
            final = mirror_of(uri)
            shutil.rmtree(final, ignore_errors=True)  # a stale mirror of an output since deleted: raydd's cache
        else:
            final = Path(out).expanduser().resolve()
        work = final.with_name(f".{final.name}.partial")
        if final.exists() and any(final.iterdir()):
            raise OutputExistsError(
                f"{final} exists and is not empty; raydd never overwrites it — choose another --out"
                + (" (it is already a finished run of this same config)"
                   if _marker(final).get("config_hash") == result_hash else "")
            )
        resumed = False
        if work.exists():
            if _marker(work).get("config_hash") != result_hash:
                raise OutputExistsError(f"{work} holds a partial run of a different config; remove it or choose "
                                        "another --out")
            resumed = True
        work.mkdir(parents=True, exist_ok=True)
        write_json({"kind": kind, "config_hash": result_hash, "complete": False}, work / MARKER)
        return cls(final=final, work=work, resumed=resumed, uri=uri)

    @classmethod
    def for_config(cls, config: Any, result_hash: str, kind: str) -> RunFolder:
        """``open`` on ``config.out``, with the config written into the run as ``config.yaml``."""
        run = cls.open(config.out, result_hash, kind)
        write_config_yaml(dataclasses.asdict(config), run.work / "config.yaml")
        return run

    @staticmethod
    def finished(out: str | Path, result_hash: str) -> bool:
        """Whether ``out`` already is a complete run of this config (a check only: see ``reuse``)."""
        location = str(out).rstrip("/") if is_remote(out) else Path(out).expanduser().resolve()
        marker = _marker(location)
        return marker.get("config_hash") == result_hash and bool(marker.get("complete"))

    @classmethod
    def reuse(cls, out: str | Path, result_hash: str) -> bool:
        """Whether a job has nothing to do: ``out`` is a finished run of this config, or a remote one that was
        built but whose upload was cut off (the store failed), which this uploads again from its local mirror."""
        if cls.finished(out, result_hash):
            return True
        if not is_remote(out):
            return False
        uri = str(out).rstrip("/")
        local = mirror_of(uri)
        if not cls.finished(local, result_hash):
            return False
        _upload(local, uri)
        return True

    def finish(self) -> str | Path:
        """Mark the run complete and move it into place (uploading a remote one); returns where it is."""
        marker = _marker(self.work)
        write_json({**marker, "complete": True}, self.work / MARKER)
        if self.final.exists():
            self.final.rmdir()  # empty: checked when the run opened
        os.replace(self.work, self.final)
        if self.uri is None:
            return self.final
        _upload(self.final, self.uri)
        delete_tree(self.storage)  # raydd's own checkpoints of the finished run
        return self.uri


def _upload(local: Path, uri: str) -> None:
    """Upload a finished run so that no reader ever takes it for finished before every file is there: the marker
    goes first marked incomplete, then every other file, then the marker as it is (complete).

    Raises:
        OSError: when the store fails, saying where the finished run is and that rerunning uploads it.
    """
    marker = _marker(local)
    try:
        write_remote_text(f"{uri}/{MARKER}", json.dumps({**marker, "complete": False}))
        upload_tree(local, uri, last=MARKER)
    except OSError as err:
        raise OSError(f"uploading the finished run in {local} to {uri} failed ({err}); nothing there is marked "
                      "complete. Rerun the same command to upload it again (nothing is recomputed)") from err


def is_distilled_set(path: str | Path) -> bool:
    """Whether ``path`` (local or remote) holds a raydd distilled set rather than a plain ImageFolder."""
    if is_remote(path):
        uri = str(path).rstrip("/")
        return bool(_marker(uri).get("complete")) and not remote_is_empty(f"{uri}/manifest.parquet")
    return (Path(path) / "manifest.parquet").exists()


def _marker(location: str | Path) -> dict[str, Any]:
    """The run marker of a local folder or a remote URI; empty when there is none (or it is unreadable)."""
    if is_remote(location):
        text = read_text(f"{str(location).rstrip('/')}/{MARKER}")
    else:
        try:
            text = (Path(location) / MARKER).read_text()
        except OSError:
            text = None
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {}


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
        marker = _marker(uri)
        if not marker.get("complete"):
            raise FileNotFoundError(f"{uri} is not a finished raydd output (no complete {MARKER})")
        local = mirror_of(uri)
        if _marker(local) != marker:
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


def write_config_yaml(values: dict[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
