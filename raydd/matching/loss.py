"""The trajectory-matching losses of MTT and IADD, and the unrolled student they are computed on."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = ["matching_loss", "unroll_student"]


def matching_loss(student_end: torch.Tensor, target_end: torch.Tensor, start: torch.Tensor,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """‖W ⊙ (θ̂ − θ*_{t+M})‖² / ‖θ*_t − θ*_{t+M}‖²: IADD with weights ``W``, MTT without (W ≡ 1).

    The weights enter the numerator only; the denominator is MTT's unweighted normaliser.
    """
    diff = student_end - target_end
    if weights is not None:
        diff = weights * diff
    return diff.pow(2).sum() / (start - target_end).pow(2).sum()


def _unflatten(flat: torch.Tensor, names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name, shape in zip(names, shapes, strict=True):
        numel = int(torch.tensor(shape).prod()) if shape else 1
        out[name] = flat[start:start + numel].view(shape)
        start += numel
    return out


def unroll_student(model: nn.Module, names: Sequence[str], shapes: Sequence[tuple[int, ...]], start: torch.Tensor,
                   images: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor, *, steps: int, batch_size: int,
                   generator: torch.Generator, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
                   | None = None) -> torch.Tensor:
    """``steps`` SGD steps of size ``lr`` from ``start`` on mini-batches of the (learnable) ``images``, keeping
    the graph so that the final parameters are differentiable in the images, ``lr`` and nothing else.

    ``images`` are the model's (normalized) inputs; ``model`` only supplies the architecture.
    """
    params = start.detach().requires_grad_(True)
    for _ in range(steps):
        batch = torch.randperm(len(images), generator=generator)[:batch_size].to(images.device)
        x = images[batch]
        if augment is not None:
            x = augment(x, generator)
        logits = functional_call(model, _unflatten(params, names, shapes), (x,))
        loss = F.cross_entropy(logits, labels[batch])
        grad = torch.autograd.grad(loss, params, create_graph=True)[0]
        params = params - lr * grad
    return params
