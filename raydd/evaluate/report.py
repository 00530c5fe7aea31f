"""An evaluation's report: per-set summaries over seeds (final, best, the reference's figure, per class), DD-Ranking's
scores, and the pictures of both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from raydd.evaluate.config import EvalConfig
from raydd.evaluate.scores import dd_ranking_scores
from raydd.io.storage import is_remote, read_text

__all__ = ["dd_ranking_report", "finished_report", "plot_curves", "plot_scores", "reference_figure", "set_summary"]


def set_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    finals = np.array([r["final_acc"] for r in rows]) * 100
    best = np.array([r["best_acc"] for r in rows]) * 100
    return {
        "seeds": [r["seed"] for r in rows],
        "final_acc": [round(float(v), 2) for v in finals],
        "final_acc_mean": round(float(finals.mean()), 2),
        "final_acc_std": round(float(finals.std()), 2),
        "best_over_evaluations_mean": round(float(best.mean()), 2),
        **reference_figure(rows),
        "per_class_acc_mean": [round(float(v) * 100, 2) for v in np.mean([r["per_class_acc"] for r in rows], 0)],
        "curves": [r["curve"] for r in rows],
    }


def reference_figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """RDED's reported figure (best test every 10 epochs in the last 20 %), per seed and mean ± std."""
    if any(r.get("reference_acc") is None for r in rows):
        return {}
    values = np.array([r["reference_acc"] for r in rows]) * 100
    return {"reference_acc": [round(float(v), 2) for v in values], "reference_acc_mean": round(float(values.mean()), 2),
            "reference_acc_std": round(float(values.std()), 2)}


def dd_ranking_report(config: EvalConfig, rows: dict[str, list[dict[str, Any]]], full_acc: float) -> dict[str, Any]:
    """DD-Ranking's scores from the final accuracies, seed by seed (DD-Ranking itself takes the best test of
    the last fifth of training; raydd's figure is the final one, as everywhere in its reports)."""
    def acc(name: str) -> list[float]:
        return [r["final_acc"] for r in sorted(rows[name], key=lambda r: r["seed"])]

    table = {"set": acc("distilled"), "random": acc("random"), "set_no_aug": acc("distilled/no_aug"),
             "random_no_aug": acc("random/no_aug"),
             "set_hard": acc("distilled/hard") if config.protocol == "rded" else acc("distilled")}
    return {**dd_ranking_scores(table, full_acc, config.score_lambda), "seeds": sorted(config.seeds),
            "accuracies": table, "units": "fractions (accuracy 0.5 = 50 %)"}


def plot_scores(scores: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["hlr", "ior", "ior_no_aug", "lrs", "ars"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(names, [scores[n]["mean"] for n in names], yerr=[scores[n]["std"] for n in names], capsize=4,
           color=["#b55", "#57a", "#79c", "#3a6", "#6b8"])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("fraction (mean ± std over seeds)")
    ax.set_title(f"DD-Ranking scores (λ = {scores['lambda']})")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, summary in report["sets"].items():
        epochs = [p["epoch"] for p in summary["curves"][0]]
        accs = np.array([[p["test_acc"] * 100 for p in curve] for curve in summary["curves"]])
        label = f"{name} ({summary['final_acc_mean']:.1f} ± {summary['final_acc_std']:.1f})"
        ax.plot(epochs, accs.mean(0), label=label)
        ax.fill_between(epochs, accs.mean(0) - accs.std(0), accs.mean(0) + accs.std(0), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{report['protocol']} protocol, {report['student']} students")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def finished_report(out: str) -> dict[str, Any]:
    text = read_text(f"{out.rstrip('/')}/report.json") if is_remote(out) else (Path(out) / "report.json").read_text()
    return {**json.loads(text or "{}"), "out": out.rstrip("/") if is_remote(out) else str(Path(out).resolve())}
