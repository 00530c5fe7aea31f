"""DD-Ranking's robust scores (Li et al. 2025, arXiv 2505.13300): what a distilled set adds beyond its labels and
its augmentation, from the accuracies of trials under one protocol.

Accuracies are fractions in [0, 1], as in the paper, so that ``λ·IOR − (1−λ)·HLR`` and ``β`` lie in [−1, 1] and
both scores in [0, 1] (a set equal to random whose hard labels match the full data scores (1 − e⁻¹)/(e − e⁻¹)
≈ 0.27). The ``ddranking`` package (0.2.0) applies the same formulas to whatever its trainer returns, accuracies
in percent, where the exponential leaves that range; ``tests/test_dd_ranking.py`` runs the package's own code on
fractions and checks that these functions agree with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["augmentation_robust_score", "dd_ranking_scores", "hard_label_recovery", "improvement_over_random",
           "label_robust_score"]


def _normalized_exp(x: float) -> float:
    return (math.exp(x) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def hard_label_recovery(full_data_acc: float, set_hard_label_acc: float) -> float:
    """HLR: how far the set, trained on its hard labels, stays below the full training set. Lower is better."""
    return full_data_acc - set_hard_label_acc


def improvement_over_random(set_acc: float, random_acc: float) -> float:
    """IOR: the set's accuracy above a random real subset of the same size, both with the method's labels."""
    return set_acc - random_acc


def label_robust_score(ior: float, hlr: float, lam: float = 0.5) -> float:
    """LRS = (exp(λ·IOR − (1−λ)·HLR) − e⁻¹) / (e − e⁻¹)."""
    return _normalized_exp(lam * ior - (1 - lam) * hlr)


def augmentation_robust_score(ior_with_augmentation: float, ior_without: float, lam: float = 0.5) -> float:
    """ARS = (exp(β) − e⁻¹) / (e − e⁻¹), β = λ·IOR(with the protocol's augmentation) + (1−λ)·IOR(without)."""
    return _normalized_exp(lam * ior_with_augmentation + (1 - lam) * ior_without)


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}  # std over seeds, ddof=0 as DD-Ranking


def dd_ranking_scores(acc: Mapping[str, Sequence[float]], full_data_acc: float, lam: float = 0.5
                      ) -> dict[str, object]:
    """Per-seed and mean ± std HLR, IOR, LRS and ARS from per-seed accuracies (fractions, seeds in the same order).

    ``acc`` holds ``set`` and ``random`` (method's labels, protocol's augmentation), ``set_hard`` (hard labels),
    ``set_no_aug`` and ``random_no_aug`` (method's labels, no augmentation).
    """
    seeds = len(acc["set"])
    if any(len(v) != seeds for v in acc.values()):
        raise ValueError("every trial kind needs one accuracy per seed")
    hlr = [hard_label_recovery(full_data_acc, a) for a in acc["set_hard"]]
    ior = [improvement_over_random(s, r) for s, r in zip(acc["set"], acc["random"], strict=True)]
    ior_no_aug = [improvement_over_random(s, r) for s, r in zip(acc["set_no_aug"], acc["random_no_aug"], strict=True)]
    lrs = [label_robust_score(i, h, lam) for i, h in zip(ior, hlr, strict=True)]
    ars = [augmentation_robust_score(a, b, lam) for a, b in zip(ior, ior_no_aug, strict=True)]
    per_seed = {"hlr": hlr, "ior": ior, "ior_no_aug": ior_no_aug, "lrs": lrs, "ars": ars}
    return {"lambda": lam, "full_data_acc": full_data_acc, "per_seed": per_seed,
            **{name: _mean_std(values) for name, values in per_seed.items()}}
