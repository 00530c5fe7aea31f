"""Experts shared by two Ray Train workers, then IADD matching on two workers that must stay identical."""

import torch

from raydd.io import DistilledSet
from raydd.matching import MatchConfig, match
from raydd.trajectories import ExpertsConfig, load_expert, train_experts
from tests.conftest import make_image_folder


def test_experts_then_two_worker_iadd(tmp_path, ray_session):
    data = make_image_folder(tmp_path / "train", ["a", "b", "c"], 6, size=32)
    experts = ExpertsConfig(data=str(data), out=str(tmp_path / "experts"), num_experts=3, epochs=3, batch_size=6,
                            num_workers=2)
    files = train_experts(experts)
    assert [f.name for f in files] == ["expert_0000.pt", "expert_0001.pt", "expert_0002.pt"]
    first = load_expert(files[0])
    assert first["trajectory"].shape[0] == 4 and first["seed"] == 0
    stamp = files[0].stat().st_mtime_ns
    assert train_experts(experts) == files and files[0].stat().st_mtime_ns == stamp  # finished experts are kept

    distilled = match(MatchConfig(data=str(data), experts=str(tmp_path / "experts"), out=str(tmp_path / "iadd"),
                                  ipc=1, iterations=4, syn_steps=2, expert_epochs=1, max_start_epoch=2,
                                  lr_img=10.0, checkpoint_every=2, num_workers=2))
    assert isinstance(distilled, DistilledSet) and len(distilled) == 3
    stats = distilled.stats
    assert stats["worker_divergence"] == 0.0
    assert stats["iterations"] == 4 and stats["skipped_steps"] == 0
    assert stats["learned_lr"] > 0 and distilled.meta["learned_lr"] == stats["learned_lr"]
    assert set(stats["weights"]) == set(first["names"])
    images, labels = distilled.images()
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 1, 2]
    assert (distilled.path / "weights.png").exists() and (distilled.path / "montage.png").exists()
    assert not torch.equal(images.float(), torch.zeros_like(images.float()))
