"""Expert trajectories (MTT's "buffer"): networks trained on real data, their parameters saved every epoch.

Ray Train workers each own a share of the experts (expert i goes to worker i mod W); a rerun skips the experts
whose file exists. The files' format is ``raydd.io.experts``; a remote folder (``s3://…``) gets each finished
file uploaded by the worker that trained it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raydd.config import option
from raydd.data.zca import ZCA_FILE, Zca, has_experts_zca
from raydd.io.experts import (
    expert_files,
    expert_name,
    finished_experts,
    flat_params,
    param_layout,
    save_expert,
)
from raydd.io.storage import is_remote, mirror_of, upload_file
from raydd.models.registry import IMAGENET_NORM, MTT_NORMS, Normalization, mtt_normalization
from raydd.models.training import make_optimizer, train_step
from raydd.scaling import Restartable, start_train_worker
from raydd.transforms.augment import dsa

__all__ = ["ExpertsConfig", "train_expert", "train_experts"]

log = logging.getLogger("raydd.experts")


@dataclass
class ExpertsConfig(Restartable):
    """The experts to train; Ray Train workers (``Scaling``) share them, expert i going to worker i mod W."""

    data: str = option(help="real training images (ImageFolder or Parquet, local or URI)")
    out: str = option(help="folder of expert files (a rerun skips finished experts)")
    model: str = option("convnet3", help="zoo model of the experts")
    input_size: int | None = option(None, help="image side (default: the model's)")
    num_experts: int = option(100, help="experts to train (published: 100)")
    epochs: int = option(50, help="epochs per expert (published: 50)")
    lr: float = option(0.01, help="SGD learning rate (published: 0.01)")
    momentum: float = option(0.0, help="SGD momentum (published: 0)")
    weight_decay: float = option(0.0, help="weight decay (published: 0)")
    batch_size: int = option(256, help="batch size (published: 256)")
    dsa: bool = option(True, help="differentiable Siamese augmentation on every batch")
    max_per_class: int | None = option(None, help="train on at most this many images per class (seeded)")
    zca: bool = option(False, help="ZCA-whiten the images (MTT's CIFAR IPC 1/10 setting); saved as zca.pt beside "
                                   "the experts, and matching and evaluation apply the same transform")
    zca_reg: float = option(0.1, help="ZCA regularization added to the covariance eigenvalues (published: 0.1)")
    normalization: str = option("auto", help="per-channel mean/std of the inputs, as MTT's code sets them: auto "
                                "(CIFAR-10's or CIFAR-100's own for 10 or 100 classes at 32 px, else ImageNet's), "
                                f"or one of {', '.join(sorted(MTT_NORMS))}; matching and evaluation follow the experts")
    seed: int = option(0, help="expert i starts from seed + i")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_experts", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def train_expert(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: ExpertsConfig, seed: int,
                 device: torch.device | str = "cpu", on_epoch: Callable[[int, float], None] | None = None,
                 normalization: Normalization = IMAGENET_NORM) -> torch.Tensor:
    """Train one expert with plain SGD; returns its trajectory ``[epochs + 1, P]``. ``on_epoch(epoch, mean
    loss)`` is told after every epoch (progress); uint8 ``images`` are normalised with ``normalization``."""
    device = torch.device(device)
    model = model.to(device)
    optimizer = make_optimizer(model, "sgd", lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0xE]).generate_state(1)[0]))
    snapshots = [flat_params(model)]
    images, labels = images.to(device), labels.to(device)  # once: a batch is then an index on the device
    for _ in range(config.epochs):
        model.train()
        total, batches = torch.zeros((), device=device), 0  # summed on the device: no host sync per step
        order = torch.randperm(len(images), generator=generator)
        for s in range(0, len(order), config.batch_size):
            batch = order[s:s + config.batch_size].to(device, non_blocking=True)
            # float images are ready inputs (normalized, whitened); uint8 ones are normalized here
            x = images[batch] if images.is_floating_point() else normalization.to_input(images[batch], device)
            if config.dsa:
                x = dsa(x, generator)
            loss = F.cross_entropy(model(x), labels[batch])
            train_step(optimizer, loss)
            total, batches = total + loss.detach(), batches + 1
        snapshots.append(flat_params(model))
        if on_epoch is not None:
            on_epoch(len(snapshots) - 1, float(total) / max(1, batches))
    return torch.stack(snapshots)


def _whiten(images: torch.Tensor, config: ExpertsConfig, rank: int, folder: Path,
            normalization: Normalization) -> torch.Tensor:
    """Fit ZCA on this worker's copy of the normalised training images (every worker gets the same transform)
    and whiten them; rank 0 stores the transform beside the experts (``folder``: the local one or the mirror)."""
    x = normalization.apply(images.float() / 255)
    zca = Zca.fit(x, config.zca_reg)
    if rank == 0:
        zca.save(folder / ZCA_FILE)
        if is_remote(config.out):
            upload_file(folder / ZCA_FILE, f"{config.out}/{ZCA_FILE}")
    return zca.apply(x)


def _expert_loop(loop_config: dict[str, Any]) -> None:
    import ray.train

    from raydd.data import list_images, load_class_map, sample_per_class
    from raydd.data.memory import load_labelled
    from raydd.models.registry import build_model, get_entry

    config = ExpertsConfig(**loop_config["config"])
    worker = start_train_worker(config)
    rank, world, device = worker.rank, worker.world, worker.device
    remote = is_remote(config.out)
    out = mirror_of(config.out) if remote else Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    share = range(rank, config.num_experts, world)
    finished = finished_experts(config.out)
    mine = [i for i in share if expert_name(i) not in finished]
    done = len(share) - len(mine)
    if mine:
        index = list_images(config.data)
        cmap = load_class_map(None, index.classes)
        files = sample_per_class(index, config.max_per_class, seed=config.seed) if config.max_per_class else None
        size = config.input_size or get_entry(config.model).input_size
        loaded = load_labelled(index, cmap.classes, size=size, files=files)
        images, targets = loaded.images, loaded.labels
        norm_name, norm = mtt_normalization(config.normalization, cmap.num_classes, size)
        if config.zca:
            images = _whiten(images, config, rank, out, norm)
    # ray.train.report is a barrier across workers: every worker reports once per round, trained or not.
    for round_start in range(0, config.num_experts, world):
        i = round_start + rank
        if i in mine:
            torch.manual_seed(config.seed + i)
            model, model_args = build_model(config.model, cmap.num_classes, size)
            names, shapes = param_layout(model)
            def progress(epoch: int, loss: float, i: int = i, done: int = done) -> None:
                log.info("worker %d: expert %d epoch %d/%d loss %.3f (this worker: %d of %d experts done)", rank, i,
                         epoch, config.epochs, loss, done, len(share))

            trajectory = train_expert(model, images, targets, config, config.seed + i, device, on_epoch=progress,
                                      normalization=norm)
            save_expert(out / expert_name(i), trajectory=trajectory, model_name=config.model,
                        model_args=model_args, names=names, shapes=shapes, seed=config.seed + i,
                        config=asdict(config), normalization={"name": norm_name, "mean": list(norm.mean),
                                                              "std": list(norm.std)})
            if remote:
                upload_file(out / expert_name(i), f"{config.out}/{expert_name(i)}")
            done += 1
            log.info("worker %d: expert %d done (%d epochs)", rank, i, config.epochs)
        ray.train.report({"round": round_start // world, "experts_done_by_worker": done})


def _all_finished(config: ExpertsConfig) -> bool:
    names = finished_experts(config.out)
    if any(expert_name(i) not in names for i in range(config.num_experts)):
        return False
    return not config.zca or has_experts_zca(config.out)


def train_experts(config: ExpertsConfig) -> list[Path]:
    """Train the experts that are not on disk yet, shared across Ray Train workers; returns all expert files."""
    from raydd.data import list_images
    from raydd.scaling import run_torch_trainer

    list_images(config.data)
    out = config.out.rstrip("/") if is_remote(config.out) else str(Path(config.out).expanduser().resolve())
    if not is_remote(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    resolved = replace(config, out=out)  # the caller's config stays as given
    if _all_finished(resolved):  # a rerun after the experts are made starts no workers
        log.info("all %d experts are already in %s", config.num_experts, out)
        return expert_files(out)
    run_torch_trainer(_expert_loop, {"config": asdict(resolved)}, config, name="experts", storage_path=f"{out}/.ray")
    return expert_files(out)
