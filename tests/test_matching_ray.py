"""Experts shared by two Ray Train workers, IADD matching on two workers that must stay identical, and a
matching driver killed mid-run whose rerun resumes from the last checkpoint."""

import os
import signal
import subprocess
import sys
import time

import torch

from raydd.data.zca import Zca
from raydd.evaluate import EvalConfig, evaluate
from raydd.io import DistilledSet
from raydd.io.experts import flat_params, load_expert, param_layout, save_expert
from raydd.matching import MatchConfig, match
from raydd.models import get_model
from raydd.trajectories import ExpertsConfig, train_experts
from tests.conftest import make_image_folder


def test_experts_then_two_worker_iadd(tmp_path, ray_session):
    data = make_image_folder(tmp_path / "train", ["a", "b", "c"], 6, size=32)
    experts = ExpertsConfig(data=str(data), out=str(tmp_path / "experts"), num_experts=3, epochs=3, batch_size=6,
                            num_workers=2, zca=True, normalization="cifar10")
    files = train_experts(experts)
    assert [f.name for f in files] == ["expert_0000.pt", "expert_0001.pt", "expert_0002.pt"]
    first = load_expert(files[0])
    assert first["trajectory"].shape[0] == 4 and first["seed"] == 0
    assert first["normalization"] == {"name": "cifar10", "mean": [0.4914, 0.4822, 0.4465],
                                      "std": [0.2023, 0.1994, 0.2010]}
    stamp = files[0].stat().st_mtime_ns
    assert train_experts(experts) == files and files[0].stat().st_mtime_ns == stamp  # finished experts are kept

    distilled = match(MatchConfig(data=str(data), experts=str(tmp_path / "experts"), out=str(tmp_path / "iadd"),
                                  ipc=1, iterations=4, syn_steps=2, expert_epochs=1, max_start_epoch=2,
                                  lr_img=10.0, checkpoint_every=2, num_workers=2))
    assert isinstance(distilled, DistilledSet) and len(distilled) == 3
    stats = distilled.stats
    assert stats["worker_divergence"] == 0.0
    assert stats["iterations"] == 4 and stats["skipped_steps"] == 0
    assert stats["learned_lr"] != 0.01 and distilled.info.learned_lr == stats["learned_lr"]  # alpha moved
    assert set(stats["weights"]) == set(first["names"])
    images, labels = distilled.images()
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 1, 2]
    assert (distilled.path / "weights.png").exists() and (distilled.path / "montage.png").exists()
    assert not (distilled.path / "ray").exists()  # Ray Train's checkpoints do not outlive the run
    assert _moved_from_their_sources(distilled) == 3  # matching changed every image it started from

    # ZCA: the experts' transform travels with the set, and the evaluation whitens with it
    assert (tmp_path / "experts" / "zca.pt").exists() and distilled.info.zca is True
    shipped, fitted = Zca.load(distilled.path / "zca.pt"), Zca.load(tmp_path / "experts" / "zca.pt")
    assert torch.equal(shipped.transform, fitted.transform)
    report = evaluate(EvalConfig(distilled=str(distilled.path), val_data=str(data), out=str(tmp_path / "eval"),
                                 protocol="mtt", epochs=2, seeds=[0]))
    assert report["zca"] is True and len(report["sets"]["distilled"]["final_acc"]) == 1
    # ... and with the experts' normalisation (MTT's per-data-set constants), which the set records
    assert distilled.info.normalization == {k: first["normalization"][k] for k in ("mean", "std")}
    assert report["plan"]["normalization"] == [first["normalization"]["mean"], first["normalization"]["std"]]


def _moved_from_their_sources(distilled: DistilledSet) -> int:
    """How many of a matched set's images differ by more than rounding from the real image each started as."""
    from raydd.data.memory import load_labelled_images

    images, _ = distilled.images()
    sources = [row[0] for row in distilled.manifest.column("patch_sources").to_pylist()]
    start = load_labelled_images(sources, [0] * len(sources), size=images.shape[-1]).images
    return int(((images.float() - start.float()).abs().amax(dim=(1, 2, 3)) > 1).sum())


def _fake_experts(folder, count: int, epochs: int) -> None:
    """Expert files whose trajectories are seeded random walks: matching needs their shape, not their quality."""
    torch.manual_seed(0)
    model = get_model("convnet3", num_classes=3, width=16)
    names, shapes = param_layout(model)
    start = flat_params(model)
    for i in range(count):
        steps = 0.01 * torch.randn(epochs, start.numel(), generator=torch.Generator().manual_seed(i))
        trajectory = torch.cat([start[None], start + steps.cumsum(0)])
        save_expert(folder / f"expert_{i:04d}.pt", trajectory=trajectory, model_name="convnet3",
                    model_args={"num_classes": 3, "width": 16}, names=names, shapes=shapes, seed=i, config={})


def test_matching_killed_mid_run_resumes_from_its_checkpoint(tmp_path, ray_session):
    import ray

    data = make_image_folder(tmp_path / "train", ["a", "b", "c"], 4, size=32)
    (tmp_path / "experts").mkdir()
    _fake_experts(tmp_path / "experts", count=2, epochs=3)
    out = tmp_path / "mtt"
    values = dict(data=str(data), experts=str(tmp_path / "experts"), out=str(out), method="mtt", ipc=2,
                  iterations=20, syn_steps=8, expert_epochs=1, max_start_epoch=2, checkpoint_every=2, num_workers=1)
    flags = [x for k, v in values.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    driver = subprocess.Popen([sys.executable, "-m", "raydd", "match", *flags], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Ray Train resumes from the checkpoints its controller has registered in this snapshot.
    registered = tmp_path / ".mtt.partial" / "ray" / "match" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 240
    try:
        while not (registered.exists() and "checkpoint_" in registered.read_text()):
            assert driver.poll() is None, "the driver ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver dies; Ray kills the run's controller and workers
        driver.wait()
    assert not out.exists()

    distilled = match(MatchConfig(**values))
    stats = distilled.stats
    assert 2 <= stats["resumed_from"] < 20 and stats["resumed_from"] % 2 == 0
    assert stats["iterations"] == 20 and len(distilled) == 6
