"""The trajectory-matching losses of MTT and IADD, the unrolled student they are computed on, and their
gradients in two memory modes.

``full`` keeps the graph of every student step, as the reference MTT code does: memory grows linearly with
``syn_steps``. ``constant`` gets the same gradient (up to float rounding) in memory that does not grow with
the activations of more steps: a first pass runs the steps without a graph and keeps only each step's
parameters (one flat vector, 1.3 MB for ConvNet-3) and random state; a backward pass then rebuilds one step's
graph at a time, newest first, and carries the gradient of the loss in that step's parameters down to the
previous one (reverse mode through the unroll with recomputation; TESLA's constant-memory idea). It costs one more
forward and backward per step (timings in BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = ["MEMORY_MODES", "matching_gradients", "matching_loss", "unroll_student"]

MEMORY_MODES = ("full", "constant")


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
        params = params - lr * _step_gradient(model, names, shapes, params, images, labels, batch_size=batch_size,
                                              generator=generator, augment=augment, create_graph=True)
    return params


def _step_gradient(model: nn.Module, names: Sequence[str], shapes: Sequence[tuple[int, ...]], params: torch.Tensor,
                   images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, generator: torch.Generator,
                   augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None,
                   create_graph: bool) -> torch.Tensor:
    """The student's cross-entropy gradient in ``params`` on one random (augmented) mini-batch."""
    batch = torch.randperm(len(images), generator=generator)[:batch_size].to(images.device, non_blocking=True)
    x = images[batch]
    if augment is not None:
        x = augment(x, generator)
    logits = functional_call(model, _unflatten(params, names, shapes), (x,))
    loss = F.cross_entropy(logits, labels[batch])
    return torch.autograd.grad(loss, params, create_graph=create_graph)[0]


def matching_gradients(model: nn.Module, names: Sequence[str], shapes: Sequence[tuple[int, ...]],
                       start: torch.Tensor, target: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                       lr: torch.Tensor, weights: nn.Module | None = None, *, steps: int, batch_size: int,
                       generator: torch.Generator, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
                       | None = None, memory: str = "full") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The matching loss from ``start`` towards ``target`` and its gradients in ``[images, lr, *weights'
    parameters]`` (IADD's weights when given, MTT without), in the ``memory`` mode of the module docstring."""
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}")
    w_params = list(weights.parameters()) if weights is not None else []
    if memory == "full":
        end = unroll_student(model, names, shapes, start, images, labels, lr, steps=steps, batch_size=batch_size,
                             generator=generator, augment=augment)
        loss = matching_loss(end, target, start, weights() if weights is not None else None)
        grads = torch.autograd.grad(loss, [images, lr, *w_params], allow_unused=True)
        return loss.detach(), [g if g is not None else torch.zeros_like(p)
                               for g, p in zip(grads, [images, lr, *w_params], strict=True)]

    step = dict(batch_size=batch_size, generator=generator, augment=augment)
    trajectory, states = [start.detach()], []
    for _ in range(steps):
        states.append(generator.get_state())
        theta = trajectory[-1].requires_grad_(True)
        grad = _step_gradient(model, names, shapes, theta, images.detach(), labels, create_graph=False, **step)
        trajectory.append((theta - lr.detach() * grad).detach())
    end = trajectory[-1].requires_grad_(True)
    loss = matching_loss(end, target, start, weights() if weights is not None else None)
    carried, *w_grads = torch.autograd.grad(loss, [end, *w_params])
    d_images, d_lr = torch.zeros_like(images), torch.zeros_like(lr)
    for i in reversed(range(steps)):
        generator.set_state(states[i])
        theta = trajectory[i].requires_grad_(True)
        after = theta - lr * _step_gradient(model, names, shapes, theta, images, labels, create_graph=True, **step)
        carried, g_images, g_lr = torch.autograd.grad(after, [theta, images, lr], grad_outputs=carried,
                                                      allow_unused=True)
        if g_images is not None:
            d_images += g_images
        d_lr += g_lr
    return loss.detach(), [d_images, d_lr, *w_grads]
