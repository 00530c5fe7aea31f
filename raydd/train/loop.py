"""The classifier training loop that runs on every Ray Train worker: observers and teachers.

Optimiser, schedule, step and accuracy come from the training core (``raydd.models.training``) that the
experts' and the students' loops use too; this loop adds DDP across workers, sharded data, augmentation, label
smoothing and resumable checkpoints. Each worker decodes its own shard of the training files once into memory.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F

from raydd.data import ClassMap, DecodeStats, list_images, load_class_map, sample_per_class
from raydd.data.memory import load_labelled
from raydd.models.checkpoint import CHECKPOINT_FILE, load_reported_state, save_checkpoint
from raydd.models.precision import autocast, autocast_dtype
from raydd.models.registry import IMAGENET_NORM, build_model, get_entry
from raydd.models.training import class_hits, lr_at, make_optimizer, train_step
from raydd.scaling import start_train_worker
from raydd.train.config import TrainConfig
from raydd.transforms.augment import random_crop_flip

__all__ = ["steps_per_epoch", "train_loop_per_worker"]

log = logging.getLogger("raydd.train")


def _all_reduce(values: list[float], op: dist.ReduceOp = dist.ReduceOp.SUM) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def steps_per_epoch(count: int, per_worker_batch: int) -> int:
    """The optimizer steps every rank takes in an epoch: full batches of the smallest shard (at least one).

    DDP all-reduces the gradients of every step, so ranks must take the same number: shards differ by a file when
    the images do not divide evenly, or when a file is skipped on one rank only, and a rank that stopped early
    would leave the others waiting in the all-reduce forever.
    """
    smallest = int(_all_reduce([float(count)], dist.ReduceOp.MIN)[0])
    if smallest == 0:
        raise ValueError("a Ray Train worker has no training image (more workers than usable images?); "
                         "use fewer workers")
    return max(1, smallest // per_worker_batch)


def _shard(config: TrainConfig, folder: str, cmap: ClassMap | None, rank: int, world: int, stats: DecodeStats
           ) -> tuple[torch.Tensor, torch.Tensor, ClassMap]:
    """This worker's share of ``folder`` (at most ``max_per_class`` per class, seeded), decoded."""
    index = list_images(folder)
    cmap = cmap or load_class_map(config.class_map, index.classes)
    files = sample_per_class(index, config.max_per_class, seed=config.seed) if config.max_per_class else None
    loaded = load_labelled(index, cmap.classes, size=config.input_size or get_entry(config.model).input_size,
                           files=files, shard=(rank, world), stats=stats)
    return loaded.images, loaded.labels, cmap


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Train one classifier as described by ``loop_config["config"]`` (a ``TrainConfig`` as a dict)."""
    config = TrainConfig(**loop_config["config"])
    worker = start_train_worker(config)
    rank, world, device = worker.rank, worker.world, worker.device
    entry = get_entry(config.model)
    size = config.input_size or entry.input_size
    norm = IMAGENET_NORM
    dtype = autocast_dtype(config.precision, device)

    stats = DecodeStats()
    train_x, train_y, cmap = _shard(config, config.data, None, rank, world, stats)
    val_x = val_y = None
    if config.val_data:
        val_x, val_y, _ = _shard(config, config.val_data, cmap, rank, world, stats)

    torch.manual_seed(config.seed)
    model, model_args = build_model(config.model, cmap.num_classes, size)
    optimizer = make_optimizer(model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                               momentum=config.momentum)
    start_epoch = 0
    if (state := load_reported_state(ray.train.get_checkpoint(), CHECKPOINT_FILE)) is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        if rank == 0:
            log.info("resuming %s from epoch %d", config.name, start_epoch)
    model = ray.train.torch.prepare_model(model) if world > 1 else model.to(device)

    per_worker_batch = max(1, config.batch_size // world)
    steps = steps_per_epoch(len(train_x), per_worker_batch)
    padding = size // 8 if config.augment else 0
    for epoch in range(start_epoch, config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config.schedule, epoch, config.epochs, config.lr)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, epoch, rank])
                                                      .generate_state(1)[0]))
        order = torch.randperm(len(train_x), generator=generator)
        model.train()
        # Summed on the device, read once an epoch: no host round-trip per step.
        started, seen = time.perf_counter(), 0
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        for step in range(steps):
            batch = order[step * per_worker_batch:(step + 1) * per_worker_batch]
            x = norm.to_input(train_x[batch], device)
            if config.augment:
                x = random_crop_flip(x, padding, generator)
            y = train_y[batch].to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            train_step(optimizer, loss)
            loss_sum += loss.detach() * len(batch)
            correct += (logits.argmax(1) == y).sum()
            seen += len(batch)
        elapsed = time.perf_counter() - started
        totals = _all_reduce([float(loss_sum), int(correct), seen])
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr_at(config.schedule, epoch, config.epochs, config.lr),
            "train_loss": totals[0] / max(1.0, totals[2]),
            "train_acc": totals[1] / max(1.0, totals[2]),
            "images_per_s": totals[2] / max(elapsed, 1e-9),
            "steps": steps,
            "autocast": "bf16" if dtype == torch.bfloat16 else "fp32",
            "skipped_files": sum(stats.skipped.values()),  # this worker's shard; by reason beside it
            "skipped_by_reason": json.dumps(dict(sorted(stats.skipped.items()))),
            "resumed_from": start_epoch,
        }
        if val_x is not None:
            hits, _ = class_hits(model, val_x, val_y, inputs=lambda x: norm.to_input(x, device),
                                 num_classes=cmap.num_classes, device=device, batch_size=512, dtype=dtype)
            c, n = _all_reduce([int(hits.sum()), len(val_x)])
            metrics["val_acc"] = c / max(1.0, n)
        last = epoch + 1 == config.epochs
        if rank == 0:
            log.info("epoch %d/%d %s", epoch + 1, config.epochs,
                     " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                              if k not in ("epoch", "resumed_from")))
        if (epoch + 1) % config.checkpoint_every == 0 or last:
            with tempfile.TemporaryDirectory() as tmp:
                if rank == 0:
                    save_checkpoint(Path(tmp), model=model, model_name=config.model, model_args=model_args,
                                    normalization=norm, input_size=size, classes=list(cmap.classes),
                                    epoch=epoch + 1, optimizer=optimizer, config=asdict(config),
                                    extra={"metrics": metrics})
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0
                                 else None)
        else:
            ray.train.report(metrics)
