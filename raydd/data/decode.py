"""Decoding that survives real files: every colour mode to RGB, bad files counted instead of fatal.

Two decoders share the rules: ``decode_rgb`` (Pillow, on CPU, with JPEG draft mode) and ``decode_tensors``
(torchvision's JPEG decoder on the device a tensor is wanted on: nvJPEG on a GPU, batched), which falls back to
Pillow for every file it cannot take. ``probe`` reads only a file's header: its size, and whether the tensor
decoder can take it.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["DecodeStats", "Probe", "decode_rgb", "decode_tensors", "probe"]


@dataclass
class DecodeStats:
    """Images decoded, and images skipped by reason (``empty``, ``unreadable``, ``truncated``, ``missing``,
    ``too_large``: a header claiming more pixels than Pillow's decompression-bomb limit, refused before any
    pixel is allocated)."""

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
    except Image.DecompressionBombError:
        stats.skip("too_large", ref)
        return None
    except (UnidentifiedImageError, SyntaxError, ValueError):
        stats.skip("unreadable", ref)
        return None
    except OSError as err:
        stats.skip("truncated" if "truncated" in str(err).lower() else "unreadable", ref)
        return None
    stats.decoded += 1
    return rgb


@dataclass(frozen=True)
class Probe:
    """What a file's header says: its size, whether the tensor decoder takes it (a baseline or progressive
    YCbCr JPEG), or why it is skipped."""

    size: tuple[int, int] | None
    tensor_jpeg: bool = False
    reason: str = ""


def probe(data: bytes | None) -> Probe:
    """Read the header only (no pixel is decoded or allocated): size and format, or the reason to skip."""
    if data is None:
        return Probe(None, reason="missing")
    if len(data) == 0:
        return Probe(None, reason="empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        return Probe(None, reason="too_large")
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError):
        return Probe(None, reason="unreadable")
    # CMYK and grayscale JPEGs go to Pillow, whose colour conversion every other path uses.
    return Probe(image.size, tensor_jpeg=image.format == "JPEG" and image.mode == "RGB")


def _jpeg_batch(items: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """torchvision's decoder on a batch; on a failure, file by file, ``None`` for those it rejects."""
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in items]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29+ points to TorchCodec
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for t in tensors:
                try:
                    out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def decode_tensors(items: Sequence[bytes | None], tensor_jpeg: Sequence[bool], *, device: torch.device | str,
                   refs: Sequence[str], stats: DecodeStats) -> tuple[list[torch.Tensor | None], list[str]]:
    """Decode to ``uint8 [3, H, W]`` tensors on ``device``; for a bad file ``None`` and its reason (also
    counted in ``stats``), ``""`` for the others.

    The files marked ``tensor_jpeg`` (``probe``) decode in one batch on ``device``; the others, and any the
    batch decoder rejects, decode with Pillow (full size) and move there.
    """
    device = torch.device(device)
    out: list[torch.Tensor | None] = [None] * len(items)
    reasons = [""] * len(items)
    batch = [i for i, ok in enumerate(tensor_jpeg) if ok and items[i]]
    for i, tensor in zip(batch, _jpeg_batch([items[i] for i in batch], device) if batch else [], strict=True):
        if tensor is not None:
            out[i] = tensor
            stats.decoded += 1
    for i, data in enumerate(items):
        if out[i] is None:
            one = DecodeStats()
            image = decode_rgb(data, ref=refs[i], stats=one)
            stats.merge(one)
            if image is None:
                reasons[i] = next(iter(one.skipped))
            else:
                out[i] = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).to(device)
    return out, reasons
