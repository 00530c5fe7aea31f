"""IADD's importance weights W on network parameters: raydd's documented parameterization.

The IADD paper gives no code, so raydd fixes these choices (and tests them):

* W = exp(ρ) / mean(exp(ρ)) — positive by construction, and normalised to mean 1 over all parameter
  *elements*, so the weights can redistribute importance but never collapse to 0 or blow up the loss scale;
* ρ starts at 0, so W ≡ 1 and IADD starts exactly as MTT;
* granularity ``tensor`` (one ρ per parameter tensor), ``channel`` (one per output channel of each tensor;
  one per element for vectors) or ``element`` (one per scalar parameter);
* ρ has its own optimizer and learning rate (``MatchConfig.lr_weights``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["GRANULARITIES", "ImportanceWeights"]

GRANULARITIES = ("tensor", "channel", "element")


class ImportanceWeights(nn.Module):
    def __init__(self, shapes: Sequence[tuple[int, ...]], granularity: str = "channel") -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        self.granularity = granularity
        self.shapes = [tuple(s) for s in shapes]
        sizes = [self._groups(s) for s in self.shapes]
        self.rho = nn.Parameter(torch.zeros(sum(sizes)))
        # Each element's group index into rho, and each group's element count (for the mean over elements).
        index, start = [], 0
        for shape, groups in zip(self.shapes, sizes, strict=True):
            numel = int(torch.tensor(shape).prod()) if shape else 1
            index.append(torch.arange(groups).repeat_interleave(numel // groups) + start)
            start += groups
        self.register_buffer("index", torch.cat(index), persistent=False)
        self.register_buffer("counts", torch.bincount(self.index).float(), persistent=False)

    def _groups(self, shape: tuple[int, ...]) -> int:
        numel = int(torch.tensor(shape).prod()) if shape else 1
        if self.granularity == "tensor":
            return 1
        if self.granularity == "element" or len(shape) <= 1:
            return numel
        return shape[0]

    def group_weights(self) -> torch.Tensor:
        """One weight per group, normalised so that the mean over parameter elements is 1."""
        raw = torch.exp(self.rho)
        return raw * self.counts.sum() / (raw * self.counts).sum()

    def forward(self) -> torch.Tensor:
        """The weight of every flattened parameter element, ``[P]``."""
        return self.group_weights()[self.index]

    def summary(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per parameter tensor: mean, min and max of its weights."""
        flat = self.forward().detach()
        out, start = {}, 0
        for name, shape in zip(names, self.shapes, strict=True):
            numel = int(torch.tensor(shape).prod()) if shape else 1
            part = flat[start:start + numel]
            out[name] = {"mean": float(part.mean()), "min": float(part.min()), "max": float(part.max())}
            start += numel
        return out
