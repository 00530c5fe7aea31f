"""The one writer of distilled sets and the one loader of labelled images, without Ray."""

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from raydd.data import DecodeStats, list_images
from raydd.data.memory import load_labelled
from raydd.io import DistilledSet, DistilledSetWriter, SetInfo
from tests.conftest import make_image_folder


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_written_set_reads_back_with_its_rows_labels_and_pictures(tmp_path):
    writer = DistilledSetWriter(tmp_path, ["cat", "dog"])
    top = (np.array([1, 0], dtype=np.int32), np.array([2.5, -1.0], dtype=np.float16))
    patch = (np.array([0, 1], dtype=np.int32), np.array([0.5, 0.25], dtype=np.float16))
    assert writer.add(1, _png(200), sources=["d/1.jpg"], boxes=[[0, 0, 8]], scores=[0.1], label=top,
                      patch_labels=[patch]) == "images/dog/00000.png"
    writer.add(0, _png(10), sources=["c/1.jpg"], boxes=[[1, 2, 3]], scores=[0.2], label=top, patch_labels=[patch])
    writer.add(1, _png(90), sources=["d/2.jpg"], boxes=[[2, 2, 4]], scores=[0.3], label=top, patch_labels=[patch])
    manifest = writer.finish(SetInfo(method="test", classes=["cat", "dog"]), {"images": len(writer)})

    assert manifest.column("file").to_pylist() == ["images/cat/00000.png", "images/dog/00000.png",
                                                   "images/dog/00001.png"]  # class order, whatever the arrival
    assert manifest.column("sha256").to_pylist()[1] == hashlib.sha256(_png(200)).hexdigest()
    assert not list(tmp_path.rglob("*.tmp"))
    distilled = DistilledSet(tmp_path)
    assert distilled.classes == ["cat", "dog"] and distilled.stats == {"images": 3}
    images, labels = distilled.images()
    assert labels.tolist() == [0, 1, 1] and images[0].max() == 10
    indices, logits = distilled.soft_labels()
    assert indices.tolist() == [[1, 0]] * 3 and logits[0].tolist() == [2.5, -1.0]
    assert distilled.soft_labels(patches=True)[0].tolist() == [[0, 1]] * 3
    assert (tmp_path / "montage.png").exists()


@pytest.mark.parametrize("chunk", [2, 256])  # rows kept as Arrow chunks of 2 images, or all in one
def test_images_numbered_by_the_caller_may_arrive_in_any_order_and_are_on_disk_at_once(tmp_path, monkeypatch,
                                                                                       chunk):
    monkeypatch.setattr("raydd.io.writer.CHUNK", chunk)
    writer = DistilledSetWriter(tmp_path, ["a", "b"])
    arrivals = [(1, 1, 40), (0, 2, 30), (1, 0, 20), (0, 0, 10), (0, 1, 15)]
    for c, n, value in arrivals:
        label = (np.array([c], dtype=np.int32), np.array([float(value)], dtype=np.float16))
        patch = (np.array([n], dtype=np.int32), np.array([float(value) + 0.5], dtype=np.float16))
        rel = writer.add(c, _png(value), n=n, sources=[f"src/{value}.jpg"], boxes=[[0, 0, value]], label=label,
                         patch_labels=[patch, patch])
        assert (tmp_path / rel).read_bytes() == _png(value)  # written on arrival: the caller keeps nothing
    with pytest.raises(ValueError, match="added twice"):
        writer.add(0, _png(1), n=1, sources=["x"])
    manifest = writer.finish(SetInfo(method="test", classes=["a", "b"]), {})
    assert list(zip(manifest["class_index"].to_pylist(), manifest["n"].to_pylist(), strict=True)) == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert manifest["patch_sources"].to_pylist() == [["src/10.jpg"], ["src/15.jpg"], ["src/30.jpg"],
                                                     ["src/20.jpg"], ["src/40.jpg"]]
    assert manifest["patch_boxes"].to_pylist() == [[[0, 0, v]] for v in (10, 15, 30, 20, 40)]
    _, logits = DistilledSet(tmp_path).soft_labels()  # the labels follow their images into class order
    assert logits[:, 0].tolist() == [10, 15, 30, 20, 40]
    indices, logits = DistilledSet(tmp_path).soft_labels(patches=True)
    assert logits[:, 0].tolist() == [v + 0.5 for v in (10, 10, 15, 15, 30, 30, 20, 20, 40, 40)]
    assert indices[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1]


def test_a_tail_for_some_labels_only_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("raydd.io.writer.CHUNK", 1)
    writer = DistilledSetWriter(tmp_path, ["a"])
    top = (np.array([0], dtype=np.int32), np.array([1.0], dtype=np.float16))
    writer.add(0, _png(1), sources=["x"], label=(*top, np.array([0.0, 1.0], dtype=np.float32)))
    writer.add(0, _png(2), sources=["y"], label=top)
    with pytest.raises(ValueError, match="1 of 2 soft labels have a tail"):
        writer.finish(SetInfo(method="test", classes=["a"]), {})


def test_the_writer_keeps_no_view_of_a_callers_label_arrays(tmp_path):
    """Labels arrive as views of a Ray batch; a kept view would pin the batch, its images included, in the object
    store until the set is finished (the driver's mapped store pages grew with IPC)."""
    block = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)  # a block whose rows the labels are views of
    writer = DistilledSetWriter(tmp_path, ["cat"])
    writer.add(0, _png(1), sources=["c/1.jpg"], label=(block[0, :3].astype(np.int32), block[0, 3:]),
               patch_labels=[(block[1, :3].astype(np.int32), block[1, 3:])])
    block[:] = -1  # the block is reused or freed: the set keeps the labels as they were given
    writer.finish(SetInfo(method="test", classes=["cat"]), {})
    indices, logits = DistilledSet(tmp_path).soft_labels()
    assert indices[0].tolist() == [0, 1, 2] and logits[0].tolist() == [3.0, 4.0, 5.0]


@pytest.mark.parametrize("name", ["..", ".", "", "../../escape", "a/b", "a\\b", "nul\x00", "tab\tname"])
def test_a_class_name_that_is_not_one_path_component_is_refused_before_anything_is_written(tmp_path, name):
    from raydd.io.names import UnsafeClassNameError

    with pytest.raises(UnsafeClassNameError, match="one path component"):
        DistilledSetWriter(tmp_path / "out", ["fine", name])
    assert not (tmp_path / "out").exists()


def test_a_set_without_labels_or_boxes_has_neither_table_nor_columns(tmp_path):
    writer = DistilledSetWriter(tmp_path, ["a"])
    writer.add(0, _png(5), sources=["a/1.jpg"])
    manifest = writer.finish(SetInfo(method="test", classes=["a"]), {})
    assert "patch_boxes" not in manifest.column_names and not (tmp_path / "soft_labels.parquet").exists()


def test_boxes_for_some_images_only_are_refused(tmp_path):
    writer = DistilledSetWriter(tmp_path, ["a"])
    writer.add(0, _png(5), sources=["a/1.jpg"], boxes=[[0, 0, 8]])
    writer.add(0, _png(6), sources=["a/2.jpg"])
    with pytest.raises(ValueError, match="patch_boxes were given for 1 of 2 images"):
        writer.finish(SetInfo(method="test", classes=[]), {})
    with pytest.raises(ValueError, match="image_format"):
        DistilledSetWriter(tmp_path, ["a"], image_format="gif")


def test_the_loader_keeps_class_order_drawn_files_and_shards_and_counts_what_it_drops(tmp_path):
    root = make_image_folder(tmp_path / "data", ["a", "b", "c"], 3, size=12)
    (root / "b" / "broken.png").write_bytes(b"not an image")
    index = list_images(str(root))
    stats = DecodeStats()
    everything = load_labelled(index, ["c", "a", "b"], size=8, stats=stats)
    assert everything.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3  # labels follow the order asked for
    assert everything.images.shape == (9, 3, 8, 8) and everything.images.dtype == torch.uint8
    assert dict(stats.skipped) and sum(stats.skipped.values()) == 1 and len(everything.refs) == 9
    drawn = load_labelled(index, ["a", "b", "c"], size=8, files={"b": index.files["b"][:2]})
    assert drawn.labels.tolist() == [1, 1] and drawn.refs == index.files["b"][:2]
    shards = [load_labelled(index, ["a", "b", "c"], size=8, shard=(rank, 2)) for rank in range(2)]
    assert sorted(shards[0].refs + shards[1].refs) == sorted(everything.refs)
    assert not set(shards[0].refs) & set(shards[1].refs)


def test_set_info_writes_each_methods_keys_as_before_and_reads_old_sets():
    rded = SetInfo(method="rded", classes=["a", "b"], observers=["convnet3_bn:w.pt"], observer_columns=[None],
                   observer_weights=["w.pt"], seed=0, config_hash="h", input_size=32, factor=2, ipc=10)
    # the dict the pipeline wrote before SetInfo, key for key and in its order
    assert rded.to_json() == json.dumps({
        "method": "rded", "classes": ["a", "b"], "observers": ["convnet3_bn:w.pt"], "observer_columns": [None],
        "observer_weights": ["w.pt"], "seed": 0, "config_hash": "h", "input_size": 32, "factor": 2, "ipc": 10}).encode()
    norm = {"mean": [0.5] * 3, "std": [0.2] * 3}
    iadd = SetInfo(method="iadd", classes=["a"], learned_lr=0.01, input_size=32, zca=False, ipc=1, iterations=5,
                   skipped_steps=0, normalization=norm, config_hash="h")
    assert iadd.to_json() == json.dumps({
        "method": "iadd", "classes": ["a"], "learned_lr": 0.01, "input_size": 32, "zca": False, "factor": 1, "ipc": 1,
        "iterations": 5, "skipped_steps": 0, "normalization": norm, "config_hash": "h"}).encode()
    assert SetInfo.from_json(rded.to_json()) == rded and SetInfo.from_json(iadd.to_json()) == iadd
    old = SetInfo.from_json(json.dumps({"method": "rded", "classes": ["a"], "a_key_from_elsewhere": 1}).encode())
    assert (old.factor, old.observers, old.learned_lr, old.normalization) == (1, [], None, None)
