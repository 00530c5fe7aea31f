"""Self-describing model checkpoints: weights plus everything needed to rebuild and use the model.

A checkpoint is a folder holding ``model.pt``: ``{"format", "model", "model_args", "state_dict",
"normalization", "input_size", "classes", "epoch", "optimizer", "config"}``. It loads back as a training
state (resume) or as an observer (``checkpoint@PATH``, ``raydd.models.observer``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raydd.io.storage import download_file, is_remote, list_files, mirror_of, remote_is_empty
from raydd.io.torch_files import load_torch_file
from raydd.models.registry import Normalization

__all__ = ["CHECKPOINT_FILE", "find_checkpoint", "load_reported_state", "read_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "model.pt"
FORMAT = "raydd.checkpoint.v1"


def save_checkpoint(folder: Path, *, model: nn.Module, model_name: str, model_args: dict[str, Any],
                    normalization: Normalization, input_size: int, classes: list[str], epoch: int,
                    optimizer: torch.optim.Optimizer | None = None, config: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/model.pt`` through a temporary name, so a crash never leaves half a checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    module = model.module if hasattr(model, "module") else model
    state = {
        "format": FORMAT,
        "model": model_name,
        "model_args": model_args,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "normalization": {"mean": list(normalization.mean), "std": list(normalization.std)},
        "input_size": input_size,
        "classes": list(classes),
        "epoch": epoch,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": config or {},
        **(extra or {}),
    }
    target = folder / CHECKPOINT_FILE
    tmp = folder / f".{CHECKPOINT_FILE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, target)
    return target


def load_reported_state(checkpoint: Any, filename: str, map_location: str | torch.device = "cpu"
                        ) -> dict[str, Any] | None:
    """The state a Ray Train or Tune run saved as ``filename`` with its latest reported checkpoint, or None
    when the run starts fresh (``checkpoint`` is what ``get_checkpoint()`` returned)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_torch_file(Path(folder) / filename, map_location=map_location)


def _mirror_checkpoints(uri: str) -> Path:
    """Download the ``model.pt`` files of a remote file, checkpoint or run folder into its local mirror."""
    import fnmatch

    uri = uri.rstrip("/")
    local = mirror_of(uri)
    files = list_files(uri, recursive=True)
    if not files and not remote_is_empty(uri):  # the URI names a file
        download_file(uri, local)
        return local
    for rel in files:
        if rel == CHECKPOINT_FILE or fnmatch.fnmatch(rel, f"checkpoint_*/{CHECKPOINT_FILE}"):
            download_file(f"{uri}/{rel}", local / rel)
    return local


def find_checkpoint(path: str | Path) -> Path:
    """``model.pt`` for a file, a checkpoint folder, or a run folder (its latest ``checkpoint_*``), local or
    remote (``s3://…``: downloaded into the local mirror)."""
    path = _mirror_checkpoints(str(path)) if is_remote(path) else Path(path)
    if path.is_file():
        return path
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    candidates = sorted(path.glob(f"checkpoint_*/{CHECKPOINT_FILE}"), key=_order)
    if not candidates:
        raise FileNotFoundError(f"no raydd checkpoint ({CHECKPOINT_FILE}) in {path}")
    return candidates[-1]


def _order(path: Path) -> int:
    """A checkpoint folder's place in its run, from its name alone (nothing is loaded): Ray Train names them by
    timestamp, Tune by a counter, so the digits read as one number order them."""
    digits = re.sub(r"\D", "", path.parent.name)
    return int(digits) if digits else -1


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """A raydd checkpoint's contents; ``mmap`` maps its tensors instead of reading them (for its metadata alone)."""
    state = load_torch_file(find_checkpoint(path), mmap=mmap)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a raydd checkpoint")
    return state
