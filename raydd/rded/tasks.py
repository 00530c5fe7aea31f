"""The CPU side of the RDED pipeline: Ray Data batch functions that read, decode and cut candidates, and that
stitch and encode distilled images. Each is a plain function of a numpy batch; the pipeline maps them.

Candidates are decoded in one of two places (``RdedConfig.decode``): here (``cut_crops``: Pillow, JPEG draft
mode) or on the scoring actor's device (``read_candidates`` only reads the bytes and the header's size). Either
way the crop boxes depend only on (seed, file name, full size).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
from PIL import Image

from raydd.data import DecodeStats, decode_rgb, read_image_bytes
from raydd.data.decode import probe
from raydd.data.filesystem import join
from raydd.runtime import tune_allocator
from raydd.transforms.crops import crop_rng, cut_box, draft_size, sample_boxes
from raydd.transforms.grid import grid_cells, stitch

__all__ = ["assemble", "cut_cells", "cut_crops", "encode", "read_candidates", "read_sources", "stitch_cells"]


def cut_crops(batch: dict[str, np.ndarray], *, fs: Any, root: str, seed: int, num_crops: int, crop_size: int,
              scale: tuple[float, float], jpeg_draft: bool, reads_in_flight: int) -> dict[str, np.ndarray]:
    """Step 2: decode each candidate once (at a reduced JPEG scale where the crops allow) and cut its crops."""
    tune_allocator()
    names = [str(n) for n in batch["name"]]
    n = len(names)
    crops = np.zeros((n, num_crops, crop_size, crop_size, 3), dtype=np.uint8)
    boxes = np.zeros((n, num_crops, 3), dtype=np.int32)
    sizes = np.zeros((n, 2), dtype=np.int32)
    reasons = np.full(n, "", dtype=object)
    encoded = read_image_bytes([join(root, m) for m in names], fs, max_in_flight=reads_in_flight)
    for i, (name, data) in enumerate(zip(names, encoded, strict=True)):
        drawn: dict[str, Any] = {}

        def draw(size: tuple[int, int], name: str = name, drawn: dict = drawn) -> tuple[int, int] | None:
            drawn["size"] = size
            drawn["boxes"] = sample_boxes(size[0], size[1], num_crops, crop_rng(seed, name), scale)
            return draft_size(size, drawn["boxes"], crop_size) if jpeg_draft else None

        stats = DecodeStats()
        image = decode_rgb(data, ref=name, stats=stats, draft=draw)
        if image is None:
            reasons[i] = next(iter(stats.skipped))
            continue
        if "boxes" not in drawn:
            draw(image.size)
        sizes[i] = drawn["size"]
        boxes[i] = drawn["boxes"]
        for j, box in enumerate(drawn["boxes"]):
            crops[i, j] = cut_box(image, box, crop_size, original_size=drawn["size"])
    return {"image_id": batch["image_id"], "class_index": batch["class_index"], "name": batch["name"],
            "crops": crops, "boxes": boxes, "size": sizes, "reason": reasons}


def read_candidates(batch: dict[str, np.ndarray], *, fs: Any, root: str, seed: int, num_crops: int,
                    scale: tuple[float, float], reads_in_flight: int) -> dict[str, np.ndarray]:
    """Step 2 for actors that decode: each candidate's bytes, its size from the header, and its crop boxes."""
    tune_allocator()
    names = [str(n) for n in batch["name"]]
    n = len(names)
    boxes = np.zeros((n, num_crops, 3), dtype=np.int32)
    sizes = np.zeros((n, 2), dtype=np.int32)
    reasons = np.full(n, "", dtype=object)
    encoded = np.full(n, b"", dtype=object)
    tensor_jpeg = np.zeros(n, dtype=bool)
    read = read_image_bytes([join(root, m) for m in names], fs, max_in_flight=reads_in_flight)
    for i, (name, data) in enumerate(zip(names, read, strict=True)):
        header = probe(data)
        if header.size is None:
            reasons[i] = header.reason
            continue
        encoded[i], tensor_jpeg[i], sizes[i] = data, header.tensor_jpeg, header.size
        boxes[i] = sample_boxes(header.size[0], header.size[1], num_crops, crop_rng(seed, name), scale)
    return {"image_id": batch["image_id"], "class_index": batch["class_index"], "name": batch["name"],
            "encoded": encoded, "tensor_jpeg": tensor_jpeg, "boxes": boxes, "size": sizes, "reason": reasons}


def _encode(pixels: np.ndarray, image_format: str) -> bytes:
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(pixels).save(buf, format="PNG")
    else:
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _read_patch_sources(batch: dict[str, np.ndarray], fs: Any, root: str, reads_in_flight: int
                        ) -> list[list[bytes | None]]:
    """The bytes of every patch's source image in the batch, read in one call (all in flight together; Parquet
    rows by row group), per distilled image."""
    names = [[join(root, str(n)) for n in patch_names] for patch_names in batch["patch_names"]]
    flat = read_image_bytes([ref for refs in names for ref in refs], fs, max_in_flight=reads_in_flight)
    starts = np.cumsum([0] + [len(refs) for refs in names])
    return [flat[starts[i]:starts[i + 1]] for i in range(len(names))]


def assemble(batch: dict[str, np.ndarray], *, fs: Any, root: str, size: int, factor: int, image_format: str,
             reads_in_flight: int) -> dict[str, np.ndarray]:
    """Step 5: re-read only the winning images, decode each as scoring did (the same draft scale), cut its
    box at cell size and stitch; the pixels go on to labelling, the encoded file to the driver."""
    tune_allocator()
    cells = grid_cells(size, factor)
    pixels = np.zeros((len(batch["class_index"]), size, size, 3), dtype=np.uint8)
    encoded, digests = [], []
    for i, (names, data) in enumerate(zip(batch["patch_names"], _read_patch_sources(batch, fs, root, reads_in_flight),
                                          strict=True)):
        boxes, sizes, drafts = batch["patch_boxes"][i], batch["patch_sizes"][i], batch["patch_drafts"][i]
        patches = []
        for j, (_, _, h, w) in enumerate(cells):
            draft = tuple(int(v) for v in drafts[j])
            image = decode_rgb(data[j], draft=(lambda _, d=draft: d) if any(draft) else None)
            if image is None:
                raise RuntimeError(f"{names[j]} decoded during scoring but not now: was it changed on disk?")
            patches.append(cut_box(image, [int(v) for v in boxes[j]], (w, h),
                                   original_size=tuple(int(v) for v in sizes[j])))
        pixels[i] = stitch(patches, size, factor)
        encoded.append(_encode(pixels[i], image_format))
        digests.append(hashlib.sha256(encoded[-1]).hexdigest())
    return {**batch, "pixels": pixels, "encoded": np.array(encoded, dtype=object),
            "sha256": np.array(digests, dtype=object)}


def cut_cells(batch: dict[str, np.ndarray], *, fs: Any, root: str, size: int, factor: int, reads_in_flight: int
              ) -> dict[str, np.ndarray]:
    """Step 5 by source, for Parquet: one row per patch (its image's class and number, its cell), read in the
    order given (the pipeline gives shard order, so a block reads few row groups), decoded as scoring did and cut
    at its cell's size; ``stitch_cells`` puts each image's cells together after a group-by."""
    tune_allocator()
    cells = grid_cells(size, factor)
    height, width = max(c[2] for c in cells), max(c[3] for c in cells)
    data = read_image_bytes([join(root, str(n)) for n in batch["name"]], fs, max_in_flight=reads_in_flight)
    pixels = np.zeros((len(data), height, width, 3), dtype=np.uint8)
    for i, encoded in enumerate(data):
        _, _, h, w = cells[int(batch["cell"][i])]
        draft = tuple(int(v) for v in batch["draft"][i])
        image = decode_rgb(encoded, draft=(lambda _, d=draft: d) if any(draft) else None)
        if image is None:
            raise RuntimeError(f"{batch['name'][i]} decoded during scoring but not now: was it changed on disk?")
        pixels[i, :h, :w] = cut_box(image, [int(v) for v in batch["box"][i]], (w, h),
                                    original_size=tuple(int(v) for v in batch["size"][i]))
    return {"class_index": batch["class_index"], "n": batch["n"], "cell": batch["cell"], "pixels": pixels}


def stitch_cells(group: dict[str, np.ndarray], *, size: int, factor: int, image_format: str) -> dict[str, np.ndarray]:
    """One distilled image from its cells (one group of ``cut_cells`` rows): stitched and encoded."""
    tune_allocator()
    cells = grid_cells(size, factor)
    order = np.argsort(group["cell"])
    patches = [group["pixels"][k][:cells[int(group["cell"][k])][2], :cells[int(group["cell"][k])][3]] for k in order]
    pixels = stitch(patches, size, factor)
    encoded = _encode(pixels, image_format)
    return {"class_index": group["class_index"][:1], "n": group["n"][:1], "pixels": pixels[None],
            "encoded": np.array([encoded], dtype=object),
            "sha256": np.array([hashlib.sha256(encoded).hexdigest()], dtype=object)}


def read_sources(batch: dict[str, np.ndarray], *, fs: Any, root: str, reads_in_flight: int) -> dict[str, np.ndarray]:
    """Step 5 for actors that decode: per distilled image, the bytes of its patches' source images."""
    tune_allocator()
    sources = np.empty(len(batch["patch_names"]), dtype=object)
    for i, data in enumerate(_read_patch_sources(batch, fs, root, reads_in_flight)):
        sources[i] = data
    return {**batch, "sources": sources}


def encode(batch: dict[str, np.ndarray], *, image_format: str) -> dict[str, np.ndarray]:
    """Step 5's last part after a decoding actor: distilled pixels to PNG (or JPEG) and their sha256."""
    tune_allocator()
    encoded = [_encode(p, image_format) for p in batch.pop("pixels")]
    return {**batch, "encoded": np.array(encoded, dtype=object),
            "sha256": np.array([hashlib.sha256(e).hexdigest() for e in encoded], dtype=object)}
