"""A tiny evaluation end to end: seeds as parallel Ray Tune trials beside a random baseline, and its resume."""

import json
from dataclasses import replace
from pathlib import Path

import torch

from raydd.evaluate import EvalConfig, evaluate
from tests.conftest import make_image_folder, save_random_observer

CLASSES = ["a", "b", "c"]


def _tiny_config(tmp_path: Path, **overrides) -> EvalConfig:
    """Two images a class, a random ConvNet-3 teacher, 3-class validation: seconds a trial."""
    small = make_image_folder(tmp_path / "small", CLASSES, 2, size=32)
    real = make_image_folder(tmp_path / "real", CLASSES, 6, size=32, seed=3)
    val = make_image_folder(tmp_path / "val", CLASSES, 5, size=32, seed=4)
    settings = dict(distilled=str(small), val_data=str(val), out=str(tmp_path / "eval"),
                    teacher=save_random_observer(tmp_path / "teacher", CLASSES), epochs=3, eval_every=1, seeds=[0, 1],
                    baseline="random", real_data=str(real), factor=1)
    return EvalConfig(**{**settings, **overrides})


def test_two_seeds_give_two_results_and_a_mean(tmp_path, ray_session):
    report = evaluate(_tiny_config(tmp_path))
    assert set(report["sets"]) == {"distilled", "random"}
    for summary in report["sets"].values():
        assert summary["seeds"] == [0, 1] and len(summary["final_acc"]) == 2
        assert abs(summary["final_acc_mean"] - sum(summary["final_acc"]) / 2) < 0.01
        assert len(summary["per_class_acc_mean"]) == 3 and len(summary["curves"][0]) == 3
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    # IPC 2: RDED's 50, capped at the set's 6 images as its reference caps it
    assert saved["plan"]["batch_size"] == 6 and saved["plan"]["temperature"] == 20.0
    assert (tmp_path / "eval" / "curve.png").exists()


def test_a_rerun_keeps_the_trials_an_interrupted_evaluation_finished(tmp_path, ray_session):
    config = _tiny_config(tmp_path, seeds=[0], epochs=2)
    first = evaluate(config)
    out = tmp_path / "eval"
    trial_dirs = sorted(p.name for p in (out / "tune" / "trials").iterdir() if p.is_dir())
    assert len(trial_dirs) == 2
    for name in trial_dirs:  # the last test's checkpoint, which an unfinished trial would resume from
        checkpoints = list((out / "tune" / "trials" / name).glob("checkpoint_*/student.pt"))
        assert len(checkpoints) == 1 and torch.load(checkpoints[0])["epoch"] == 2
    # What a driver stopped after its trials ended, before writing the report, leaves behind.
    partial = out.with_name(".eval.partial")
    out.rename(partial)
    (partial / "report.json").unlink()
    marker = json.loads((partial / "raydd.json").read_text())
    (partial / "raydd.json").write_text(json.dumps({**marker, "complete": False}))

    # Rerun with other resources (execution only, as the README says): it resumes instead of refusing.
    second = evaluate(replace(config, cpus_per_worker=0.5, threads_per_worker=1))
    assert second["sets"] == first["sets"]
    assert sorted(p.name for p in (out / "tune" / "trials").iterdir() if p.is_dir()) == trial_dirs  # none trained
    assert json.loads((out / "raydd.json").read_text())["complete"] and not partial.exists()


def test_trials_on_a_gpu_share_compute_what_cpu_trials_compute(tmp_path, ray_session):
    """Half a (logical) GPU a trial: Ray can schedule both seeds on the session's one GPU; with no CUDA the trials
    train on the CPU and must give the CPU trials' numbers exactly."""
    cpu = evaluate(_tiny_config(tmp_path, epochs=2, baseline="none", out=str(tmp_path / "cpu")))
    gpu = evaluate(_tiny_config(tmp_path, epochs=2, baseline="none", out=str(tmp_path / "gpu"), gpus_per_worker=0.5,
                                num_workers=1))  # and one trial at a time (Tune's max_concurrent_trials)
    assert gpu["config"]["gpus_per_worker"] == 0.5 and gpu["sets"] == cpu["sets"]
