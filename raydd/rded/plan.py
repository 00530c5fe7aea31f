"""RDED's step 0 and 1, on the driver: what the run needs resolved before any work (classes, observers' output
columns, sizes, precision), the seeded candidates, and the observer actors' Ray arguments both stages use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raydd.data import ClassMap, list_images, sample_per_class
from raydd.data.filesystem import resolve
from raydd.models.observer import observer_info
from raydd.models.precision import resolve_scoring_precision
from raydd.rded.config import RdedConfig
from raydd.scaling import actor_pool

__all__ = ["DistillPlan", "actor_args", "draw_candidates", "in_shard_order", "is_parquet", "plan_distillation"]


@dataclass(frozen=True)
class DistillPlan:
    """Everything resolved on the driver before any work starts."""

    fs: Any
    root: str
    classes: tuple[str, ...]
    columns: list[list[int] | None]
    weights: list[str]  # which weights each observer loads, recorded in the manifest
    input_size: int
    crop_size: int
    precision: str  # the scoring precision "auto" resolved to on the actors' kind of device
    gpu: bool


def plan_distillation(config: RdedConfig) -> tuple[DistillPlan, Any]:
    """Step 0, on the driver: the classes, each observer's output columns, sizes and precision (observers'
    metadata only: the actors load the weights), and the index of the data's files."""
    index = list_images(config.data)
    unknown = sorted(set(config.classes or ()) - set(index.classes))
    if unknown:
        raise ValueError(f"no such class folder(s) in {config.data}: {', '.join(unknown[:8])}")
    wanted = [c for c in index.classes if c in set(config.classes)] if config.classes else index.classes
    observers = [observer_info(spec) for spec in config.observers]  # the actors load the weights, not the driver
    cmap: ClassMap = observers[0].class_map_for(wanted, config.class_map)
    columns = [cmap.restricted(observers[0].num_outputs)]
    for observer in observers[1:]:
        other = observer.class_map_for(wanted, config.class_map).to_dict()
        columns.append([other[c] for c in cmap.classes])
    input_size = config.input_size or observers[0].input_size
    fs, root = resolve(config.data)
    gpu = config.use_gpu
    plan = DistillPlan(fs=fs, root=root, classes=cmap.classes, columns=columns, weights=[o.weights for o in observers],
                 input_size=input_size,
                 crop_size=input_size // config.factor, gpu=gpu,
                 precision=resolve_scoring_precision(config.precision, "cuda" if gpu else "cpu"))
    return plan, index


def draw_candidates(config: RdedConfig, plan: DistillPlan, index: Any) -> pa.Table:
    """Step 1: ``mipc`` seeded draws per class; ids follow (class order, draw order).

    Parquet rows are put in (shard, row) order, so that each block of candidates reads few shards and, in each,
    only the row groups it needs (datasets published as Parquet are shuffled across their shards). The order
    depends on the draws alone, never on the number of actors.
    """
    drawn = sample_per_class(index, config.mipc, seed=config.seed, min_count=config.per_class,
                             classes=list(plan.classes))
    names, labels = [], []
    for c, name in enumerate(plan.classes):
        names += [os.path.relpath(ref, plan.root) if "#" not in ref else ref.removeprefix(plan.root + "/")
                  for ref in drawn[name]]
        labels += [c] * len(drawn[name])
    table = pa.table({"image_id": pa.array(np.arange(len(names)), pa.int64()),
                      "class_index": pa.array(labels, pa.int32()), "name": pa.array(names, pa.string())})
    if is_parquet(names):
        table = table.take(pa.array(in_shard_order(names), pa.int64()))
    return table


def actor_args(config: RdedConfig, plan: DistillPlan, precision: str, batch_rows: int) -> dict[str, Any]:
    """``map_batches`` arguments of an observer actor pool. GPU actors get an explicit batch size (Ray Data
    requires one when GPUs are requested); forwards of a fixed shape keep the results independent of it."""
    import ray.data

    pool = actor_pool(config)
    return {
        "compute": ray.data.ActorPoolStrategy(size=pool.size),
        "fn_constructor_args": (list(config.observers), plan.columns),
        "fn_constructor_kwargs": {"precision": precision, "channels_last": config.channels_last,
                                  "threads": pool.threads, "batch_size": config.batch_size,
                                  "input_size": plan.input_size},
        "batch_size": batch_rows if plan.gpu else None,
        "num_cpus": pool.num_cpus,
        **({"num_gpus": pool.num_gpus} if plan.gpu else {}),
    }


def is_parquet(names: list[str]) -> bool:
    """Whether the references name Parquet rows (``shard#row``) rather than files."""
    return any("#" in name for name in names[:1])


def in_shard_order(names: list[str]) -> list[int]:
    """Positions of Parquet row references (``shard#row``) sorted by shard, then row."""
    shard, _, row = zip(*(n.rpartition("#") for n in names), strict=True)
    return sorted(range(len(names)), key=lambda i: (shard[i], int(row[i])))
