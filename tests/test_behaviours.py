"""Behaviours that had no test: options, refusals and edge paths of RDED, evaluation, matching and training.
The Ray runs are grouped so that each one checks several of them."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raydd.data.class_map import imagenet_wnids
from raydd.io import DistilledSet, OutputExistsError, RunFolder
from raydd.models import get_model
from raydd.rded import RdedConfig, distill
from tests.conftest import make_image_folder, save_random_observer
from tests.test_matching_ray import _fake_experts, _moved_from_their_sources

CLASSES = ["ant", "bee", "cow"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("behaviours")
    data = make_image_folder(root / "train", CLASSES, 8, size=40)
    observers = [save_random_observer(root / f"obs-{seed}", CLASSES, seed=seed) for seed in (0, 1)]
    return root, data, *observers


def _rded(root: Path, data: Path | str, out: str, observers: list[str], **kwargs) -> RdedConfig:
    values = dict(data=str(data), observers=observers, out=str(root / out), ipc=1, factor=2, mipc=8, num_crops=3,
                  input_size=32, precision="fp32", seed=2, threads_per_worker=1)
    return RdedConfig(**{**values, **kwargs})


def _crop_scores(distilled: DistilledSet) -> np.ndarray:
    """Every candidate's crop scores, in candidate order."""
    table = pq.read_table(distilled.path / "scores.parquet").sort_by("image_id")
    return np.stack(table["crop_scores"].to_numpy(zero_copy_only=False))


def test_ensembles_jpeg_output_and_parquet_sources(made, ray_session):
    root, data, a, b = made
    alone_a = distill(_rded(root, data, "a", [a]))
    alone_b = distill(_rded(root, data, "b", [b]))
    # Two observers: each crop's score is the mean of theirs; JPEG output on request, hashed as written.
    both = distill(_rded(root, data, "ab", [a, b], image_format="jpeg"))
    assert np.allclose(_crop_scores(both), (_crop_scores(alone_a) + _crop_scores(alone_b)) / 2, atol=1e-6)
    for row in both.manifest.to_pylist():
        written = (both.path / row["file"]).read_bytes()
        assert row["file"].endswith(".jpg") and written[:3] == b"\xff\xd8\xff"
        assert hashlib.sha256(written).hexdigest() == row["sha256"]
    assert both.images()[0].shape == (3, 3, 32, 32) and both.info.observers == [a, b]

    # The same images as a Parquet table (bytes and class): every patch comes from a row of its own class.
    rows = [{"image": (data / c / f.name).read_bytes(), "label": c} for c in CLASSES
            for f in sorted((data / c).iterdir())]
    pq.write_table(pa.Table.from_pylist(rows), root / "train.parquet")
    from_table = distill(_rded(root, root / "train.parquet", "parquet", [a]))
    assert len(from_table) == 3 and from_table.stats["candidates"] == 24 and not from_table.stats["skipped_files"]
    for row in from_table.manifest.to_pylist():
        for source in row["patch_sources"]:
            name, _, index = source.rpartition("#")
            assert name.endswith("train.parquet") and rows[int(index)]["label"] == row["class_name"]


def test_imagenet_class_map_end_to_end(tmp_path, ray_session):
    """wnid folders scored by a 1000-class observer restricted to their ImageNet columns, in folder order."""
    wnids = [imagenet_wnids()[i] for i in (7, 2, 500)]
    data = make_image_folder(tmp_path / "train", wnids, 6, size=40)
    torch.manual_seed(0)
    torch.save(get_model("resnet18", weights=None).state_dict(), tmp_path / "resnet18.pth")
    distilled = distill(RdedConfig(data=str(data), observers=[f"torchvision:resnet18@{tmp_path / 'resnet18.pth'}"],
                                   class_map="imagenet", out=str(tmp_path / "out"), ipc=1, factor=1, mipc=4,
                                   num_crops=2, input_size=32, precision="fp32"))
    assert distilled.classes == sorted(wnids) and distilled.info.observer_columns == [[2, 7, 500]]
    assert (distilled.soft_labels()[0] < 3).all()  # labels index the set's 3 classes, not ImageNet's 1000


def test_a_source_changed_between_scoring_and_assembly_stops_the_run(made, ray_session, tmp_path, monkeypatch):
    import raydd.rded.pipeline as pipeline

    root, _, a, _ = made
    data = make_image_folder(tmp_path / "train", CLASSES, 8, size=40)
    real_layout = pipeline.layout_images

    def then_truncate(config, plan, topk):
        layout = real_layout(config, plan, topk)
        first = topk["name"][0].as_py()
        (data / first).write_bytes((data / first).read_bytes()[:40])
        return layout

    monkeypatch.setattr(pipeline, "layout_images", then_truncate)
    with pytest.raises(Exception, match="decoded during scoring but not now: was it changed on disk"):
        distill(_rded(root, data, "changed", [a]))


def test_reused_scores_from_other_settings_are_refused_before_any_work(made, ray_session):
    root, data, a, _ = made
    first = distill(_rded(root, data, "scored", [a]))
    again = distill(_rded(root, data, "reselected", [a], ipc=2, from_scores=str(first.path)))
    assert again.stats["scores_from"] == str(first.path) and len(again) == 6
    with pytest.raises(ValueError, match="computed with other settings"):
        distill(_rded(root, data, "other-crops", [a], num_crops=2, from_scores=str(first.path)))
    assert not (root / "other-crops").exists() and not (root / ".other-crops.partial").exists()


def test_a_partial_run_of_another_config_is_never_touched(tmp_path):
    RunFolder.open(tmp_path / "out", "hash-a", kind="rded")
    (tmp_path / ".out.partial" / "mine.txt").write_text("kept")
    with pytest.raises(OutputExistsError, match="partial run of a different config"):
        RunFolder.open(tmp_path / "out", "hash-b", kind="rded")
    assert (tmp_path / ".out.partial" / "mine.txt").read_text() == "kept"
    assert RunFolder.open(tmp_path / "out", "hash-a", kind="rded").resumed


def test_a_teacher_with_another_class_order_is_mapped_by_name(tmp_path):
    from raydd.evaluate.config import EvalConfig
    from raydd.evaluate.inputs import SetSource, teacher_spec

    spec = save_random_observer(tmp_path / "teacher", ["cow", "ant", "bee"])
    source = SetSource(classes=CLASSES, factor=1, ipc=1, observers=[], columns=None, learned_lr=None)
    config = EvalConfig(distilled="d", val_data="v", out="o", teacher=spec)
    assert teacher_spec(config, source) == (spec, [1, 2, 0])  # the set's ant, bee, cow in the teacher's outputs


def test_evaluation_baselines_stored_labels_and_a_failing_trial(made, ray_session, tmp_path):
    from raydd.evaluate import EvalConfig, evaluate
    from raydd.runtime import RunFailedError

    root, data, a, _ = made
    distilled = distill(_rded(root, data, "for-eval", [a]))
    val = make_image_folder(tmp_path / "val", CLASSES, 3, size=32, seed=9)
    common = dict(distilled=str(distilled.path), val_data=str(val), epochs=1, seeds=[0], eval_every=1)
    # Stored labels: the trials get the set's own soft labels (the teacher still labels the baselines).
    from raydd.evaluate.inputs import load_set
    from raydd.io.soft_labels import dense_logits

    stored = EvalConfig(**common, out=str(tmp_path / "stored"), soft_labels="stored", baseline="both",
                        real_data=str(data))
    loaded = load_set(stored)[0]
    assert torch.equal(loaded.soft, dense_logits(*distilled.soft_labels(), 3)) and loaded.cells is None
    by_cells = load_set(dataclasses.replace(stored, soft_labels="stored_cells"))[0]
    assert by_cells.cells.shape == (3, 4, 3)  # each image's 2 × 2 cells' labels, which label the views
    report = evaluate(stored)
    assert set(report["sets"]) == {"distilled", "random", "random_patches"}
    # A trial that fails (a ConvNet-3 cannot pool a 4-pixel input) stops the run, saying how to continue.
    with pytest.raises(RunFailedError, match="run the same command again to continue"):
        evaluate(EvalConfig(**common, out=str(tmp_path / "failing"), input_size=4, protocol="mtt"))


def test_matching_skips_diverged_steps_on_every_worker_and_clamps_alpha(tmp_path, ray_session):
    from raydd.matching import MatchConfig, match

    data = make_image_folder(tmp_path / "train", ["a", "b", "c"], 4, size=32)
    (tmp_path / "experts").mkdir()
    _fake_experts(tmp_path / "experts", count=2, epochs=3)
    base = dict(data=str(data), experts=str(tmp_path / "experts"), method="mtt", ipc=1, iterations=4, syn_steps=4,
                expert_epochs=1, max_start_epoch=2, checkpoint_every=2)
    # A step size so large that every unrolled loss overflows: both workers skip every step, in step.
    diverged = match(MatchConfig(**base, out=str(tmp_path / "diverged"), lr_teacher=1e8, num_workers=2))
    stats = diverged.stats
    assert stats["skipped_steps"] == 4 and stats["worker_divergence"] == 0.0 and stats["learned_lr"] == 1e8
    assert _moved_from_their_sources(diverged) == 0  # no update reached the images
    # A step size that overshoots, so its gradient pulls it down, with a step-size learning rate large enough to
    # drive it below zero: it is held at its floor. Constant memory and mini-batches of 2 synthetic images on the way.
    clamped = match(MatchConfig(**base, out=str(tmp_path / "clamped"), lr_teacher=0.5, lr_lr=10.0, memory="constant",
                                batch_syn=2))
    assert clamped.stats["learned_lr"] == pytest.approx(1e-8) and clamped.stats["skipped_steps"] == 0
    assert _moved_from_their_sources(clamped) == 3


def test_matching_refuses_windows_past_the_experts_and_a_missing_whitening(tmp_path):
    from raydd.io.experts import save_expert
    from raydd.matching import MatchConfig, match

    data = make_image_folder(tmp_path / "train", ["a", "b", "c"], 2, size=32)
    (tmp_path / "experts").mkdir()
    _fake_experts(tmp_path / "experts", count=1, epochs=3)
    config = dict(data=str(data), experts=str(tmp_path / "experts"), out=str(tmp_path / "m"), ipc=1)
    with pytest.raises(ValueError, match="max_start_epoch \\+ expert_epochs = 4 exceeds the experts' 3 epochs"):
        match(MatchConfig(**config, max_start_epoch=2, expert_epochs=2))
    expert = torch.load(tmp_path / "experts" / "expert_0000.pt", weights_only=True)
    save_expert(tmp_path / "experts" / "expert_0000.pt", **{k: expert[k] for k in ("trajectory", "names", "shapes",
                                                                                    "seed")},
                model_name=expert["model"], model_args=expert["model_args"], config={"zca": True})
    with pytest.raises(FileNotFoundError, match="trained with ZCA but its zca.pt is missing"):
        match(MatchConfig(**config, max_start_epoch=1, expert_epochs=1))
    assert not (tmp_path / "m").exists() and not (tmp_path / ".m.partial").exists()


def test_training_options_max_per_class_adamw_and_the_step_schedule(tmp_path):
    from raydd.data import DecodeStats
    from raydd.models.training import lr_at, make_optimizer
    from raydd.train import TrainConfig
    from raydd.train.loop import _shard

    data = make_image_folder(tmp_path / "train", CLASSES, 9, size=32)
    config = TrainConfig(data=str(data), max_per_class=4, optimizer="adamw", weight_decay=0.05, schedule="step",
                         lr=0.1, epochs=10, label_smoothing=0.1)
    images, labels, _ = _shard(config, config.data, None, 0, 1, DecodeStats())
    assert np.bincount(labels).tolist() == [4, 4, 4]  # a seeded 4 of each class's 9
    assert len({bytes(x.numpy()) for x in images}) == 12
    model = get_model("convnet3", num_classes=3)
    groups = make_optimizer(model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay).param_groups
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]  # no decay on biases and norms
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim <= 1 for p in groups[1]["params"])
    assert [lr_at(config.schedule, e, config.epochs, config.lr) for e in (0, 4, 5, 9)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01])
