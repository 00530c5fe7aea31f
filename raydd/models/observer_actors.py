"""Observers held by Ray Data actors: loaded once per actor (on its GPU when it has one), fed batches of images.

``ObserverActor`` is the part every observer stage shares (device, precision, threads, forward batch size);
``LabelImages`` is the relabel stage: soft labels of whole images and of each of their f × f patches, in the
compact form a set stores. RDED's scoring actor builds on the same base; any other soft-label method (a
recover-and-relabel, region labels) can use both as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from raydd.data import DecodeStats
from raydd.data.decode import decode_tensors, probe
from raydd.io.soft_labels import tail_stats, topk_logits
from raydd.models.logits import ensemble_logits, patch_views
from raydd.models.observer import Observer, load_observer
from raydd.models.precision import autocast_dtype, resolve_scoring_precision, set_fp32_math
from raydd.runtime import tune_allocator
from raydd.transforms.crops import cut_boxes
from raydd.transforms.grid import grid_cells

__all__ = ["LAYOUT_COLUMNS", "LabelImages", "ObserverActor", "forward_batch_size"]

# A stitched image's layout: per patch its source, box, full size, score and draft size (RDED's ``_layout``).
LAYOUT_COLUMNS = ("patch_names", "patch_boxes", "patch_sizes", "patch_scores", "patch_drafts")


def forward_batch_size(device: torch.device, dtype: torch.dtype | None) -> int:
    """The default crops per forward. A GPU wants many. On CPU, fp32 at 32 runs as fast as at 64
    (EfficientNet-Lite0 at 224: 91 against 86 img/s on one thread) with a third less peak memory (1.3 against
    2.1 GB); bf16 halves the activations, and at 64 it runs 7-13 % faster than at 32 in the same memory."""
    if device.type == "cuda":
        return 256
    return 32 if dtype is None else 64


class ObserverActor:
    """Holds the observers once per actor (on its GPU if it has one), restricted to the data's classes."""

    def __init__(self, specs: list[str], columns: list[list[int] | None], *, precision: str, channels_last: bool,
                 threads: int | None, batch_size: int | None, input_size: int) -> None:
        tune_allocator()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.threads = threads if self.device.type == "cpu" else None
        self.observers: list[Observer] = [load_observer(s, device=self.device).restrict(c)
                                          for s, c in zip(specs, columns, strict=True)]
        self.channels_last = channels_last
        if channels_last:
            for observer in self.observers:
                observer.to(memory_format=torch.channels_last)
        self.precision = resolve_scoring_precision(precision, self.device)
        if self.device.type == "cuda":
            set_fp32_math(self.precision)
        self.dtype = autocast_dtype(self.precision, self.device)
        self.batch_size = batch_size or forward_batch_size(self.device, self.dtype)
        self.input_size = input_size

    def _set_threads(self) -> None:
        # OpenMP's thread count is per calling thread, and Ray Data calls the UDF from another thread than
        # __init__ (where Ray's OMP_NUM_THREADS=1 applies): set it where the work runs.
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


class LabelImages(ObserverActor):
    """Soft labels of each image and, with ``factor`` > 1, of each of its patches (RDED's step 6).

    Given the sources' bytes and a stitched image's layout instead of pixels, it also stitches on its device:
    decode, cut each patch at its cell size, paste (RDED's step 5); the pixels then go on to a CPU task that
    encodes them.
    """

    def __init__(self, *args: Any, topk: int, factor: int, size: int, block_rows: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.topk, self.factor, self.size = topk, factor, size
        # Fixed forward shapes: one image batch and one patch batch per block of distilled images.
        self.image_batch = min(self.batch_size, block_rows)
        self.patch_batch = min(self.batch_size, block_rows * factor**2)

    def _stitch(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        cells = grid_cells(self.size, self.factor)
        canvas = torch.zeros(len(batch["patch_names"]), 3, self.size, self.size, device=self.device)
        for i, (names, boxes, sources) in enumerate(zip(batch["patch_names"], batch["patch_boxes"], batch["sources"],
                                                        strict=True)):
            names = [str(n) for n in names]
            images, _ = decode_tensors(list(sources), [probe(d).tensor_jpeg for d in sources], device=self.device,
                                       refs=names, stats=DecodeStats())
            for (top, left, h, w), image, name, box in zip(cells, images, names, boxes, strict=True):
                if image is None:
                    raise RuntimeError(f"{name} decoded during scoring but not now: was it changed on disk?")
                canvas[i, :, top:top + h, left:left + w] = cut_boxes(image, np.asarray([box], dtype=np.int64),
                                                                     [(w, h)])[0]
        return canvas.round_().clamp_(0, 255).to(torch.uint8)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._set_threads()
        # What each image is made of stays with the driver's layout table; only the results travel on.
        layout = {k: batch.pop(k) for k in LAYOUT_COLUMNS if k in batch}
        if "sources" in batch:
            images = self._stitch({**batch, **layout})
            batch = {k: v for k, v in batch.items() if k != "sources"}
            batch["pixels"] = images.permute(0, 2, 3, 1).cpu().numpy()
        else:
            images = torch.from_numpy(batch.pop("pixels")).permute(0, 3, 1, 2).to(self.device)
        n = len(images)
        logits = ensemble_logits(self.observers, images, batch_size=self.image_batch, autocast_dtype=self.dtype)
        idx, val = topk_logits(logits, self.topk)
        batch["label_indices"], batch["label_logits"] = idx, val.astype(np.float32)
        batch["label_tail"] = tail_stats(logits, self.topk)
        if self.factor > 1:
            logits = ensemble_logits(self.observers, patch_views(images, self.factor), batch_size=self.patch_batch,
                                     autocast_dtype=self.dtype)
            idx, val = topk_logits(logits, self.topk)
            batch["patch_indices"] = idx.reshape(n, self.factor**2, -1)
            batch["patch_logits"] = val.astype(np.float32).reshape(n, self.factor**2, -1)
            batch["patch_tail"] = tail_stats(logits, self.topk).reshape(n, self.factor**2, 2)
        return batch
