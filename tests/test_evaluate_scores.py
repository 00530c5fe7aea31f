"""DD-Ranking's scores and the herding baseline end to end: the trials they need, run as Tune trials, and the
full-data run paid once."""

import json
from dataclasses import replace

import pytest
import torch

from raydd.evaluate import evaluate
from raydd.evaluate.herding import herding_order, penultimate_features
from raydd.models import get_model
from raydd.models.observer import Observer
from raydd.models.registry import IMAGENET_NORM
from tests.test_evaluate_ray import CLASSES, _tiny_config


def test_herding_follows_the_class_mean_greedily():
    # On the unit circle: (1, 0), (0, 1) and their bisector (scaled: herding normalises). The mean lies on the
    # bisector, so it comes first; then (1, 0) and (0, 1) bring the mean equally close, and the earlier row wins.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    assert herding_order(features, 3) == [2, 0, 1]
    assert herding_order(features, 2) == [2, 0]  # a prefix: more images per class only add
    with pytest.raises(ValueError, match="herding 4 of 3"):
        herding_order(features, 4)


def test_penultimate_features_are_what_the_classifier_receives():
    torch.manual_seed(0)
    model = get_model("convnet3", num_classes=3)
    observer = Observer(model, normalization=IMAGENET_NORM, input_size=32, num_outputs=3, spec="test")
    pixels = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    features = penultimate_features(observer, pixels, batch_size=2)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        assert torch.allclose(classifier(features), observer(pixels.float() / 255), atol=1e-5)


def test_dd_ranking_scores_plan_every_trial_and_pay_for_the_full_data_once(tmp_path, ray_session):
    config = _tiny_config(tmp_path, epochs=2, seeds=[0], baseline="random,herding", scores="dd-ranking",
                          full_data_epochs=2, cache_dir=str(tmp_path / "cache"))
    report = evaluate(config)
    assert set(report["sets"]) == {"distilled", "random", "herding", "distilled/no_aug", "random/no_aug",
                                   "distilled/hard", "full_data"}
    scores = report["scores"]
    table = scores["accuracies"]
    assert len(table["set"]) == len(table["set_hard"]) == 1
    for key in ("set", "random", "set_hard", "set_no_aug", "random_no_aug"):
        assert table[key] == pytest.approx([v / 100 for v in report["sets"][
            {"set": "distilled", "random": "random", "set_hard": "distilled/hard", "set_no_aug": "distilled/no_aug",
             "random_no_aug": "random/no_aug"}[key]]["final_acc"]], abs=1e-4)
    full = scores["full_data_acc"]
    assert full == pytest.approx(report["sets"]["full_data"]["final_acc"][0] / 100, abs=1e-4)
    assert scores["hlr"]["mean"] == pytest.approx(full - table["set_hard"][0])
    assert all(0 <= v <= 1 for v in scores["per_seed"]["lrs"] + scores["per_seed"]["ars"])
    herded = report["baselines"]["herding"]["files"]
    assert sorted(herded) == CLASSES and all(len(files) == 2 for files in herded.values())
    assert (tmp_path / "eval" / "scores.png").exists()
    cached = list((tmp_path / "cache" / "full_data").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["full_data_acc"] == full

    # A second evaluation of the same data, student and epochs reuses the full-data accuracy: no such trial.
    again = evaluate(replace(config, out=str(tmp_path / "again"), baseline="none"))
    assert "full_data" not in again["sets"] and again["scores"]["full_data_acc"] == full
    assert again["baselines"]["random"]["files"] == report["baselines"]["random"]["files"]


def test_under_the_mtt_protocol_the_methods_labels_are_the_hard_labels():
    """MTT's students train on hard labels already: HLR uses the set's own trials and no hard-label variant runs."""
    from raydd.evaluate import EvalConfig
    from raydd.evaluate.report import dd_ranking_report

    rows = {name: [{"seed": 0, "final_acc": acc}] for name, acc in
            [("distilled", 0.5), ("random", 0.4), ("distilled/no_aug", 0.45), ("random/no_aug", 0.3)]}
    config = EvalConfig(distilled="set", val_data="val", out="out", protocol="mtt", scores="dd-ranking",
                        real_data="train", seeds=[0])
    scores = dd_ranking_report(config, rows, 0.8)
    assert scores["per_seed"]["hlr"] == pytest.approx([0.3]) and scores["per_seed"]["ior"] == pytest.approx([0.1])
    assert scores["per_seed"]["ior_no_aug"] == pytest.approx([0.15])


def test_dd_ranking_without_real_data_says_what_the_scores_need():
    from raydd.evaluate import EvalConfig

    with pytest.raises(ValueError, match="DD-Ranking's scores compare with a random real subset"):
        EvalConfig(distilled="set", val_data="val", out="out", scores="dd-ranking")
