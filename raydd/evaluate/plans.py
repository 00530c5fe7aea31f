"""The plan of each student trial: the protocol's recipe resolved from the config and the set, and the
full-data run DD-Ranking's scores compare against (cached by what decides its result)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from raydd.evaluate.config import EvalConfig, rded_recipe
from raydd.evaluate.inputs import SetSource, kd_temperature
from raydd.evaluate.students import StudentPlan
from raydd.scaling import trial_threads

__all__ = ["full_data_cache", "full_data_key", "full_data_plan", "student_plan"]


def student_plan(config: EvalConfig, source: SetSource, size: int, teacher_model: str = "") -> StudentPlan:
    rded = config.protocol == "rded"
    batch, lr = rded_recipe(source.ipc, len(source.classes), size, config.student, teacher_model) if rded else (
        256, source.learned_lr or 0.01)
    return StudentPlan(
        protocol=config.protocol, student=config.student, num_classes=len(source.classes), input_size=size,
        epochs=config.epochs or (300 if rded else 1000), batch_size=config.batch_size or batch,
        lr=config.lr if config.lr is not None else lr,
        weight_decay=config.weight_decay if config.weight_decay is not None else (0.01 if rded else 5e-4),
        temperature=kd_temperature(config), mix=config.mix,
        factor=config.factor or source.factor, eval_every=config.eval_every, precision=config.precision,
        # MTT's students see the inputs its experts saw; RDED's reference normalises with ImageNet's statistics.
        normalization=None if rded or not source.normalization else (tuple(source.normalization["mean"]),
                                                                     tuple(source.normalization["std"])),
        threads=trial_threads(config))


def full_data_plan(plan: StudentPlan, epochs: int) -> StudentPlan:
    """DD-Ranking's full-data run for CIFAR and ConvNet-3: hard labels, SGD at 0.01 (momentum 0.9, decay 5e-4),
    batch 512, the learning rate ×0.1 from half-way (MTT's evaluation schedule), no augmentation."""
    return replace(plan, protocol="mtt", labels="hard", augment=False, epochs=epochs, batch_size=512, lr=0.01,
                   weight_decay=5e-4)


def full_data_key(config: EvalConfig, plan: StudentPlan, zca: bool) -> str:
    what = {"real_data": config.real_data, "student": plan.student, "input_size": plan.input_size,
            "epochs": plan.epochs, "zca": zca, "precision": plan.precision, "seed": config.seeds[0]}
    if plan.normalization is not None:  # keys made before it was a plan field stay as they were
        what["normalization"] = plan.normalization
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def full_data_cache(config: EvalConfig, key: str) -> Path:
    return Path(config.cache_dir or Path.home() / ".cache" / "raydd").expanduser() / "full_data" / f"{key}.json"
