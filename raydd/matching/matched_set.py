"""A matching run's result written as a distilled set: the synthetic images as pixels (un-whitened, un-normalised),
what the set records (α, the experts' normalisation and whitening), and the importance weights over iterations."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from raydd.data.zca import ZCA_FILE, Zca
from raydd.io.set_info import SetInfo
from raydd.io.writer import DistilledSetWriter
from raydd.matching.config import MatchConfig
from raydd.models.registry import IMAGENET_NORM, Normalization

__all__ = ["plot_weights", "write_matched_set"]


def write_matched_set(config: MatchConfig, state: dict[str, Any], work: Path, zca: Zca | None) -> None:
    """The synthetic images in raydd's distilled-set format, with α and the weights' summary."""
    history = state.get("weight_history") or {}
    if zca is not None:  # stored as viewable pixels; the set carries the transform for its evaluation
        images = zca.invert(state["images"])
        zca.save(work / ZCA_FILE)
    else:
        images = state["images"]
    norm = state.get("normalization") or {"mean": list(IMAGENET_NORM.mean), "std": list(IMAGENET_NORM.std)}
    pixels = (Normalization(tuple(norm["mean"]), tuple(norm["std"])).invert(images).clamp(0, 1) * 255)
    pixels = pixels.round().byte().permute(0, 2, 3, 1).numpy()
    writer = DistilledSetWriter(work, state["classes"])
    for image, label, source in zip(pixels, state["labels"].tolist(), state["sources"], strict=True):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        writer.add(label, buf.getvalue(), sources=[source])
    info = SetInfo(method=config.method, classes=state["classes"], learned_lr=state["lr"],
                   input_size=state["input_size"], zca=zca is not None, factor=1, ipc=config.ipc,
                   iterations=state["iteration"], skipped_steps=state["skipped"], normalization=norm,
                   config_hash=config.result_hash())
    writer.finish(info, {"learned_lr": state["lr"], "iterations": state["iteration"], "skipped_steps": state["skipped"],
                         "skipped_files": state["skipped_files"], "worker_divergence": state["worker_divergence"],
                         "resumed_from": state.get("resumed_from", 0), "memory": config.memory,
                         "iteration_s": state.get("iteration_s"), "weights": state["weight_summary"],
                         "weights_by_iteration": {str(k): v for k, v in sorted(history.items())}})
    if history:
        plot_weights(history, work / "weights.png")


def plot_weights(history: dict[int, dict[str, dict[str, float]]], path: Path) -> None:
    """Each parameter tensor's weights (mean, min–max) at the first, middle and last iteration, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(history.values())))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.6), 4))
    x = np.arange(len(names))
    width = 0.8 / len(history)
    for i, (iteration, summary) in enumerate(sorted(history.items())):
        means = [summary[n]["mean"] for n in names]
        low = [max(0.0, summary[n]["mean"] - summary[n]["min"]) for n in names]  # rounding: mean may pass min
        high = [max(0.0, summary[n]["max"] - summary[n]["mean"]) for n in names]
        ax.errorbar(x + (i - (len(history) - 1) / 2) * width, means, yerr=[low, high], fmt="o", capsize=2,
                    markersize=3, label=f"iteration {iteration}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("importance weight (mean, min–max)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
