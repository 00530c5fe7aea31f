"""Failures that must not take a run down or over: hostile checkpoints, unequal shards, diverging ranks, bad
source files, and reruns with other resources. Each test here failed on the code before its fix."""

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from raydd.config import config_hash
from raydd.io.torch_files import ALLOW_PICKLE_ENV, load_torch_file
from raydd.models import get_model, load_observer
from tests.conftest import make_image_folder


class _WritesAFile:
    """Unpickling this runs ``open(path, "w").write("pwned")``: what a hostile checkpoint does."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


class _Harmless:
    """A Python object (not a tensor or plain value): only loads with the opt-in."""


def _hostile(tmp_path: Path, name: str = "evil.pt") -> tuple[Path, Path]:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / name
    state = get_model("cifar_resnet20", num_classes=10).state_dict()
    torch.save({"state_dict": state, "payload": _WritesAFile(str(marker))}, path)
    return path, marker


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    path, marker = _hostile(tmp_path)
    with pytest.raises(ValueError, match=f"refuses it.*{ALLOW_PICKLE_ENV}=1"):
        load_observer(f"cifar_resnet20@{path}")
    folder = tmp_path / "run" / "checkpoint_000001"
    folder.mkdir(parents=True)
    _hostile(folder, "model.pt")
    with pytest.raises(ValueError, match=ALLOW_PICKLE_ENV):
        load_observer(f"checkpoint@{tmp_path / 'run'}")
    assert not marker.exists() and not (folder / "pwned.txt").exists()


def test_the_opt_in_loads_python_objects_from_trusted_files(tmp_path, monkeypatch):
    path = tmp_path / "old.pt"
    torch.save({"weights": torch.ones(2), "extra": _Harmless()}, path)
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    with pytest.raises(ValueError, match="refuses"):
        load_torch_file(path)
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    assert isinstance(load_torch_file(path)["extra"], _Harmless)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable torch file"):
        load_torch_file(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_torch_file(tmp_path / "missing.pt")


def test_the_latest_checkpoint_is_found_by_name_without_loading_any(tmp_path):
    from raydd.models.checkpoint import CHECKPOINT_FILE, find_checkpoint

    for name in ("checkpoint_000009", "checkpoint_000010", "checkpoint_2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / CHECKPOINT_FILE).write_bytes(b"unreadable: loading it would fail")
    assert find_checkpoint(tmp_path).parent.name == "checkpoint_000010"
    stamps = ["checkpoint_2026-11-30_09-59-59.999999", "checkpoint_2026-11-30_10-00-00.000001"]
    for name in stamps:  # Ray Train V2's names
        (tmp_path / "v2" / name).mkdir(parents=True)
        (tmp_path / "v2" / name / CHECKPOINT_FILE).write_bytes(b"")
    assert find_checkpoint(tmp_path / "v2").parent.name == stamps[1]


def test_the_finite_flag_is_one_float32_whether_or_not_the_step_diverged():
    from raydd.matching.match import finite_flag

    good = finite_flag(torch.tensor(0.5), [torch.ones(3), torch.zeros(2)])
    bad_loss = finite_flag(torch.tensor(float("nan")), [torch.ones(3)])
    bad_grad = finite_flag(torch.tensor(0.5), [torch.tensor([1.0, float("inf")])])
    for flag, value in ((good, 1.0), (bad_loss, 0.0), (bad_grad, 0.0)):
        assert flag.dtype == torch.float32 and flag.shape == (1,) and flag.item() == value


def test_the_initial_set_keeps_each_images_true_source_and_skips_bad_files(tmp_path):
    from raydd.data import list_images, sample_per_class
    from raydd.data.memory import load_labelled_images
    from raydd.matching import MatchConfig
    from raydd.matching.match import initial_set

    data = make_image_folder(tmp_path / "train", ["a", "b"], 4, size=32)
    config = MatchConfig(data=str(data), experts="unused", out="unused", ipc=2, seed=3)
    first = sample_per_class(list_images(data), 4, seed=3)["a"]
    Path(first[0]).write_bytes(b"")  # the first image drawn for class a cannot be read
    start = initial_set(config, 32)
    assert start.sources[:2] == first[1:3] and start.skipped == {"empty": 1}
    assert start.labels.tolist() == [0, 0, 1, 1] and start.classes == ["a", "b"]
    pixels = load_labelled_images(start.sources, [0] * 4, size=32).images
    from raydd.models.registry import IMAGENET_NORM

    assert torch.allclose(start.images, IMAGENET_NORM.apply(pixels.float() / 255))  # each image is its source
    for ref in first[1:]:
        Path(ref).write_bytes(b"")
    with pytest.raises(ValueError, match="class 'a' has 0 images that decode, but ipc = 2"):
        initial_set(config, 32)


def test_ranks_take_the_same_number_of_steps_on_unequal_shards():
    from raydd.train.loop import steps_per_epoch

    assert steps_per_epoch(35, 12) == 2 and steps_per_epoch(5, 12) == 1  # without a process group: its own
    with pytest.raises(ValueError, match="no training image"):
        steps_per_epoch(0, 12)


def test_an_evaluation_rerun_with_other_resources_has_the_same_hash():
    from raydd.evaluate.config import EvalConfig

    base = EvalConfig(distilled="d", val_data="v", out="o")
    moved = replace(base, num_workers=2, cpus_per_worker=4.0, gpus_per_worker=0.5, threads_per_worker=2,
                    max_failures=3, address="ray://x:10001", cache_dir="/elsewhere")
    assert config_hash(moved) == config_hash(base)
    assert config_hash(replace(base, epochs=5)) != config_hash(base)


def test_train_experts_leaves_the_callers_config_as_given(tmp_path, monkeypatch):
    import raydd.scaling as scaling
    from raydd.trajectories import ExpertsConfig, train_experts

    data = make_image_folder(tmp_path / "train", ["a", "b"], 2, size=32)
    monkeypatch.chdir(tmp_path)

    def fake_trainer(loop, loop_config, config, **kwargs):  # what the workers would leave: one expert file
        Path(loop_config["config"]["out"], "expert_0000.pt").write_bytes(b"")

    monkeypatch.setattr(scaling, "run_torch_trainer", fake_trainer)
    config = ExpertsConfig(data=str(data), out="experts/", num_experts=1)
    files = train_experts(config)
    assert config.out == "experts/" and files == [tmp_path / "experts" / "expert_0000.pt"]
    assert os.path.isabs(files[0])


def test_a_rerun_with_every_expert_on_disk_starts_no_workers(tmp_path, monkeypatch):
    import raydd.scaling as scaling
    from raydd.trajectories import ExpertsConfig, train_experts

    data = make_image_folder(tmp_path / "train", ["a", "b"], 2)
    out = tmp_path / "experts"
    out.mkdir()
    started = []
    monkeypatch.setattr(scaling, "run_torch_trainer", lambda *args, **kwargs: started.append(kwargs["name"]))
    config = ExpertsConfig(data=str(data), out=str(out), num_experts=2, zca=True)
    for name in ("expert_0000.pt", "expert_0001.pt", "zca.pt"):
        (out / name).write_bytes(b"")
    assert train_experts(config) == [out / "expert_0000.pt", out / "expert_0001.pt"] and started == []
    (out / "zca.pt").unlink()  # the experts whitened, but the transform matching needs is gone: run again
    train_experts(config)
    assert started == ["experts"]
    (out / "zca.pt").write_bytes(b"")
    (out / "expert_0001.pt").unlink()  # one expert missing
    train_experts(config)
    assert started == ["experts", "experts"]


def test_weights_that_must_download_without_network_say_how_to_give_a_file(tmp_path, monkeypatch, capsys):
    import urllib.error

    import torchvision.models._api as api

    from raydd.cli import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ValueError, match=r"could not load torchvision's pretrained resnet18.*torchvision:resnet18@"):
        load_observer("torchvision:resnet18")
    data = make_image_folder(tmp_path / "train", ["a", "b"], 2, size=32)
    code = main(["rded", "--data", str(data), "--out", str(tmp_path / "out"), "--observer", "torchvision:resnet18",
                 "--ipc", "1", "--factor", "1", "--mipc", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "raydd rded: error: could not load torchvision's pretrained resnet18" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
