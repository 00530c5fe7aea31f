"""A picture of a distilled set: one row per class (name on the left), its images across."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from PIL import Image, ImageDraw

__all__ = ["write_montage"]


def write_montage(folder: Path, manifest: pa.Table, classes: Sequence[str], out: Path, *, max_classes: int = 100,
                  max_images: int = 10, thumb: int = 64) -> Path:
    """Draw up to ``max_classes`` × ``max_images`` thumbnails (``thumb`` px, never upscaled past 2x)."""
    files = manifest.column("file").to_pylist()
    labels = manifest.column("class_index").to_pylist()
    by_class: dict[int, list[str]] = {}
    for f, c in zip(files, labels, strict=True):
        by_class.setdefault(c, []).append(f)
    shown = sorted(by_class)[:max_classes]
    first = Image.open(folder / files[0])
    side = min(thumb, first.width * 2)
    label_w, pad = 110, 2
    cols = min(max_images, max(len(v) for v in by_class.values()))
    canvas = Image.new("RGB", (label_w + cols * (side + pad), len(shown) * (side + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, c in enumerate(shown):
        y = row * (side + pad)
        draw.text((4, y + side // 2 - 6), str(classes[c])[:16], fill="black")
        for col, f in enumerate(by_class[c][:cols]):
            image = Image.open(folder / f).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
            canvas.paste(image, (label_w + col * (side + pad), y))
    tmp = out.with_name(f".{out.name}.tmp.png")
    canvas.save(tmp)
    tmp.replace(out)
    return out
