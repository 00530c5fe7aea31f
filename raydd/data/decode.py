"""Decoding that survives real files: every colour mode to RGB, bad files counted instead of fatal."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["DecodeStats", "decode_rgb"]


@dataclass
class DecodeStats:
    """Images decoded, and images skipped by reason (``empty``, ``unreadable``, ``truncated``, ``missing``)."""

    decoded: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, ref: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, ref)

    def merge(self, other: DecodeStats) -> None:
        self.decoded += other.decoded
        self.skipped.update(other.skipped)
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)

    def to_dict(self) -> dict:
        return {"decoded": self.decoded, "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values()),
                "examples": dict(self.examples)}


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def decode_rgb(data: bytes | None, *, ref: str = "", stats: DecodeStats | None = None,
               draft: Callable[[tuple[int, int]], tuple[int, int] | None] | None = None) -> Image.Image | None:
    """Decode to an RGB image, or return ``None`` (and count why in ``stats``) for a bad file.

    Args:
        data: the encoded file; ``None`` for a file that could not be read.
        ref: the image's reference, kept as an example in ``stats``.
        stats: where skipped files are counted.
        draft: called with a JPEG's full size, returns the size it needs at least (or ``None`` for full
            size); the JPEG then decodes at the smallest DCT scale (1/2, 1/4, 1/8) that still covers it —
            much less decoding when the output is much smaller than the file.
    """
    stats = stats if stats is not None else DecodeStats()
    if data is None:
        stats.skip("missing", ref)
        return None
    if len(data) == 0:
        stats.skip("empty", ref)
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            if draft is not None and image.format == "JPEG":
                wanted = draft(image.size)
                if wanted is not None:
                    image.draft("RGB", wanted)
            image.load()
            rgb = _to_rgb(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError):
        stats.skip("unreadable", ref)
        return None
    except OSError as err:
        stats.skip("truncated" if "truncated" in str(err).lower() else "unreadable", ref)
        return None
    stats.decoded += 1
    return rgb
