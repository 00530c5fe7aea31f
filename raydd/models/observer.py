"""Observers: pretrained classifiers that carry their own normalization, input size and class names.

An observer is built from a spec string, the form every CLI flag and config field takes:

=============================  ==================================================================
``torchvision:resnet18``       torchvision model with the reference's pretrained weights (IMAGENET1K_V1, as
                               RDED's ``pretrained=True``; downloads once)
``torchvision:resnet50:NAME``  torchvision's weights of that name, e.g. ``IMAGENET1K_V2`` (its own default)
``torchvision:resnet18@PATH``  the same architecture, weights from a local state-dict file
``efficientnet_lite0``         EfficientNet-Lite0 with the ImageNet weights of its registry package
``cifar_resnet20@PATH``        any zoo model (``raydd.models.list_models()``) with local weights
``checkpoint@PATH``            a checkpoint written by ``raydd train`` (knows its classes)
=============================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from raydd.data.class_map import ClassMap
from raydd.models.checkpoint import read_checkpoint
from raydd.models.registry import ModelEntry, Normalization, get_entry, get_model

__all__ = ["Observer", "ObserverInfo", "load_model_checkpoint", "load_observer", "observer_info", "parse_spec"]


@dataclass(frozen=True)
class ObserverInfo:
    """What a driver needs of an observer to plan a job (its input size, outputs and class names), which
    ``observer_info`` reads without building the model or loading its weights."""

    spec: str
    input_size: int
    num_outputs: int
    class_names: tuple[str, ...] | None = None
    # The architecture's zoo name and which weights the spec loads (a torchvision enum member, a file, a package):
    # provenance for the manifest and the recipe, not planning facts, so infos that plan alike compare equal.
    model: str = field(default="", compare=False)
    weights: str = field(default="", compare=False)

    def class_map_for(self, data_classes: Sequence[str], spec: str | ClassMap | None = None) -> ClassMap:
        """The map from data classes to this observer's outputs, checked against both.

        Without an explicit ``spec``, an observer that knows its class names maps by name; otherwise the data's
        classes in order (sorted folder names, or integer labels in order) map to outputs 0..n-1 — and a count
        mismatch is an error, never a guess.
        """
        from raydd.data.class_map import load_class_map

        if spec is None and self.class_names is not None:
            position = {name: i for i, name in enumerate(self.class_names)}
            unknown = sorted(set(data_classes) - set(position))
            if unknown:
                raise ValueError(f"observer {self.spec} was trained without class(es) {', '.join(unknown[:8])}")
            cmap = ClassMap.from_mapping({c: position[c] for c in data_classes})
        else:
            cmap = load_class_map(spec, data_classes)
        cmap.check(data_classes, self.num_outputs)
        return cmap


class Observer(nn.Module):
    """A classifier that takes [0, 1] pixels and returns logits in the data's class order.

    ``restrict(columns)`` keeps only the outputs the data's classes map to (e.g. 10 of 1000), so that
    logit ``i`` is always the data's class ``i``.
    """

    def __init__(self, model: nn.Module, *, normalization: Normalization, input_size: int, num_outputs: int,
                 spec: str, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(normalization.std).view(1, 3, 1, 1), persistent=False)
        self.normalization = normalization
        self.input_size = input_size
        self.num_outputs = num_outputs
        self.spec = spec
        self.class_names = tuple(class_names) if class_names is not None else None
        self.columns: torch.Tensor | None = None

    def restrict(self, columns: Sequence[int] | None) -> Observer:
        self.columns = None if columns is None else torch.as_tensor(list(columns), dtype=torch.long)
        return self

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)

    def logits(self, normalized: torch.Tensor) -> torch.Tensor:
        out = self.model(normalized)
        if self.columns is not None:
            out = out[:, self.columns.to(out.device)]
        return out

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.logits(self.normalize(pixels))

    @property
    def info(self) -> ObserverInfo:
        return ObserverInfo(self.spec, self.input_size, self.num_outputs, self.class_names)

    def class_map_for(self, data_classes: Sequence[str], spec: str | ClassMap | None = None) -> ClassMap:
        """``ObserverInfo.class_map_for`` of this observer."""
        return self.info.class_map_for(data_classes, spec)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"torchvision:resnet18@w.pth"`` → ``("resnet18", "w.pth")``."""
    name, _, path = spec.partition("@")
    name = name.removeprefix("torchvision:")
    if not name:
        raise ValueError(f"bad observer spec {spec!r}: expected NAME[@PATH] or checkpoint@PATH")
    return name, (path or None)


def _resolve(spec: str) -> tuple[str | None, ModelEntry | None, str]:
    """A spec's weights path, registry entry (``None`` for a checkpoint) and named pretrained weights, checked."""
    name, path = parse_spec(spec)
    name, _, choice = name.partition(":")
    if name == "checkpoint":
        if path is None:
            raise ValueError("checkpoint@PATH needs a path")
        return path, None, ""
    entry = get_entry(name)
    if choice and (entry.pretrained != "torchvision" or path is not None):
        raise ValueError(f"bad observer spec {spec!r}: only torchvision models take named weights, and not "
                         "with a path")
    if path is None and not entry.pretrained:
        raise ValueError(f"{name} has no built-in pretrained weights; give them as {name}@PATH")
    return path, entry, choice or "DEFAULT"


def _weights_label(entry: ModelEntry, path: str | None, choice: str) -> str:
    if path is not None:
        return f"file {path}"
    if entry.pretrained == "torchvision":
        from raydd.models.imagenet import pretrained_weights

        return f"torchvision {pretrained_weights(entry.name, choice)}"
    return f"{entry.pretrained} {entry.name}"


def load_observer(spec: str, *, device: str | torch.device = "cpu") -> Observer:
    """Build an observer from its spec string (table in the module docstring), in eval mode.

    Raises:
        ValueError: for an unknown model or a model without built-in weights and no path.
        FileNotFoundError: for a missing weights file.
    """
    path, entry, choice = _resolve(spec)
    if entry is None:
        return load_model_checkpoint(path, spec=spec).to(device)
    model = entry.builder(num_classes=entry.num_classes, weights=path if path is not None else choice)
    return Observer(model, normalization=entry.normalization, input_size=entry.input_size,
                    num_outputs=entry.num_classes, spec=spec).to(device)


def observer_info(spec: str) -> ObserverInfo:
    """An observer's input size, outputs, class names and weights from its spec, without its weights: a zoo
    model's from the registry (its weights file must exist; torchvision's are downloaded into the hub cache on
    first use), a checkpoint's from the file, memory-mapped (the tensors are not read).

    Raises:
        ValueError: for an unknown model or a model without built-in weights and no path.
        FileNotFoundError: for a missing weights file.
    """
    path, entry, choice = _resolve(spec)
    if entry is None:
        state = read_checkpoint(path, mmap=True)
        return ObserverInfo(spec, state["input_size"], len(state["classes"]), tuple(state["classes"]),
                            model=state["model"], weights=f"checkpoint {path}")
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path is None and entry.pretrained == "torchvision":
        from raydd.models.imagenet import ensure_torchvision_weights

        ensure_torchvision_weights(entry.name, choice)  # a failed download is an error here, not in an actor
    return ObserverInfo(spec, entry.input_size, entry.num_classes, model=entry.name,
                        weights=_weights_label(entry, path, choice))


def load_model_checkpoint(path: str | Path, *, spec: str | None = None) -> Observer:
    """A raydd checkpoint as an observer that knows its normalization, input size and class names."""
    state = read_checkpoint(path)
    model = get_model(state["model"], **state["model_args"])
    model.load_state_dict(state["state_dict"])
    norm = Normalization(tuple(state["normalization"]["mean"]), tuple(state["normalization"]["std"]))
    return Observer(model, normalization=norm, input_size=state["input_size"], num_outputs=len(state["classes"]),
                    spec=spec or f"checkpoint@{path}", class_names=state["classes"])
