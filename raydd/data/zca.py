"""ZCA whitening, as MTT applies it to CIFAR before training experts and matching (MTT's published CIFAR setting).

Fitted once on the (normalized) real training images: ``W = U diag(1 / sqrt(λ + reg)) Uᵀ`` from the
eigendecomposition of their pixel covariance, so ``x ↦ (x − μ) W`` decorrelates pixels while keeping images
looking like images; ``reg`` (published: 0.1) keeps the smallest eigenvalues from blowing up noise. The same
transform must reach every stage that sees the images (experts, matching, the students' train and test
images), so it travels as a file, ``zca.pt``, beside the experts and inside the distilled set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from raydd.io.storage import fetch, is_remote, list_files

__all__ = ["ZCA_FILE", "Zca", "experts_zca", "has_experts_zca"]

ZCA_FILE = "zca.pt"


@dataclass(frozen=True)
class Zca:
    mean: torch.Tensor       # [D]
    transform: torch.Tensor  # [D, D], symmetric
    inverse: torch.Tensor    # [D, D]
    reg: float

    @classmethod
    def fit(cls, images: torch.Tensor, reg: float = 0.1) -> Zca:
        """Fit on float images ``[N, C, H, W]`` (already normalized), in float64 for a stable eigensolver."""
        flat = images.reshape(len(images), -1).double()
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.T @ centred / len(flat)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        eigvals = eigvals.clamp(min=0)
        transform = eigvecs @ torch.diag((eigvals + reg).rsqrt()) @ eigvecs.T
        inverse = eigvecs @ torch.diag((eigvals + reg).sqrt()) @ eigvecs.T
        return cls(mean.float(), transform.float(), inverse.float(), reg)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1) - self.mean.to(x.device)
        return (flat @ self.transform.to(x.device)).reshape(x.shape)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1) @ self.inverse.to(x.device)
        return (flat + self.mean.to(x.device)).reshape(x.shape)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"mean": self.mean, "transform": self.transform, "inverse": self.inverse, "reg": self.reg}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Zca:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["mean"], state["transform"], state["inverse"], float(state["reg"]))


def has_experts_zca(folder: str) -> bool:
    """Whether ``folder`` (local or remote) holds the ZCA transform its experts were trained with."""
    if is_remote(folder):
        return bool(list_files(folder.rstrip("/"), ZCA_FILE))
    return (Path(folder).expanduser() / ZCA_FILE).exists()


def experts_zca(folder: str) -> Zca | None:
    """The ZCA transform the experts of ``folder`` were trained with, or None (no ZCA)."""
    if not has_experts_zca(folder):
        return None
    if is_remote(folder):
        return Zca.load(fetch(f"{folder.rstrip('/')}/{ZCA_FILE}"))
    return Zca.load(Path(folder).expanduser() / ZCA_FILE)
