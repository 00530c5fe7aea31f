"""``raydd demo``: RDED end to end on the real CIFAR-10 sample and observer shipped inside the package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from raydd.config import option
from raydd.io.distilled import DistilledSet
from raydd.rded import RdedConfig, distill

__all__ = ["DemoConfig", "run_demo", "sample_path"]


def sample_path(*parts: str) -> str:
    """A file of the built-in sample (see ``raydd/sample/README.md``)."""
    return str(resources.files("raydd").joinpath("sample", *parts))


@dataclass
class DemoConfig:
    out: str = option("raydd-demo", help="output folder (rerunning the same demo reuses it)")
    ipc: int = option(4, help="distilled images per class")
    factor: int = option(1, help="patches per side (1: the published setting for 32 px data)")
    mipc: int = option(40, help="candidates per class (the sample has 40)")
    seed: int = option(0, help="seed")
    num_workers: int | None = option(None, execution=True, help="scoring actors (default: one per CPU)")


def run_demo(config: DemoConfig) -> DistilledSet:
    """Distil the 400-image CIFAR-10 sample with the shipped ResNet-20 observer."""
    return distill(RdedConfig(
        data=sample_path("cifar10", "train"),
        observers=[f"cifar_resnet20@{sample_path('cifar10_resnet20.th')}"],
        out=config.out, ipc=config.ipc, factor=config.factor, mipc=config.mipc, seed=config.seed,
        num_workers=config.num_workers, input_size=32,
    ))
