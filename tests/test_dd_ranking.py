"""raydd's DD-Ranking scores against the ``ddranking`` package's own code, and the scores' arithmetic.

The package's evaluators train students inside ``compute_metrics``; here their trainers are replaced by the
accuracies of a fixed table, so the package's own formulas turn them into HLR, IOR, LRS and ARS. The package
pins numpy < 2 and pulls timm and kornia, so the README's install leaves it out and CI installs it with
``--no-deps`` (see ``.ci/run``); without it the cross-check is skipped, the arithmetic tests still run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raydd.evaluate.scores import (
    augmentation_robust_score,
    dd_ranking_scores,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
)

# Per-seed accuracies (fractions) of the five trial kinds, and the full data's.
TABLE = {
    "set": [0.512, 0.498, 0.530],
    "random": [0.441, 0.452, 0.437],
    "set_hard": [0.302, 0.318, 0.297],
    "set_no_aug": [0.455, 0.462, 0.449],
    "random_no_aug": [0.401, 0.398, 0.412],
}
FULL = 0.843


def test_scores_follow_the_papers_formulas_by_hand():
    assert hard_label_recovery(0.8, 0.3) == pytest.approx(0.5)
    assert improvement_over_random(0.5, 0.45) == pytest.approx(0.05)
    e = math.e
    assert label_robust_score(0.1, 0.4) == pytest.approx((e ** (0.5 * 0.1 - 0.5 * 0.4) - 1 / e) / (e - 1 / e))
    assert label_robust_score(0.1, 0.4, lam=0.8) == pytest.approx((e ** (0.08 - 0.08) - 1 / e) / (e - 1 / e))
    assert augmentation_robust_score(0.2, -0.1) == pytest.approx((e ** 0.05 - 1 / e) / (e - 1 / e))
    # The bounds: all gained (IOR 1, HLR 0 / both IORs 1) scores 1 only at λ = 1 for LRS, always for ARS.
    assert label_robust_score(1.0, 0.0, lam=1.0) == pytest.approx(1.0)
    assert augmentation_robust_score(1.0, 1.0) == pytest.approx(1.0)
    assert label_robust_score(-1.0, 1.0) == pytest.approx(0.0)


def test_per_seed_and_mean_std_over_seeds():
    scores = dd_ranking_scores(TABLE, FULL)
    assert scores["per_seed"]["hlr"] == pytest.approx([FULL - a for a in TABLE["set_hard"]])
    assert scores["per_seed"]["ior"] == pytest.approx(np.subtract(TABLE["set"], TABLE["random"]))
    assert scores["lrs"]["mean"] == pytest.approx(np.mean(scores["per_seed"]["lrs"]))
    assert scores["ars"]["std"] == pytest.approx(np.std(scores["per_seed"]["ars"]))
    with pytest.raises(ValueError, match="one accuracy per seed"):
        dd_ranking_scores({**TABLE, "random": TABLE["random"][:2]}, FULL)


def _evaluator(cls, monkeypatch, **attributes):
    """The package's evaluator without its __init__ (which loads datasets and teachers), trainers replaced."""
    module = __import__(cls.__module__, fromlist=["_"])
    for name in ("logging", "save_results", "set_seed"):
        monkeypatch.setattr(module, name, lambda *a, **k: None)
    evaluator = cls.__new__(cls)
    defaults = dict(num_eval=3, ipc=1, num_classes=2, soft_label_mode="S", use_dist=False, rank=0, save_path="",
                    eval_full_data=True, label_type="soft", device="cpu")
    for key, value in {**defaults, **attributes}.items():
        setattr(evaluator, key, value)
    return evaluator


def _next_of(values):
    it = iter(values)
    return lambda *a, **k: (next(it), 0.01)


def test_the_ddranking_packages_formulas_give_the_same_scores(monkeypatch):
    soft_label = pytest.importorskip("ddranking.metrics.soft_label")
    aug_robust = pytest.importorskip("ddranking.metrics.aug_robust")
    seeds = range(3)

    lrs_eval = _evaluator(soft_label.LabelRobustScoreSoft, monkeypatch)
    hard = iter([v for i in seeds for v in (TABLE["set_hard"][i], FULL)])  # per run: the set's, then the full data's
    lrs_eval._compute_hard_label_metrics_helper = lambda *a, **k: (next(hard), 0.01)
    lrs_eval._compute_soft_label_metrics_helper = _next_of([v for i in seeds for v in (TABLE["set"][i],
                                                                                         TABLE["random"][i])])
    lrs_eval._get_random_data_helper = lambda eval_iter: (None, torch.zeros(2, 3, 4, 4), torch.zeros(2, 2))
    theirs = lrs_eval.compute_metrics(image_tensor=torch.zeros(2, 3, 4, 4), soft_labels=torch.zeros(2, 2))

    ars_eval = _evaluator(aug_robust.AugmentationRobustScore, monkeypatch)
    ars_eval._compute_with_aug_metrics_helper = _next_of([v for i in seeds for v in (TABLE["set"][i],
                                                                                       TABLE["random"][i])])
    ars_eval._compute_without_aug_metrics_helper = _next_of([v for i in seeds for v in (TABLE["set_no_aug"][i],
                                                                                          TABLE["random_no_aug"][i])])
    ars_eval._get_random_data_helper = lambda eval_iter: (None, torch.zeros(2, 3, 4, 4), torch.zeros(2),
                                                          torch.zeros(2, 2))
    theirs_ars = ars_eval.compute_metrics(image_tensor=torch.zeros(2, 3, 4, 4), soft_labels=torch.zeros(2, 2))

    ours = dd_ranking_scores(TABLE, FULL)
    assert ours["hlr"]["mean"] == pytest.approx(theirs["hard_label_recovery_mean"])
    assert ours["hlr"]["std"] == pytest.approx(theirs["hard_label_recovery_std"])
    assert ours["ior"]["mean"] == pytest.approx(theirs["improvement_over_random_mean"])
    assert ours["lrs"]["mean"] == pytest.approx(theirs["label_robust_score_mean"])
    assert ours["lrs"]["std"] == pytest.approx(theirs["label_robust_score_std"])
    assert ours["ior_no_aug"]["mean"] == pytest.approx(theirs_ars["without_aug_scores_mean"])
    assert ours["ars"]["mean"] == pytest.approx(theirs_ars["augmentation_robust_score_mean"])
    assert ours["ars"]["std"] == pytest.approx(theirs_ars["augmentation_robust_score_std"])
    assert 0 < ours["lrs"]["mean"] < 1 and 0 < ours["ars"]["mean"] < 1

