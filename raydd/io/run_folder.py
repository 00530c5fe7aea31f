"""A run's output folder: built beside its final place, renamed into it at the end, never over a user's files.

Runs build their output in a sibling work folder ``.<name>.partial`` and rename it into place at the very end;
an existing non-empty output is never overwritten. The marker ``raydd.json`` says which config a folder holds
and whether it is complete, so that a rerun of the same config resumes or returns the finished run. Outputs on
object storage (``s3://…``) are built the same way in a local mirror and uploaded with the marker last
(``raydd.io.storage``).
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

from raydd.io.atomic import write_config_yaml, write_json
from raydd.io.storage import (
    delete_tree,
    is_remote,
    mirror_of,
    read_text,
    remote_is_empty,
    upload_tree,
    write_remote_text,
)

__all__ = ["MARKER", "OutputExistsError", "RunFolder", "read_marker"]

MARKER = "raydd.json"


class OutputExistsError(FileExistsError):
    """The output folder exists and holds something raydd must not overwrite."""


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
            remote = read_marker(uri)
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
                   if read_marker(final).get("config_hash") == result_hash else "")
            )
        resumed = False
        if work.exists():
            if read_marker(work).get("config_hash") != result_hash:
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
        marker = read_marker(location)
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
        marker = read_marker(self.work)
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
    marker = read_marker(local)
    try:
        write_remote_text(f"{uri}/{MARKER}", json.dumps({**marker, "complete": False}))
        upload_tree(local, uri, last=MARKER)
    except OSError as err:
        raise OSError(f"uploading the finished run in {local} to {uri} failed ({err}); nothing there is marked "
                      "complete. Rerun the same command to upload it again (nothing is recomputed)") from err


def read_marker(location: str | Path) -> dict[str, Any]:
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
