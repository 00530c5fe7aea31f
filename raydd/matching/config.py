"""The configuration of one trajectory-matching distillation (MTT, or IADD with importance weights)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from raydd.config import config_hash, option
from raydd.matching.loss import MEMORY_MODES
from raydd.matching.weights import GRANULARITIES, STEPS
from raydd.scaling import Restartable

__all__ = ["MatchConfig"]


@dataclass
class MatchConfig(Restartable):
    """One matching run; its Ray Train workers (``Scaling``) split each iteration's students and all-reduce."""

    data: str = option(help="real training images (synthetic images start as random real ones)")
    experts: str = option(help="folder of expert files (raydd experts)")
    out: str = option(help="output folder: a distilled set (never overwritten)")
    method: str = option("iadd", help="iadd (learned importance weights) or mtt (W = 1)")
    ipc: int = option(10, help="synthetic images per class")
    iterations: int = option(5000, help="matching iterations (published: 5000)")
    syn_steps: int = option(30, help="student SGD steps per iteration (published CIFAR-10 IPC 10: 30)")
    expert_epochs: int = option(2, help="M: expert epochs the student must match (published: 2)")
    max_start_epoch: int = option(20, help="start epochs are drawn below this (published IPC 10: 20)")
    lr_img: float = option(1000.0, help="SGD learning rate of the synthetic images")
    lr_lr: float = option(1e-5, help="SGD learning rate of the student step size alpha")
    lr_teacher: float = option(0.01, help="initial student step size alpha")
    lr_weights: float = option(0.01, help="IADD: SGD learning rate of the importance weights' log-scale rho")
    weights_step: str = option("group", help="IADD: group (rho's gradient scaled by the parameters' count over the "
                               "group's, so a group moves by its mismatch, whatever its size) or raw (its own "
                               "gradient: groups move in proportion to their size, as before issue 30)")
    weights_bound: float = option(10.0, help="IADD: rho kept within [-ln b, ln b], so no group weighs more than b^2 "
                                  "times another (inf: unbounded)")
    hold_still: bool = option(True, help="IADD: parameters the expert never moves (a conv bias before a norm) keep "
                              "weight 1 and stay out of the weights' normalisation")
    momentum: float = option(0.5, help="SGD momentum of images, alpha and weights (published: 0.5)")
    granularity: str = option("channel", help="IADD weights per tensor, channel or element")
    batch_syn: int | None = option(None, help="synthetic images per student step (default: all)")
    dsa: bool = option(True, help="differentiable Siamese augmentation in the student steps")
    memory: str = option("full", execution=True, help="full: keep every step's graph (memory grows with syn_steps); "
                         "constant: recompute one step at a time (same gradient, memory flat, more time)")
    checkpoint_every: int = option(100, execution=True, help="report a checkpoint every N iterations (and at the end)")
    seed: int = option(0, help="seed of the initial images and of each worker's expert/start draws")
    name: str = option("match", execution=True, help="run name under OUT's storage; rerunning resumes")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in ("iadd", "mtt"):
            raise ValueError("method must be iadd or mtt")
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        if self.weights_step not in STEPS:
            raise ValueError(f"weights_step must be one of {STEPS}")
        if not self.weights_bound > 1:
            raise ValueError("weights_bound must be above 1 (inf: unbounded)")
        for name in ("ipc", "iterations", "syn_steps", "expert_epochs", "max_start_epoch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def result_hash(self) -> str:
        """Each worker draws its own expert and start epoch every iteration and the workers average their image
        gradients, so the worker count (unset: 1) is part of the result; a rerun with another one starts over."""
        return config_hash(replace(self, num_workers=self.num_workers or 1), include=("num_workers",))
