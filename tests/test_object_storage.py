"""Inputs, observers, scores, checkpoints, experts, distilled sets and reports on s3://, against a real S3
server (moto) on loopback."""

import shutil

import pyarrow.fs as pafs
import pytest
import torch

import raydd.io.storage as storage
from raydd.evaluate import EvalConfig, evaluate
from raydd.io import DistilledSet, OutputExistsError, RunFolder
from raydd.io.atomic import write_json
from raydd.io.distilled import is_distilled_set
from raydd.matching import MatchConfig, match
from raydd.models import get_entry, get_model, load_observer
from raydd.rded import RdedConfig, distill
from raydd.train import TrainConfig, fit, save_checkpoint
from raydd.trajectories import ExpertsConfig, train_experts
from tests.conftest import make_image_folder

CLASSES = ["ant", "bee", "cow"]


def _listing(uri: str) -> set[str]:
    fs, base = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return {i.path.removeprefix(base + "/") for i in infos if i.type == pafs.FileType.File}


@pytest.fixture(scope="module")
def s3_data(s3, tmp_path_factory):
    """A tiny ImageFolder and a checkpoint observer, uploaded; returns (data URI, observer spec)."""
    root = tmp_path_factory.mktemp("s3-src")
    storage.upload_tree(make_image_folder(root / "train", CLASSES, 8, size=32), f"{s3}/data/train")
    torch.manual_seed(0)
    save_checkpoint(root / "observer", model=get_model("convnet3", num_classes=3), model_name="convnet3",
                    model_args={"num_classes": 3, "input_size": 32}, normalization=get_entry("convnet3").normalization,
                    input_size=32, classes=CLASSES, epoch=1)
    storage.upload_tree(root / "observer", f"{s3}/observer")
    return f"{s3}/data/train", f"checkpoint@{s3}/observer"


def test_remote_output_is_uploaded_marker_last_and_never_overwritten(s3, monkeypatch):
    uri = f"{s3}/sets/one"
    run = RunFolder.open(uri, "hash-1", kind="test")
    assert run.uri == uri and run.storage == f"{s3}/sets/.one.partial"
    (run.work / "images").mkdir()
    (run.work / "images" / "a.png").write_bytes(b"png")
    write_json({"n": 1}, run.work / "stats.json")
    uploaded = []
    real_upload = storage.upload_file
    monkeypatch.setattr(storage, "upload_file", lambda local, dest: (uploaded.append(dest), real_upload(local, dest)))
    assert not RunFolder.finished(uri, "hash-1")
    assert run.finish() == uri
    assert uploaded[-1] == f"{uri}/raydd.json" and len(uploaded) == 3
    assert _listing(uri) == {"images/a.png", "stats.json", "raydd.json"}
    assert RunFolder.finished(uri, "hash-1") and not RunFolder.finished(uri, "hash-2")
    with pytest.raises(OutputExistsError, match="same config"):
        RunFolder.open(uri, "hash-1", kind="test")
    with pytest.raises(OutputExistsError, match="not empty"):
        RunFolder.open(f"{s3}/sets", "hash-1", kind="test")
    assert not is_distilled_set(uri)  # finished, but no manifest: not a distilled set
    with pytest.raises(FileNotFoundError, match="not a finished raydd output"):
        DistilledSet(f"{s3}/sets/missing")


def test_rded_reads_observer_and_images_from_s3_and_writes_there(s3, s3_data, ray_session):
    data, observer = s3_data
    config = RdedConfig(data=data, observers=[observer], out=f"{s3}/rded", ipc=1, factor=2, mipc=8, num_crops=2,
                        input_size=32, batch_size=16, seed=3)
    first = distill(config)
    assert first.uri == f"{s3}/rded" and len(first) == 3
    listed = _listing(f"{s3}/rded")
    assert {"manifest.parquet", "scores.parquet", "soft_labels.parquet", "raydd.json", "montage.png"} <= listed
    assert sum(name.startswith("images/") for name in listed) == 3
    assert _listing(f"{s3}/.rded.partial") == set()  # nothing left beside the output

    shutil.rmtree(storage.mirror_of(f"{s3}/rded"))
    reread = DistilledSet(f"{s3}/rded")  # downloaded again from the bucket
    assert torch.equal(reread.images()[0], first.images()[0]) and is_distilled_set(f"{s3}/rded")

    again = distill(RdedConfig(**{**vars(config), "ipc": 2, "out": f"{s3}/rded-ipc2", "from_scores": f"{s3}/rded"}))
    assert again.stats["scores_from"] == f"{s3}/rded" and len(again) == 6
    assert distill(config).path == reread.path  # a finished remote run of the same config is returned as is


def test_experts_matching_and_training_checkpoints_on_s3(s3, s3_data, ray_session):
    data, _ = s3_data
    files = train_experts(ExpertsConfig(data=data, out=f"{s3}/experts", num_experts=2, epochs=2, batch_size=12,
                                        num_workers=1))
    assert [f.name for f in files] == ["expert_0000.pt", "expert_0001.pt"]
    assert {"expert_0000.pt", "expert_0001.pt"} <= _listing(f"{s3}/experts")

    distilled = match(MatchConfig(data=data, experts=f"{s3}/experts", out=f"{s3}/mtt", method="mtt", ipc=1,
                                  iterations=2, syn_steps=2, expert_epochs=1, max_start_epoch=1, checkpoint_every=1,
                                  num_workers=1))
    assert distilled.uri == f"{s3}/mtt" and len(distilled) == 3 and distilled.stats["iterations"] == 2
    assert _listing(f"{s3}/.mtt.partial") == set()  # its Ray Train checkpoints were removed once it finished

    report = evaluate(EvalConfig(distilled=f"{s3}/mtt", val_data=data, out=f"{s3}/mtt-eval", protocol="mtt",
                                 epochs=2, seeds=[0]))
    assert report["out"] == f"{s3}/mtt-eval" and {"report.json", "curve.png"} <= _listing(f"{s3}/mtt-eval")

    result = fit(TrainConfig(data=data, epochs=1, batch_size=12, num_workers=1, storage_path=f"{s3}/runs",
                             name="observer"))
    assert result.checkpoint.startswith("raydd-test/runs/observer/checkpoint_")
    observer = load_observer(f"checkpoint@{s3}/runs/observer")
    assert observer.class_names == tuple(CLASSES)


def test_the_store_failing_mid_upload_is_a_clear_error_and_the_rerun_uploads_without_recomputing(
        s3, s3_server, s3_data, ray_session, monkeypatch):
    import raydd.rded.pipeline as pipeline

    data, observer = s3_data
    uri = f"{s3}/sets/cut-off"
    config = RdedConfig(data=data, observers=[observer], out=uri, ipc=1, factor=1, mipc=4, num_crops=2,
                        input_size=32, precision="fp32")
    real_upload, uploads = storage.upload_file, []

    def store_vanishes(local, dest):
        uploads.append(dest)
        if len(uploads) == 3:
            s3_server.stop()
        real_upload(local, dest)

    monkeypatch.setattr(storage, "upload_file", store_vanishes)
    try:
        with pytest.raises(OSError, match="nothing there is marked complete. Rerun the same command"):
            distill(config)
    finally:
        s3_server.start()
    monkeypatch.setattr(storage, "upload_file", real_upload)
    assert 0 < len(_listing(uri)) < 10  # a part of the set reached the store, marked incomplete
    assert not is_distilled_set(uri) and not RunFolder.finished(uri, "another config")
    cut_off = sorted(_listing(uri))
    assert not RunFolder.finished(uri, config.result_hash()) and sorted(_listing(uri)) == cut_off  # checks only
    with pytest.raises(FileNotFoundError, match="not a finished raydd output"):
        DistilledSet(uri)

    monkeypatch.setattr(pipeline, "score_candidates", lambda *a, **k: pytest.fail("the rerun recomputed the set"))
    again = distill(config)
    assert is_distilled_set(uri) and len(again) == 3
    assert set(_listing(uri)) >= {"manifest.parquet", "scores.parquet", "raydd.json", "montage.png"}


def test_an_unreachable_store_is_a_one_line_error(s3, s3_server, s3_data, capsys, tmp_path):
    from raydd.cli import main

    data, observer = s3_data
    s3_server.stop()
    try:
        code = main(["rded", "--data", data, "--observer", observer, "--out", str(tmp_path / "out"), "--ipc", "1",
                     "--factor", "1", "--mipc", "2"])
    finally:
        s3_server.start()
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("raydd rded: error:") and "Traceback" not in err
    assert not (tmp_path / "out").exists()
