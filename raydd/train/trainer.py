"""``raydd.train.fit``: train a classifier with Ray Train's ``TorchTrainer`` (DDP: gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raydd._runtime import RunFailedError, init_ray, lost_nodes, runtime_env
from raydd.data import list_images, load_class_map
from raydd.models.registry import get_entry
from raydd.train.config import TrainConfig
from raydd.train.loop import train_loop_per_worker

__all__ = ["TrainResult", "fit", "run_torch_trainer"]

log = logging.getLogger("raydd.train")


@dataclass(frozen=True)
class TrainResult:
    """Where the final checkpoint is (loadable with ``checkpoint@PATH``) and the last reported metrics."""

    checkpoint: str
    metrics: dict[str, Any]


def _storage(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def run_torch_trainer(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], *, num_workers: int,
                      use_gpu: bool, name: str, storage_path: str, cpus_per_worker: int = 1,
                      gpus_per_worker: float = 1.0, keep_checkpoints: int | None = None,
                      max_failures: int = 0) -> Any:
    """Run ``loop`` on ``num_workers`` Ray Train workers whose processes start with the tuned allocator and
    ``cpus_per_worker`` torch threads; rerunning with the same ``name`` and ``storage_path`` resumes.
    Returns Ray's result.

    After a failure (a worker's node lost) Ray Train restarts the workers from the last checkpoint, up to
    ``max_failures`` times; past that the error says where the checkpoints are and how to resume.

    With ``use_gpu`` each worker takes ``gpus_per_worker`` GPUs; below one, several workers share a GPU and
    their process group uses gloo, since NCCL refuses two ranks on one device.

    Ray Train's local mode (0 workers) is refused: it keeps no checkpoint, so a run could neither resume nor
    hand back its result. One worker with several CPUs does what it would, with both.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    if num_workers < 1:
        raise ValueError("num_workers must be at least 1: Ray Train's local mode (0 workers) keeps no "
                         "checkpoints; use one worker with more CPUs (cpus_per_worker) instead")
    init_ray()
    storage = _storage(storage_path)
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        # Ray sets each worker's OMP_NUM_THREADS, and so torch's thread count, to the CPUs it reserves.
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker,
                                                           **({"GPU": gpus_per_worker} if use_gpu else {})}),
        torch_config=TorchConfig(backend="gloo") if use_gpu and gpus_per_worker < 1 else None,
        run_config=RunConfig(name=name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
                             failure_config=FailureConfig(max_failures=max_failures),
                             worker_runtime_env=runtime_env()),
    )
    started = time.time()
    try:
        return trainer.fit()
    except TrainingFailedError as err:
        retried = f" after {max_failures} restart(s)" if max_failures else ""
        raise RunFailedError(
            f"Ray Train run {name!r} failed{retried}: {err}\n{lost_nodes(started)}Its checkpoints are kept in "
            f"{storage}/{name}: run the same command again to resume from the last one (--max-failures N restarts "
            "the workers by itself that many times)") from err


def _check_inputs(config: TrainConfig) -> None:
    """Fail in the driver, before any worker starts, on a missing source or a bad class map."""
    index = list_images(config.data)
    cmap = load_class_map(config.class_map, index.classes)
    get_entry(config.model)
    if config.val_data:
        cmap.check(list_images(config.val_data).classes)


def fit(config: TrainConfig) -> TrainResult:
    """Train (or resume) the classifier ``config`` describes.

    Examples:
        >>> from raydd.train import TrainConfig, fit
        >>> result = fit(TrainConfig(data="tiny/train", val_data="tiny/val", epochs=2))  # doctest: +SKIP
        >>> result.metrics["val_acc"]                                                     # doctest: +SKIP

    Rerunning with the same ``name`` and ``storage_path`` resumes from the last checkpoint of that run.
    """
    _check_inputs(config)
    result = run_torch_trainer(train_loop_per_worker, {"config": asdict(config)}, num_workers=config.num_workers,
                               cpus_per_worker=config.cpus_per_worker, use_gpu=config.use_gpu,
                               gpus_per_worker=config.gpus_per_worker, name=config.name,
                               storage_path=config.storage_path, keep_checkpoints=2,
                               max_failures=config.max_failures)
    if result.checkpoint is None:
        raise RuntimeError(f"training run {config.name} finished without a checkpoint")
    log.info("final checkpoint: %s", result.checkpoint.path)
    return TrainResult(checkpoint=result.checkpoint.path, metrics=dict(result.metrics or {}))
