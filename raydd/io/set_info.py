"""What a distilled set records about how it was made: the manifest's ``raydd`` metadata, typed.

Both writers (RDED's pipeline, MTT/IADD matching) fill a ``SetInfo`` and the reader returns one, so evaluation
reads fields rather than dictionary keys. On disk it stays the JSON object it always was (each method's keys in
its order, byte for byte), and sets written before this class read back with defaults for what they lack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["SetInfo"]


@dataclass(frozen=True)
class SetInfo:
    method: str                                   # "rded", "mtt" or "iadd"
    classes: list[str]                            # output i is classes[i]
    # RDED: the observers that scored and relabelled, each one's output index per class, the weights they loaded
    observers: list[str] = field(default_factory=list)
    observer_columns: list[list[int] | None] | None = None
    observer_weights: list[str] | None = None
    seed: int | None = None
    config_hash: str | None = None                # the run's result hash: a rerun with the same one resumes
    input_size: int | None = None
    factor: int = 1                               # patches per side of a stitched image (1: none)
    ipc: int | None = None
    # MTT/IADD: the learned student lr α, the experts' whitening and normalisation, how far matching went
    learned_lr: float | None = None
    zca: bool | None = None
    iterations: int | None = None
    skipped_steps: int | None = None
    normalization: dict[str, list[float]] | None = None

    def to_json(self) -> bytes:
        """The metadata's bytes: the keys each method has always written, in its order (other writers, such as
        tests: every field that is set)."""
        keys = _KEYS.get(self.method) or [f.name for f in fields(self) if getattr(self, f.name) is not None]
        return json.dumps({k: getattr(self, k) for k in keys}).encode()

    @classmethod
    def from_json(cls, raw: bytes | None) -> SetInfo:
        """A set's info from its metadata; keys this version does not know are ignored, missing ones default."""
        values: dict[str, Any] = json.loads(raw or b"{}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        return cls(**{"method": "unknown", "classes": [], **values})


_MATCHED = ("method", "classes", "learned_lr", "input_size", "zca", "factor", "ipc", "iterations", "skipped_steps",
            "normalization", "config_hash")
_KEYS = {"rded": ("method", "classes", "observers", "observer_columns", "observer_weights", "seed", "config_hash",
                  "input_size", "factor", "ipc"),
         "mtt": _MATCHED, "iadd": _MATCHED}
