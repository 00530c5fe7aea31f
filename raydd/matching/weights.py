"""IADD's importance weights W on network parameters: raydd's documented parameterization.

The IADD paper states the loss (W on both sides of the numerator, MTT's unweighted denominator) and that α, W
and the images are optimised jointly by the same loss; it publishes no code. raydd fixes these choices (and
tests them):

* W = exp(ρ) / mean(exp(ρ)) — positive by construction, and normalised to mean 1 over all parameter
  *elements*, so the weights can redistribute importance but never collapse to 0 or blow up the loss scale;
* ρ starts at 0, so W ≡ 1 and IADD starts exactly as MTT;
* granularity ``tensor`` (one ρ per parameter tensor), ``channel`` (one per output channel of each tensor;
  one per element for vectors) or ``element`` (one per scalar parameter);
* ρ has its own optimizer and learning rate (``MatchConfig.lr_weights``); with ``step="group"`` (the default)
  its gradient is scaled per group by N / n_g, the weighed parameters' count over the group's (``"raw"`` leaves
  it as it is, the behaviour before issue 30).

Why the scaling: with n_g elements of mean squared mismatch m_g = mean((θ̂ − θ*)²) in group g, the raw gradient
is ∂L/∂ρ_g = (2 n_g W_g / D)·(W_g m_g − M), M = mean(W² (θ̂ − θ*)²) over all N elements — proportional to the
group's size, so a classifier row of 2,048 elements moved 2,048 times faster than a bias of one and small groups
never moved (issue 30). Scaled by N / n_g the step is 2 L W_g (W_g m_g / M − 1): the group's mismatch against the
average, whatever its size. Minimising L over W (under the mean-1 constraint) has one interior optimum,
W_g ∝ 1 / m_g: groups that the student matches worse than average lose weight, those it matches better gain —
the soft form of the authors' earlier method, which pruned the parameters hardest to match. That optimum is
also a trap, closed two ways:

* a parameter that neither the student nor the expert moves (a conv bias in front of a per-channel norm) has
  m_g = 0 and would draw unbounded weight (with group steps it took all of it within 125 iterations,
  BENCHMARKS.md): groups ``still`` in the expert's trajectory keep W = 1, take no step and stay out of the
  normalisation (``still_groups`` finds them);
* ρ is projected into [−ln b, ln b] after each step (``bound`` b), so no group's weight passes b² times
  another's however well it is matched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["GRANULARITIES", "STEPS", "ImportanceWeights", "still_elements"]

GRANULARITIES = ("tensor", "channel", "element")
STEPS = ("group", "raw")
STILL_TOLERANCE = 1e-4  # of the trajectory's RMS displacement: 4.7e-10 against 6e-6 for the least-moving channel


def still_elements(trajectory: torch.Tensor) -> torch.Tensor:
    """``[P]`` bool: the parameters an expert never moves, as ``[epochs + 1, P]`` ``trajectory`` records them
    (no epoch more than ``STILL_TOLERANCE`` times its RMS displacement from the first)."""
    moved = (trajectory - trajectory[0]).abs().amax(0)
    scale = (trajectory[-1] - trajectory[0]).pow(2).mean().sqrt()
    return moved <= STILL_TOLERANCE * scale


def _numel(shape: tuple[int, ...]) -> int:
    return int(torch.tensor(shape).prod()) if shape else 1


class ImportanceWeights(nn.Module):
    """W for a model's flattened parameters (``shapes`` in order); ``still`` (``[P]`` bool, from
    ``still_elements``) marks parameters held at W = 1, ``bound`` the projection of ρ (``None``: unbounded)."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], granularity: str = "channel", step: str = "group",
                 still: torch.Tensor | None = None, bound: float | None = None) -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}")
        if bound is not None and not bound > 1:
            raise ValueError("bound must be above 1 (None or inf: unbounded)")
        self.granularity = granularity
        self.step = step
        self.bound = bound
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
        held = torch.zeros(len(self.rho), dtype=torch.bool)
        if still is not None:
            if still.shape != self.index.shape:
                raise ValueError(f"still marks {still.numel()} parameters, the shapes hold {self.index.numel()}")
            moving = torch.zeros(len(self.rho)).index_add_(0, self.index, (~still.cpu()).float())
            held = moving == 0  # a group is held when none of its elements moves
        if held.all():
            raise ValueError("every parameter group is still: nothing to weigh")
        self.register_buffer("held", held, persistent=False)

    def _groups(self, shape: tuple[int, ...]) -> int:
        if self.granularity == "tensor":
            return 1
        if self.granularity == "element" or len(shape) <= 1:
            return _numel(shape)
        return shape[0]

    def group_weights(self) -> torch.Tensor:
        """One weight per group: 1 for held groups, the others normalised to mean 1 over their elements."""
        raw = torch.exp(self.rho).masked_fill(self.held, 0.0)
        counts = self.counts.masked_fill(self.held, 0.0)
        return (raw * counts.sum() / (raw * counts).sum()).masked_fill(self.held, 1.0)

    def forward(self) -> torch.Tensor:
        """The weight of every flattened parameter element, ``[P]``."""
        return self.group_weights()[self.index]

    def precondition(self, grad: torch.Tensor) -> torch.Tensor:
        """The gradient in ρ that the optimizer steps on: scaled by N / n_g (``step="group"``) or as it is."""
        if self.step == "raw":
            return grad
        return grad * (self.counts.masked_fill(self.held, 0.0).sum() / self.counts)

    @torch.no_grad()
    def project(self) -> None:
        """After a step: ρ back into [−ln b, ln b] (nothing without a bound)."""
        if self.bound is not None and math.isfinite(self.bound):
            limit = math.log(self.bound)
            self.rho.clamp_(-limit, limit)

    def summary(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per parameter tensor: mean, min and max of its weights."""
        flat = self.forward().detach()
        out, start = {}, 0
        for name, shape in zip(names, self.shapes, strict=True):
            part = flat[start:start + _numel(shape)]
            out[name] = {"mean": float(part.mean()), "min": float(part.min()), "max": float(part.max())}
            start += _numel(shape)
        return out
