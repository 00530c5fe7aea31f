"""What each Ray Train job asks Ray for with ``gpus_per_worker``. A Ray Train worker given a GPU takes NCCL and a CUDA
device, which a machine without CUDA cannot provide, so these check the request itself (RDED's actors and
evaluation's trials run on the session's logical GPU in their own tests)."""

from types import SimpleNamespace

import pytest

from raydd.matching import MatchConfig, match
from raydd.train import TrainConfig, fit
from raydd.trajectories import ExpertsConfig, train_experts
from tests.conftest import make_image_folder
from tests.test_matching_ray import _fake_experts


@pytest.fixture
def requests(monkeypatch):
    """Replaces Ray Train's trainer with one that records its scaling config and returns an empty result."""
    import ray.train.torch

    import raydd.runtime as _runtime

    seen = []

    class Recorder:
        def __init__(self, loop, *, train_loop_config, scaling_config, run_config, torch_config=None):
            scaling_config.backend = torch_config.backend if torch_config else "default (nccl on GPUs)"
            seen.append(scaling_config)

        def fit(self):
            return SimpleNamespace(checkpoint=None, metrics={})

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", Recorder)
    monkeypatch.setattr(_runtime, "init_ray", lambda *args, **kwargs: None)
    return seen


def _one_gpu_each(scaling, workers: int, cpus: int) -> None:
    assert scaling.use_gpu and scaling.num_workers == workers
    assert scaling._resources_per_worker_not_none == {"CPU": cpus, "GPU": 1}
    assert scaling.backend.startswith("default")  # whole GPUs: Ray Train's NCCL


def test_train_experts_and_match_ask_for_one_gpu_per_worker(tmp_path, requests):
    data = make_image_folder(tmp_path / "train", ["a", "b", "c"], 3, size=32)
    with pytest.raises(RuntimeError, match="without a checkpoint"):
        fit(TrainConfig(data=str(data), gpus_per_worker=1, num_workers=2, cpus_per_worker=3,
                        storage_path=str(tmp_path / "runs")))
    _one_gpu_each(requests[-1], 2, 3)
    with pytest.raises(FileNotFoundError, match="no expert files"):
        train_experts(ExpertsConfig(data=str(data), out=str(tmp_path / "none"), gpus_per_worker=1, num_workers=4))
    _one_gpu_each(requests[-1], 4, 1)
    (tmp_path / "experts").mkdir()
    _fake_experts(tmp_path / "experts", count=1, epochs=3)
    with pytest.raises(AttributeError):  # the recorder's run has no checkpoint to write a set from
        match(MatchConfig(data=str(data), experts=str(tmp_path / "experts"), out=str(tmp_path / "m"), ipc=1,
                          expert_epochs=1, max_start_epoch=2, gpus_per_worker=1, num_workers=2, cpus_per_worker=2))
    _one_gpu_each(requests[-1], 2, 2)


def test_a_fraction_of_a_gpu_per_worker_shares_one_over_gloo(tmp_path, requests):
    data = make_image_folder(tmp_path / "train", ["a", "b", "c"], 3, size=32)
    with pytest.raises(FileNotFoundError, match="no expert files"):
        train_experts(ExpertsConfig(data=str(data), out=str(tmp_path / "none"), num_workers=4,
                                    gpus_per_worker=0.25))
    scaling = requests[-1]
    assert scaling._resources_per_worker_not_none == {"CPU": 1, "GPU": 0.25} and scaling.backend == "gloo"
    (tmp_path / "experts").mkdir()
    _fake_experts(tmp_path / "experts", count=1, epochs=3)
    with pytest.raises(AttributeError):
        match(MatchConfig(data=str(data), experts=str(tmp_path / "experts"), out=str(tmp_path / "m"), ipc=1,
                          expert_epochs=1, max_start_epoch=2, num_workers=2, gpus_per_worker=0.5))
    assert requests[-1]._resources_per_worker_not_none == {"CPU": 1, "GPU": 0.5} and requests[-1].backend == "gloo"
