"""Reading torch files without running code from them: plain state dicts, wrapped ones, ``module.`` prefixes.

Every weights, checkpoint, expert and run-state file raydd reads goes through ``load_torch_file``, which unpickles
tensors, numbers, strings and containers only (``torch.load(weights_only=True)``). A file that needs more (an
older checkpoint that pickled whole Python objects) could run arbitrary code when loaded; it is refused unless
the user opts in for files they trust with ``RAYDD_ALLOW_PICKLE=1``.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["ALLOW_PICKLE_ENV", "load_state_dict_file", "load_torch_file"]

ALLOW_PICKLE_ENV = "RAYDD_ALLOW_PICKLE"
log = logging.getLogger("raydd.io")


def load_torch_file(path: str | Path, *, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` of tensors and plain values only.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for a file that holds other Python objects (naming the opt-in), or that is not a torch file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # not a Python object refused: not a torch file at all
            raise ValueError(f"{path} is not a readable torch file: {str(err).splitlines()[0]}") from err
        if os.environ.get(ALLOW_PICKLE_ENV) != "1":
            raise ValueError(
                f"{path} holds Python objects besides tensors and plain values; unpickling them could run code "
                f"from the file, so raydd refuses it. If you trust this file, set {ALLOW_PICKLE_ENV}=1 to load it "
                f"in full, or save its state dict alone (torch.save(model.state_dict(), PATH))") from err
        log.warning("%s: loading Python objects from it (%s=1)", path, ALLOW_PICKLE_ENV)
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable torch file: {err}") from err


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file; accepts ``{"state_dict": …}``/``{"model": …}`` wrappers."""
    obj = load_torch_file(path)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}
