"""Synthetic photographs for benchmarks at ImageNet's shape: seeded, of natural sizes, cheap to make."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def natural_jpegs(folder: str, seed: int, count: int, *, short: tuple[int, int] = (256, 501)) -> list[bytes]:
    """``count`` JPEGs of one class, written to ``folder`` as ``00000.JPEG``…: a low-frequency colour field (a few
    random colours, bicubic-upsampled), a class tint and grain, quality 90, short side in ``short`` (aspect 3:4 to
    4:3, landscape seven times in ten). Returns their bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    tint = rng.uniform(-40, 40, 3)
    os.makedirs(folder, exist_ok=True)
    out = []
    for i in range(count):
        side = int(rng.integers(*short))
        long = int(side * rng.uniform(1.0, 4 / 3))
        width, height = (long, side) if rng.random() < 0.7 else (side, long)
        field = rng.uniform(0, 255, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)) + tint
        image = Image.fromarray(field.clip(0, 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        Path(folder, f"{i:05d}.JPEG").write_bytes(buf.getvalue())
        out.append(buf.getvalue())
    return out
