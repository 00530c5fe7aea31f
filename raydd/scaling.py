"""How a job runs on Ray, spelt once for every job: workers, their CPUs, GPUs and threads, restarts, the cluster.

Every job's config inherits these fields, so ``--num-workers``, ``--cpus-per-worker``, ``--gpus-per-worker`` …
mean the same everywhere: a worker is RDED's scoring actor, a Ray Train worker (``train``, ``experts``,
``match``) or one of evaluation's concurrent student trials. All are execution only (``option(execution=True)``):
no job's result hash contains them, so a rerun with more workers or another cluster resumes the same run.

This module is the one place they become Ray arguments: an actor pool's (``actor_pool``, fed by
``table_dataset`` in blocks that do not depend on the pool), a Tune trial's (``trial_resources``), a Ray Train
run's (``run_torch_trainer``, and ``start_train_worker`` inside its workers); and the one place a failed run
says how to resume (``run_failed``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from raydd.config import option
from raydd.runtime import RunFailedError, lost_nodes

__all__ = ["ActorPool", "Restartable", "Scaling", "TrainWorker", "actor_pool", "run_failed", "run_torch_trainer",
           "scaling_of", "start_train_worker", "table_dataset", "trial_resources",
           "trial_threads"]


@dataclass(kw_only=True)
class Scaling:
    """The Ray resources of a job's workers; keyword-only, so a job's own required fields may follow."""

    num_workers: int | None = option(None, execution=True, help="Ray workers: RDED's scoring actors, Ray Train's "
                                     "workers, or evaluation's concurrent student trials (default: RDED one per "
                                     "CPU, or GPUs / gpus_per_worker; Ray Train 1; evaluation as many as the "
                                     "resources allow)")
    cpus_per_worker: float | None = option(None, execution=True, help="CPUs a worker reserves (default 1; a GPU "
                                           "actor of RDED's: a share of the CPUs left to its decoding tasks)")
    gpus_per_worker: float = option(0.0, execution=True, help="GPUs a worker reserves (0: CPU only); a fraction "
                                    "lets workers share a GPU (a Ray Train process group then uses gloo: NCCL "
                                    "takes one rank a device)")
    threads_per_worker: int | None = option(None, execution=True, help="torch threads of a CPU worker (default: its "
                                            "CPUs; RDED: the CPUs divided among its actors)")
    address: str | None = option(None, execution=True, help="Ray address (default: the running cluster, else a "
                                 "local one)")

    def __post_init__(self) -> None:
        for name in ("num_workers", "threads_per_worker"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be more than 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be 0 (CPU) or more, got {self.gpus_per_worker}")

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


@dataclass(kw_only=True)
class Restartable(Scaling):
    """``Scaling`` for jobs that checkpoint, and so can restart their workers after a failure."""

    max_failures: int = option(0, execution=True, help="restart from the last checkpoint up to this many times "
                               "after a failure, such as a node lost (0: stop, and a rerun resumes)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_failures < 0:
            raise ValueError("max_failures must be 0 or more")


def scaling_of(config: Scaling, kind: type[Scaling] = Restartable) -> dict[str, Any]:
    """``config``'s values of ``kind``'s fields: one job's scaling handed on to the config of the next."""
    return {f.name: getattr(config, f.name) for f in fields(kind)}


def _storage(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def run_torch_trainer(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], scaling: Restartable, *,
                      name: str, storage_path: str, keep_checkpoints: int | None = None) -> Any:
    """Run ``loop`` on ``scaling.num_workers`` Ray Train workers (default 1) whose processes start with the tuned
    allocator and one torch thread per reserved CPU (``threads_per_worker`` is the loop's to apply); rerunning
    with the same ``name`` and ``storage_path`` resumes. Returns Ray's result.

    After a failure (a worker's node lost) Ray Train restarts the workers from the last checkpoint, up to
    ``max_failures`` times; past that the error says where the checkpoints are and how to resume. Below one GPU
    a worker shares its GPU and the process group uses gloo, since NCCL refuses two ranks on one device.

    Ray Train's local mode (0 workers) is refused by the config: it keeps no checkpoint, so a run could neither
    resume nor hand back its result. One worker with several CPUs does what it would, with both.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    from raydd.runtime import init_ray, runtime_env

    init_ray(scaling.address)
    storage = _storage(storage_path)
    resources = {"CPU": scaling.cpus_per_worker or 1, **({"GPU": scaling.gpus_per_worker} if scaling.use_gpu else {})}
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        # Ray sets each worker's OMP_NUM_THREADS, and so torch's thread count, to the CPUs it reserves.
        scaling_config=ScalingConfig(num_workers=scaling.num_workers or 1, use_gpu=scaling.use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="gloo") if scaling.use_gpu and scaling.gpus_per_worker < 1 else None,
        run_config=RunConfig(name=name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
                             failure_config=FailureConfig(max_failures=scaling.max_failures),
                             worker_runtime_env=runtime_env()),
    )
    started = time.time()
    try:
        return trainer.fit()
    except TrainingFailedError as err:
        raise run_failed(f"Ray Train run {name!r}", err, scaling, started=started,
                         kept=f"Its checkpoints are kept in {storage}/{name}: run the same command again to resume "
                              "from the last one") from err


def run_failed(what: str, error: BaseException, scaling: Restartable, *, started: float, kept: str) -> RunFailedError:
    """The error of a run that failed past its restarts: what failed and why, the nodes lost since ``started``,
    where its work is kept and how to resume it (``kept``), and the flag that restarts by itself."""
    retried = f" after {scaling.max_failures} restart(s)" if scaling.max_failures else ""
    return RunFailedError(f"{what} failed{retried}: {error}\n{lost_nodes(started)}{kept} (--max-failures N restarts "
                          "it by itself that many times)")


@dataclass(frozen=True)
class TrainWorker:
    """Where a Ray Train worker stands: its rank among ``world`` workers and its device."""

    rank: int
    world: int
    device: Any  # torch.device


def start_train_worker(scaling: Scaling) -> TrainWorker:
    """The first call of every Ray Train loop: the tuned allocator, torch's threads when the config names a count
    (Ray set the default: the CPUs the worker reserved), this worker's rank and its device (the GPU Ray gave it,
    or the CPU)."""
    import ray.train
    import ray.train.torch
    import torch

    from raydd.runtime import tune_allocator

    tune_allocator()
    if scaling.threads_per_worker is not None:
        torch.set_num_threads(scaling.threads_per_worker)
    context = ray.train.get_context()
    device = ray.train.torch.get_device() if scaling.use_gpu else torch.device("cpu")
    return TrainWorker(context.get_world_rank(), context.get_world_size(), device)


def trial_resources(scaling: Scaling) -> dict[str, float]:
    """What each Ray Tune trial reserves."""
    return {"cpu": scaling.cpus_per_worker or 1.0, "gpu": scaling.gpus_per_worker}


def trial_threads(scaling: Scaling) -> int:
    """The torch threads of a Ray Tune trial: ``threads_per_worker``, else one per CPU it reserves."""
    return scaling.threads_per_worker or max(1, int(scaling.cpus_per_worker or 1))


@dataclass(frozen=True)
class ActorPool:
    """A Ray Data actor pool's size and what each actor reserves, with the torch threads it should run."""

    size: int
    num_cpus: float
    num_gpus: float
    threads: int


def actor_pool(scaling: Scaling) -> ActorPool:
    """The actor pool ``scaling`` asks for on the running cluster: by default one actor per CPU, or per
    ``gpus_per_worker`` of the cluster's GPUs. A GPU actor still keeps a core busy (launching kernels, decoding
    what nvJPEG cannot) but must not take the cores its pipeline's CPU tasks need to read and encode: by default
    the GPU actors reserve at most half of them."""
    import ray

    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", os.cpu_count() or 1)))
    if scaling.use_gpu:
        default = int(resources.get("GPU", 0) / scaling.gpus_per_worker)
        if default < 1 and scaling.num_workers is None:
            raise ValueError(f"gpus_per_worker = {scaling.gpus_per_worker} but the Ray cluster has "
                             f"{resources.get('GPU', 0)} GPUs; lower it, or score on CPU with 0")
    else:
        default = cpus
    size = scaling.num_workers or default
    if scaling.use_gpu:
        num_cpus = scaling.cpus_per_worker or min(1.0, cpus / (2 * size))
    else:
        num_cpus = scaling.cpus_per_worker or 1
    return ActorPool(size=size, num_cpus=num_cpus, num_gpus=scaling.gpus_per_worker,
                     threads=scaling.threads_per_worker or max(1, cpus // size))


def table_dataset(table: Any, block_rows: int) -> Any:
    """A Ray dataset of a driver's small table (pyarrow) in blocks of at most ``block_rows``.

    The blocks depend on the table alone (never on the actor count), so every actor sees the same batches
    whatever the pool size: identical scores, bit for bit. ``from_items`` describes its blocks on the driver;
    ``from_arrow`` runs a remote task per block for that, which cost 1.5 s a dataset on a 2-core machine.
    """
    import numpy as np
    import ray.data

    # List cells become arrays, so that Ray Data carries them as tensor columns (a nested Python list column
    # would leave each operator's output to be pickled).
    rows = [{k: np.asarray(v) if isinstance(v, list) else v for k, v in row.items()} for row in table.to_pylist()]
    return ray.data.from_items(rows, override_num_blocks=-(-table.num_rows // block_rows))
