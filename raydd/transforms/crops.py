"""Square random-resized crops of an image, seeded per image: RDED's candidate crops, evaluation's random patches.

Boxes are drawn as torchvision's ``RandomResizedCrop.get_params`` draws them with the aspect ratio fixed at 1
(ten tries at a random area fraction, then a centred square fallback), but from a generator seeded by
(run seed, image name) so that a rerun — on any number of workers — cuts the same boxes.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["crop_rng", "cut_box", "cut_boxes", "draft_size", "sample_boxes"]


def crop_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one image's crops: depends on the seed and the image's name only."""
    return np.random.default_rng([seed, 0x52444544, zlib.crc32(name.encode())])


def sample_boxes(width: int, height: int, num_crops: int, rng: np.random.Generator,
                 scale: tuple[float, float] = (0.08, 1.0)) -> np.ndarray:
    """``num_crops`` square boxes ``(left, top, side)`` covering a random fraction ``scale`` of the area."""
    boxes = np.empty((num_crops, 3), dtype=np.int32)
    area = width * height
    for n in range(num_crops):
        for _ in range(10):
            side = round(math.sqrt(area * rng.uniform(scale[0], scale[1])))
            if 0 < side <= width and side <= height:
                top = int(rng.integers(0, height - side + 1))
                left = int(rng.integers(0, width - side + 1))
                boxes[n] = (left, top, side)
                break
        else:
            side = min(width, height)
            boxes[n] = ((width - side) // 2, (height - side) // 2, side)
    return boxes


def draft_size(size: tuple[int, int], boxes: np.ndarray, out_size: int) -> tuple[int, int] | None:
    """The smallest decode size at which every box still has ``out_size`` pixels a side (JPEG draft)."""
    reduction = int(boxes[:, 2].min()) / out_size
    if reduction < 2:
        return None
    return (math.ceil(size[0] / reduction), math.ceil(size[1] / reduction))


def cut_box(image: Image.Image, box: np.ndarray | tuple[int, int, int], out_size: int | tuple[int, int],
            original_size: tuple[int, int] | None = None) -> np.ndarray:
    """Crop a box given in original-image coordinates and resize it (antialiased) to ``out_size``
    (a side, or ``(width, height)`` for the one-pixel-wider cells of a stitched grid), as HWC uint8.

    When the image was decoded at a reduced (draft) size, ``original_size`` rescales the box to it.
    """
    out = (out_size, out_size) if isinstance(out_size, int) else out_size
    left, top, side = (float(v) for v in box)
    if original_size is not None and original_size != image.size:
        sx, sy = image.size[0] / original_size[0], image.size[1] / original_size[1]
        region = (left * sx, top * sy, (left + side) * sx, (top + side) * sy)
    else:
        region = (left, top, left + side, top + side)
    # Crop first, then resize, as torchvision's RandomResizedCrop does: the filter sees only the crop.
    cropped = image.crop(tuple(round(v) for v in region))
    return np.asarray(cropped.resize(out, Image.Resampling.BILINEAR), dtype=np.uint8)


def cut_boxes(image: torch.Tensor, boxes: np.ndarray, out_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """``cut_box`` for a decoded ``uint8 [3, H, W]`` tensor on any device (a GPU actor's nvJPEG output): each
    box ``(left, top, side)`` cropped, then resized antialiased to its ``(width, height)``, as float in [0, 255].

    torch's antialiased bilinear filter is PIL's: on the same decoded pixels the crops agree with ``cut_box``
    to within one grey level.
    """
    pixels = image.unsqueeze(0).float()
    out = []
    for (left, top, side), (width, height) in zip(boxes.tolist(), out_sizes, strict=True):
        region = pixels[:, :, top:top + side, left:left + side]
        out.append(F.interpolate(region, size=(height, width), mode="bilinear", antialias=True,
                                 align_corners=False)[0])
    return out
