"""IADD's importance weights W on network parameters: raydd's documented parameterization.

The IADD paper states the loss (W on both sides of the numerator, MTT's unweighted denominator) and that α, W
and the images are optimised jointly by the same loss; it publishes no code. raydd fixes these choices (and
tests them):

* W = exp(ρ) / mean(exp(ρ)) — positive by construction, and normalised to mean 1 over all parameter
  *elements*, so the weights can redistribute importance but never collapse to 0 or blow up the loss scale;
* ρ starts at 0, so W ≡ 1 and IADD starts exactly as MTT;
* granularity ``tensor`` (one ρ per parameter tensor), ``channel`` (one per output channel of each tensor;
  one per element for vectors) or ``element`` (one per scalar parameter);
* ρ has its own optimizer and learning rate (``MatchConfig.lr_weights``); with ``step="group"`` its gradient
  is scaled per group by N / n_g, the parameters' count over the group's (``"raw"``, the default, leaves it).

Why the scaling: with n_g elements of mean squared mismatch m_g = mean((θ̂ − θ*)²) in group g, the raw gradient
is ∂L/∂ρ_g = (2 n_g W_g / D)·(W_g m_g − M), M = mean(W² (θ̂ − θ*)²) over all N elements — proportional to the
group's size, so a classifier row of 2,048 elements moved 2,048 times faster than a bias of one and small groups
never moved (issue 30). Scaled by N / n_g the step is 2 L W_g (W_g m_g / M − 1): the group's mismatch against the
average, whatever its size. Minimising L over W (under the mean-1 constraint) has one interior optimum,
W_g ∝ 1 / m_g: groups that the student matches worse than average lose weight, those it matches better gain —
the soft form of the authors' earlier method, which pruned the parameters hardest to match. That optimum is
also the trap: a parameter that neither the student nor the expert moves (a conv bias before a per-channel norm)
has m_g = 0 and draws unbounded weight; with group steps it took all of it within 125 iterations (BENCHMARKS.md),
so ``group`` is not the default until the weights are bounded or such parameters left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["GRANULARITIES", "STEPS", "ImportanceWeights"]

GRANULARITIES = ("tensor", "channel", "element")
STEPS = ("group", "raw")


def _numel(shape: tuple[int, ...]) -> int:
    return int(torch.tensor(shape).prod()) if shape else 1


class ImportanceWeights(nn.Module):
    def __init__(self, shapes: Sequence[tuple[int, ...]], granularity: str = "channel", step: str = "raw") -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}")
        self.granularity = granularity
        self.step = step
        self.shapes = [tuple(s) for s in shapes]
        sizes = [self._groups(s) for s in self.shapes]
        self.rho = nn.Parameter(torch.zeros(sum(sizes)))
        # Each element's group index into rho, and each group's element count (for the mean over elements).
        index, start = [], 0
        for shape, groups in zip(self.shapes, sizes, strict=True):
            index.append(torch.arange(groups).repeat_interleave(_numel(shape) // groups) + start)
            start += groups
        self.register_buffer("index", torch.cat(index), persistent=False)
        self.register_buffer("counts", torch.bincount(self.index).float(), persistent=False)

    def _groups(self, shape: tuple[int, ...]) -> int:
        if self.granularity == "tensor":
            return 1
        if self.granularity == "element" or len(shape) <= 1:
            return _numel(shape)
        return shape[0]

    def group_weights(self) -> torch.Tensor:
        """One weight per group, normalised so that the mean over parameter elements is 1."""
        raw = torch.exp(self.rho)
        return raw * self.counts.sum() / (raw * self.counts).sum()

    def forward(self) -> torch.Tensor:
        """The weight of every flattened parameter element, ``[P]``."""
        return self.group_weights()[self.index]

    def precondition(self, grad: torch.Tensor) -> torch.Tensor:
        """The gradient in ρ that the optimizer steps on: scaled by N / n_g (``step="group"``) or as it is."""
        if self.step == "raw":
            return grad
        return grad * (self.counts.sum() / self.counts)

    def summary(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per parameter tensor: mean, min and max of its weights."""
        flat = self.forward().detach()
        out, start = {}, 0
        for name, shape in zip(names, self.shapes, strict=True):
            part = flat[start:start + _numel(shape)]
            out[name] = {"mean": float(part.mean()), "min": float(part.min()), "max": float(part.max())}
            start += _numel(shape)
        return out
