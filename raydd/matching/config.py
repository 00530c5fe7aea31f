"""The configuration of one trajectory-matching distillation (MTT, or IADD with importance weights)."""

from __future__ import annotations

from dataclasses import dataclass

from raydd.config import option
from raydd.matching.loss import MEMORY_MODES
from raydd.matching.weights import GRANULARITIES

__all__ = ["EXECUTION_FIELDS", "MatchConfig"]

# How a run executes, not what it computes: left out of the config hash, so a rerun may change them and resume.
EXECUTION_FIELDS = ("num_workers", "cpus_per_worker", "use_gpu", "gpus_per_worker", "memory", "checkpoint_every",
                    "name", "max_failures")


@dataclass
class MatchConfig:
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
    momentum: float = option(0.5, help="SGD momentum of images, alpha and weights (published: 0.5)")
    granularity: str = option("channel", help="IADD weights per tensor, channel or element")
    batch_syn: int | None = option(None, help="synthetic images per student step (default: all)")
    dsa: bool = option(True, help="differentiable Siamese augmentation in the student steps")
    memory: str = option("full", help="full: keep every step's graph (memory grows with syn_steps); constant: "
                                      "recompute one step at a time (same gradient, memory flat, more time)")
    checkpoint_every: int = option(100, help="report a checkpoint every N iterations (and at the end)")
    seed: int = option(0, help="seed of the initial images and of each worker's expert/start draws")
    num_workers: int = option(1, help="Ray Train workers; gradients are all-reduced")
    cpus_per_worker: int = option(1, help="CPUs a worker reserves, and its torch threads")
    use_gpu: bool = option(False, help="GPUs for the workers (gpus_per_worker each)")
    gpus_per_worker: float = option(1.0, help="with use_gpu: GPUs per worker; a fraction lets workers share a GPU "
                                              "(their process group then uses gloo: NCCL takes one rank a device)")
    max_failures: int = option(0, help="restart the workers from the last checkpoint up to this many times after "
                                       "a failure, such as a node lost (0: stop, and a rerun resumes)")
    name: str = option("match", help="run name under OUT's storage; rerunning resumes")

    def __post_init__(self) -> None:
        if self.method not in ("iadd", "mtt"):
            raise ValueError("method must be iadd or mtt")
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        for name in ("ipc", "iterations", "syn_steps", "expert_epochs", "max_start_epoch", "checkpoint_every",
                     "num_workers", "cpus_per_worker"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_failures < 0:
            raise ValueError("max_failures must be 0 or more")
