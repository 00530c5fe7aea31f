"""One student trained on one small set with one seed: the body of every evaluation trial.

It reuses the training core's builders (models, AdamW without decay on biases and norms, accuracy) and runs
the teacher in the same batch pipeline as the student, in inference mode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raydd.data.zca import Zca
from raydd.evaluate.losses import kd_loss
from raydd.models.logits import observer_logits
from raydd.models.observer import Observer
from raydd.models.precision import autocast, autocast_dtype
from raydd.models.registry import IMAGENET_NORM, Normalization, build_model
from raydd.models.training import class_hits, lr_at, make_optimizer, train_step
from raydd.transforms.augment import cutmix, dsa, hflip, mixup, random_resized_crop, shuffle_strips
from raydd.transforms.grid import grid_cells

__all__ = ["StudentPlan", "rded_reported_epochs", "student_optimizer", "teacher_logits", "train_student"]


@dataclass(frozen=True)
class StudentPlan:
    """Everything one trial needs besides its data and seed (all resolved by the runner)."""

    protocol: str
    student: str
    num_classes: int
    input_size: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    temperature: float
    mix: str
    factor: int
    eval_every: int
    threads: int | None = None
    precision: str = "fp32"
    labels: str = "method"  # "hard": cross-entropy on the class labels, whatever the protocol (DD-Ranking's HLR)
    augment: bool = True  # False: no strip shuffle, crop, flip or mixing (RDED), no DSA (MTT) — DD-Ranking's ARS
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std); None: ImageNet's


def rded_reported_epochs(epochs: int) -> list[int]:
    """The epochs (1-based) at which RDED's reference tests and keeps the best: every 10th and the last, once past
    80 % of training (its ``validation/main.py``; 250, 260, …, 300 of 300)."""
    return [n for n in range(1, epochs + 1) if (n % 10 == 0 or n == epochs) and n - 1 > 0.8 * epochs]


def _normalize(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    return norm.apply(x)


def student_optimizer(model: torch.nn.Module, plan: StudentPlan) -> torch.optim.Optimizer:
    """MTT's SGD (momentum 0.9), or RDED's AdamW with weight decay on weight matrices and kernels only."""
    return make_optimizer(model, "sgd" if plan.protocol == "mtt" else "adamw", lr=plan.lr,
                          weight_decay=plan.weight_decay, momentum=0.9)


def _test(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, device: torch.device,
          prepare: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype | None = None
          ) -> tuple[float, list[float]]:
    """Overall and per-class test accuracy (each class's share of its own images)."""
    correct, total = class_hits(model, x, y, inputs=lambda b: prepare(b.to(device).float() / 255),
                                num_classes=num_classes, device=device, batch_size=500, dtype=dtype)
    return float(correct.sum() / total.sum()), (correct / total.clamp(min=1)).tolist()


@torch.inference_mode()
def teacher_logits(teacher: Observer, pixels: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The online teacher's float32 logits for the student's (float, possibly mixed) views."""
    return observer_logits(teacher, pixels, dtype)


def _mixed_soft_targets(soft: torch.Tensor, perm: torch.Tensor, lam: float, temperature: float) -> torch.Tensor:
    """Stored labels under mixing: the λ-weighted mixture of both images' tempered distributions, returned as
    logits whose tempered softmax is exactly that mixture."""
    probs = F.softmax(soft / temperature, dim=1)
    return temperature * torch.log(lam * probs + (1 - lam) * probs[perm] + 1e-12)


def _cell_maps(size: int, factor: int, device: torch.device) -> torch.Tensor:
    """``[factor², size, size]``: one channel per grid cell, 1 inside it. Carried through the view's
    augmentations beside the pixels, each channel's sum over a view is that cell's area in it."""
    maps = torch.zeros(factor * factor, size, size, device=device)
    for c, (top, left, h, w) in enumerate(grid_cells(size, factor)):
        maps[c, top:top + h, left:left + w] = 1.0
    return maps


def _view_soft_targets(cells: torch.Tensor, maps: torch.Tensor, perm: torch.Tensor, lam: float,
                       box: tuple[int, int, int, int] | None, temperature: float) -> torch.Tensor:
    """Stored labels for the views the student sees: each image's cell labels (tempered distributions)
    weighted by the cells' areas in its view, and under CutMix by what of each image the mixed view shows (its
    own pixels outside the box, the partner's inside), under Mixup by λ; returned as logits whose tempered softmax
    is that mixture. ``cells`` ``[B, factor², C]`` logits, ``maps`` ``[B, factor², S, S]`` the augmented cell maps."""
    probs = F.softmax(cells / temperature, dim=2)
    if box is None:
        share = maps.mean((2, 3))
        view = (share[..., None] * probs).sum(1)
        mixed = lam * view + (1 - lam) * view[perm]
    else:
        top, left, bottom, right = box
        inside = torch.zeros(maps.shape[-2:], device=maps.device)
        inside[top:bottom, left:right] = 1.0
        own = (maps * (1 - inside)).sum((2, 3))
        pasted = (maps[perm] * inside).sum((2, 3))
        mixed = (own[..., None] * probs).sum(1) + (pasted[..., None] * probs[perm]).sum(1)
        mixed = mixed / (own.sum(1) + pasted.sum(1))[:, None]
    return temperature * torch.log(mixed + 1e-12)


def train_student(plan: StudentPlan, seed: int, train_x: torch.Tensor, train_y: torch.Tensor,
                  val_x: torch.Tensor, val_y: torch.Tensor, *, teacher: Observer | None = None,
                  soft: torch.Tensor | None = None, cells: torch.Tensor | None = None,
                  report: Callable[[dict[str, Any], dict[str, Any] | None], None] | None = None,
                  device: torch.device | str = "cpu", zca: Zca | None = None,
                  state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a fresh student and test it; returns the final accuracy, per-class accuracy, the curve and (RDED)
    the figure its reference reports: the best test at ``rded_reported_epochs``.

    RDED protocol needs ``teacher`` (online) or ``soft`` (stored logits, one row per image); MTT uses labels.
    With ``cells`` (stored logits of each image's grid cells, ``[N, factor², C]``) an augmented view is labelled
    by the cells it shows (``_view_soft_targets``) instead of by its whole image's label.
    ``plan.precision`` autocasts the student's and the teacher's forward passes; weights, optimizer state and
    the loss stay fp32.
    ``zca``: a set distilled in ZCA space (MTT's CIFAR setting) trains and tests on whitened inputs.
    ``report(metrics, state)`` is called after every epoch with its number, train loss, images/s and the seconds
    left at that pace; after a test also with ``test_acc`` and ``state`` (weights, optimizer, the augmentation
    generator, the curve so far; live tensors, to be saved or copied at once), else ``state`` is None. That
    ``state`` passed back continues the run exactly where it stood.
    """
    norm = Normalization(*plan.normalization) if plan.normalization else IMAGENET_NORM

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return zca.apply(_normalize(x, norm)) if zca is not None else _normalize(x, norm)

    device = torch.device(device)
    dtype = autocast_dtype(plan.precision, device)
    if plan.threads and device.type == "cpu":
        torch.set_num_threads(plan.threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1)[0]))
    model, _ = build_model(plan.student, plan.num_classes, plan.input_size)
    model = model.to(device)
    optimizer = student_optimizer(model, plan)
    schedule = "half_cosine" if plan.protocol == "rded" else "step"
    if teacher is not None:
        teacher = teacher.to(device).eval()
    curve: list[dict[str, float]] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        curve, per_class, start = list(state["curve"]), list(state["per_class"]), int(state["epoch"])
    steps = math.ceil(len(train_x) / plan.batch_size)
    hard = plan.protocol == "mtt" or plan.labels == "hard"
    reported = set(rded_reported_epochs(plan.epochs)) if plan.protocol == "rded" else set()
    # RDED's reference runs the student once more without gradients on the batch before mixing (for its train
    # accuracy); in train mode that pass also moves BatchNorm's running statistics, which the test uses.
    clean_pass = plan.protocol == "rded" and plan.augment and any(
        isinstance(m, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)) for m in model.modules())
    # The set (small, uint8) lives on the device for the whole run: a batch is an index, not a host copy.
    train_x, train_y = train_x.to(device), train_y.to(device)
    soft = soft.to(device) if soft is not None else None
    by_view = cells is not None and plan.protocol == "rded" and plan.augment and not hard and plan.factor > 1
    if by_view:
        if cells.shape[1] != plan.factor**2:
            raise ValueError(f"stored labels for {cells.shape[1]} cells an image, but factor {plan.factor}")
        cells, maps = cells.to(device), _cell_maps(train_x.shape[-1], plan.factor, device)
    started, first_epoch = time.perf_counter(), start
    for epoch in range(start, plan.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(schedule, epoch, plan.epochs, plan.lr)
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps):
            batch = order[step * plan.batch_size:(step + 1) * plan.batch_size].to(device, non_blocking=True)
            x = train_x[batch].float() / 255
            y = train_y[batch]
            perm, lam, box = None, 1.0, None
            if plan.protocol == "rded" and plan.augment:
                if by_view:  # the cell maps ride along as extra channels: the same draws, the same view
                    x = torch.cat([x, maps.expand(len(x), -1, -1, -1)], 1)
                x = shuffle_strips(x, plan.factor, generator)
                x = random_resized_crop(x, (1.0 / plan.factor, 1.0), generator)
                x = hflip(x, generator)
                if by_view:
                    x, view_maps = x[:, :3].contiguous(), x[:, 3:]
                unmixed = x
                if plan.mix == "cutmix":
                    x, perm, lam, box = cutmix(x, generator)
                else:
                    x, perm, lam = mixup(x, generator)
                if clean_pass:  # the reference's CutMix pastes in place: its "un-mixed" batch is the mixed one
                    with torch.no_grad(), autocast(device, dtype):
                        model(prepare(x if plan.mix == "cutmix" else unmixed))
                perm = perm.to(device, non_blocking=True)
            elif plan.protocol == "mtt" and plan.augment:
                x = dsa(x, generator)
            with autocast(device, dtype):
                logits = model(prepare(x)).float()
            if hard:
                loss = F.cross_entropy(logits, y)
                if perm is not None:  # the mixed image's label is the λ-weighted pair (CutMix's hard-label loss)
                    loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y[perm])
            else:
                if by_view:
                    target = _view_soft_targets(cells[batch], view_maps, perm, lam, box, plan.temperature)
                elif soft is not None:
                    rows = soft[batch]
                    target = rows if perm is None else _mixed_soft_targets(rows, perm, lam, plan.temperature)
                else:
                    target = teacher_logits(teacher, x, dtype)
                loss = kd_loss(logits, target, plan.temperature)
            train_step(optimizer, loss)
            loss_sum += loss.detach()
        elapsed = time.perf_counter() - started
        done = epoch + 1 - first_epoch
        metrics = {"epoch": epoch + 1, "train_loss": float(loss_sum) / steps,
                   "images_per_s": done * len(train_x) / elapsed, "eta_s": elapsed / done * (plan.epochs - epoch - 1)}
        if (epoch + 1) % plan.eval_every == 0 or epoch + 1 == plan.epochs or epoch + 1 in reported:
            test_acc, per_class = _test(model, val_x, val_y, plan.num_classes, device, prepare, dtype)
            curve.append({"epoch": epoch + 1, "test_acc": test_acc})
            if report is not None:
                report({**metrics, "test_acc": test_acc},
                       {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(), "curve": curve, "per_class": per_class})
        elif report is not None:
            report(metrics, None)
    at_reported = [c["test_acc"] for c in curve if c["epoch"] in reported]
    return {"final_acc": curve[-1]["test_acc"], "best_acc": max(c["test_acc"] for c in curve),
            "reference_acc": max(at_reported) if at_reported else None, "per_class_acc": per_class, "curve": curve}
