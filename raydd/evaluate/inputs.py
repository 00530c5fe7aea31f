"""What an evaluation trains and tests on: the set (a raydd distilled set or a plain ImageFolder) with what it
says about itself, its stored labels, the real test images, the teacher and herding's observer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raydd.data import list_images
from raydd.data.class_map import ClassMap
from raydd.data.memory import load_labelled
from raydd.data.zca import ZCA_FILE, Zca
from raydd.evaluate.config import EvalConfig, rded_test_side
from raydd.io.distilled import DistilledSet, is_distilled_set
from raydd.io.soft_labels import dense_logits
from raydd.models import get_entry, load_observer
from raydd.models.observer import Observer, observer_info

__all__ = ["SetSource", "TrainingSet", "herding_observer", "kd_temperature", "load_set", "load_val", "stored_labels",
           "teacher_spec"]


@dataclass
class TrainingSet:
    x: torch.Tensor
    y: torch.Tensor
    soft: torch.Tensor | None = None
    cells: torch.Tensor | None = None  # stored labels of each image's grid cells, [N, factor², classes]


@dataclass
class SetSource:
    """What the evaluated set says about itself."""

    classes: list[str]
    factor: int
    ipc: int
    observers: list[str]
    columns: list[Any] | None
    learned_lr: float | None
    zca: Zca | None = None
    skipped_files: dict[str, int] | None = None
    normalization: dict[str, list[float]] | None = None  # a matched set's: its experts' mean and std


def load_set(config: EvalConfig) -> tuple[TrainingSet, SetSource]:
    if is_distilled_set(config.distilled):
        distilled = DistilledSet(config.distilled)
        x, y = distilled.images()
        soft = cells = None
        if config.protocol == "rded" and config.soft_labels != "online":
            soft, cells = stored_labels(distilled, kd_temperature(config),
                                        by_cell=config.soft_labels == "stored_cells")
        counts = np.bincount(y.numpy())
        return TrainingSet(x, y, soft, cells), SetSource(
            classes=distilled.classes, factor=distilled.info.factor, ipc=int(counts.max()),
            observers=list(distilled.info.observers), columns=distilled.info.observer_columns,
            learned_lr=distilled.info.learned_lr, normalization=distilled.info.normalization,
            zca=Zca.load(distilled.path / ZCA_FILE) if (distilled.path / ZCA_FILE).exists() else None)
    if config.soft_labels != "online":
        raise ValueError(f"{config.distilled} is a plain ImageFolder: it has no stored soft labels "
                         "(use --soft-labels online)")
    index = list_images(config.distilled)  # a path or a URI: Path() would fold s3:// into s3:/
    size = config.input_size or get_entry(config.student).input_size
    classes = index.classes
    loaded = load_labelled(index, classes, size=size)
    if len(loaded.labels) == 0:
        raise ValueError(f"{config.distilled}: none of its {len(index)} images decode ({dict(loaded.stats.skipped)})")
    return TrainingSet(loaded.images, loaded.labels), SetSource(
        classes=classes, factor=config.factor or 1, ipc=int(np.bincount(loaded.labels.numpy()).max()), observers=[],
        columns=None, learned_lr=None, skipped_files=dict(loaded.stats.skipped))


def kd_temperature(config: EvalConfig) -> float:
    return config.temperature or (20.0 if config.mix == "cutmix" else 4.0)


def stored_labels(distilled: DistilledSet, temperature: float, *, by_cell: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The set's stored labels as dense logits at ``temperature``: per image, and with ``by_cell`` per grid cell
    (``[N, factor², classes]``, None when the set has no patch labels) for labelling a view by what it shows."""
    classes = len(distilled.classes)
    soft = dense_logits(*distilled.soft_labels(), classes, tail=distilled.soft_label_tails(),
                        temperature=temperature)
    if not by_cell:
        return soft, None
    indices, values = distilled.soft_labels(patches=True)
    if len(indices) == 0 or len(indices) % len(soft):
        return soft, None
    cells = dense_logits(indices, values, classes, tail=distilled.soft_label_tails(patches=True),
                         temperature=temperature)
    return soft, cells.view(len(soft), -1, classes)


def load_val(folder: str, classes: list[str], size: int, protocol: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real test images in the set's class order; RDED tests at its reference's resize (``rded_test_side``) and
    a centre crop."""
    index = list_images(folder)
    missing = sorted(set(classes) - set(index.classes))
    if missing:
        raise ValueError(f"validation data {folder} lacks class(es) {', '.join(missing[:8])}")
    load = rded_test_side(size) if protocol == "rded" else size
    loaded = load_labelled(index, classes, size=load)
    x, y = loaded.images, loaded.labels
    if load != size:
        top = (load - size) // 2
        x = x[:, :, top:top + size, top:top + size].contiguous()
    return x, y


def teacher_spec(config: EvalConfig, source: SetSource) -> tuple[str, list[int] | None]:
    spec = config.teacher or (source.observers[0] if source.observers else None)
    if spec is None:
        raise ValueError("the RDED protocol needs a teacher: pass --teacher SPEC")
    if config.teacher is None and source.columns is not None and config.class_map is None:
        return spec, source.columns[0]
    info = observer_info(spec)  # the driver needs the teacher's outputs, not its weights
    by_name = info.class_map_for(source.classes, config.class_map).to_dict()  # refuses a class it lacks
    # The teacher's logit for each of the set's classes, in the set's order: the teacher's own may differ.
    in_set_order = ClassMap(tuple(source.classes), tuple(by_name[c] for c in source.classes))
    return spec, in_set_order.restricted(info.num_outputs)


def herding_observer(config: EvalConfig, source: SetSource) -> Observer:
    spec = config.herding_observer or config.teacher or (source.observers[0] if source.observers else None)
    if spec is None:
        raise ValueError("herding chooses by an observer's features: pass --herding-observer SPEC")
    return load_observer(spec)
