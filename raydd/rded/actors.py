"""RDED's scoring actor (step 3): the realism score of every crop, on the shared observer actor
(``raydd.models.observer_actors``, which also holds the relabel stage, step 6).

It takes its input decoded (crops cut by CPU tasks) or encoded (file bytes, decoded on the actor's device:
nvJPEG batches on a GPU), and returns small rows for the CPU tasks after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from raydd.data import DecodeStats
from raydd.data.decode import decode_tensors
from raydd.models.observer_actors import ObserverActor
from raydd.rded.scoring import score_crops
from raydd.rded.selection import best_crops
from raydd.transforms.crops import cut_boxes

__all__ = ["ScoreCrops"]


class ScoreCrops(ObserverActor):
    """Step 3: realism scores of every crop; returns small rows (boxes and scores), never pixels."""

    def __init__(self, *args: Any, crop_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crop_size = crop_size

    def _decode_and_cut(self, batch: dict[str, np.ndarray], rows: np.ndarray, reasons: np.ndarray
                        ) -> tuple[torch.Tensor, np.ndarray]:
        """Decode the candidates' bytes on this actor's device and cut their crops; returns the crops of the rows
        that decoded (in row order) and those rows. A file that fails here is skipped as in a CPU task."""
        side = self.crop_size
        images, failed = decode_tensors([batch["encoded"][i] for i in rows], batch["tensor_jpeg"][rows],
                                        device=self.device, refs=[str(batch["name"][i]) for i in rows],
                                        stats=DecodeStats())
        kept, crops = [], []
        for i, image, reason in zip(rows, images, failed, strict=True):
            if image is not None and tuple(image.shape[1:]) != tuple(batch["size"][i][::-1]):
                image, reason = None, "unreadable"  # not the size its header promised
            if image is None:
                reasons[i] = reason
                continue
            kept.append(i)
            crops += cut_boxes(image, batch["boxes"][i], [(side, side)] * len(batch["boxes"][i]))
        pixels = torch.stack(crops).round_().clamp_(0, 255) if crops else torch.zeros(0, 3, side, side)
        return pixels, np.asarray(kept, dtype=np.int64)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._set_threads()
        reasons = np.array([str(r) for r in batch["reason"]], dtype=object)
        n, num_crops = batch["boxes"].shape[:2]
        scores = np.full((n, num_crops), np.nan, dtype=np.float32)
        rows = np.flatnonzero(reasons == "")
        if "encoded" in batch:
            pixels, rows = self._decode_and_cut(batch, rows, reasons)
        else:
            side = batch["crops"].shape[2]
            pixels = torch.from_numpy(batch["crops"][rows]).reshape(-1, side, side, 3).permute(0, 3, 1, 2)
        if len(rows):
            labels = torch.from_numpy(np.repeat(batch["class_index"][rows], num_crops).astype(np.int64))
            scores[rows] = score_crops(self.observers, pixels, labels, input_size=self.input_size,
                                       autocast_dtype=self.dtype, channels_last=self.channels_last,
                                       batch_size=self.batch_size).numpy().reshape(len(rows), num_crops)
        best, best_score = best_crops(scores)
        return {"image_id": batch["image_id"], "class_index": batch["class_index"], "name": batch["name"],
                "boxes": batch["boxes"], "size": batch["size"], "crop_scores": scores, "best_crop": best,
                "score": best_score.astype(np.float32), "reason": reasons}
