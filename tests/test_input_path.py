"""The input path at ImageNet's shape, without Ray: reads in flight, Parquet by row group, Hugging Face's integer
labels, and class names that cannot choose where raydd writes."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from raydd.data import list_images, load_class_map, read_image_bytes
from raydd.io.names import UnsafeClassNameError


def _png(value: int) -> bytes:
    """A 16-px image of seeded noise (about 800 bytes, so that in a Parquet file the images outweigh the footer)."""
    pixels = np.random.default_rng(value).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _hf_parquet(path, labels: list[int], names: list[str] | None, *, row_group_size: int | None = None) -> None:
    """A shard in Hugging Face's layout: ``image`` a struct of bytes and path, ``label`` an integer whose names
    are a ClassLabel in the schema's ``huggingface`` metadata."""
    image = pa.array([{"bytes": _png(i), "path": f"{i}.png"} for i in range(len(labels))],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"image": image, "label": pa.array(labels, pa.int64())})
    if names is not None:
        features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    pq.write_table(table, path, row_group_size=row_group_size)


class _Recording(LocalFileSystem):
    """The local disk behind fsspec, counting bytes read and the most opens at once, each open ``delay`` s late."""

    cachable = False  # fsspec would hand every test the same instance, with the counts of the one before

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay, self.bytes_read, self.open_now, self.most_open = delay, 0, 0, 0
        self.lock = threading.Lock()

    def _open(self, path, mode="rb", **kwargs):
        with self.lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
        time.sleep(self.delay)
        with self.lock:
            self.open_now -= 1
        f = super()._open(path, mode, **kwargs)
        read = f.read

        def counted(*args):
            data = read(*args)
            with self.lock:
                self.bytes_read += len(data)
            return data

        f.read = counted
        return f


def _filesystem(recording: _Recording) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(recording))


def test_integer_labels_keep_their_order_and_take_their_classlabel_names(tmp_path):
    names = [f"class {i}" for i in range(12)]
    _hf_parquet(tmp_path / "named.parquet", list(range(12)) * 2, names)
    index = list_images(str(tmp_path / "named.parquet"))
    assert index.classes == names  # label order, not string order ('class 10' would sort before 'class 2')
    cmap = load_class_map(None, index.classes)
    assert cmap.to_dict()["class 10"] == 10 and cmap.to_dict()["class 2"] == 2  # label i is output i
    assert index.files["class 10"] == [f"{tmp_path}/named.parquet#10", f"{tmp_path}/named.parquet#22"]

    (tmp_path / "bare").mkdir()
    _hf_parquet(tmp_path / "bare" / "a.parquet", [10, 2, 0, 11, 1], None)
    bare = list_images(str(tmp_path / "bare"))
    assert bare.classes == ["0", "1", "2", "10", "11"]  # without names: the numbers, in numeric order
    assert load_class_map(None, bare.classes).to_dict() == {"0": 0, "1": 1, "2": 2, "10": 3, "11": 4}


def test_shared_classlabel_names_stay_two_classes(tmp_path):
    _hf_parquet(tmp_path / "t.parquet", [0, 1, 2], ["crane", "heron", "crane"])
    assert list_images(str(tmp_path / "t.parquet")).classes == ["crane (0)", "heron", "crane (2)"]


def test_huggingface_imagenet_labels_become_wnids_and_the_imagenet_class_map_fits_them(tmp_path):
    from torchvision.models import ResNet18_Weights

    from raydd.data import imagenet_wnids

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    names = [f"{c}, {c.title()} synonym" for c in categories]  # Hugging Face's style: "tench, Tinca tinca"
    _hf_parquet(tmp_path / "in1k.parquet", [0, 217, 999, 0, -1], names)
    index = list_images(str(tmp_path / "in1k.parquet"))
    wnids = imagenet_wnids()
    assert index.classes == ["-1", wnids[0], wnids[217], wnids[999]]  # -1 (no label) is not a wnid's class
    cmap = load_class_map("imagenet", [c for c in index.classes if c != "-1"])
    assert cmap.to_dict() == {wnids[0]: 0, wnids[217]: 217, wnids[999]: 999}  # label i is ImageNet output i

    shuffled = names[1:] + names[:1]  # another order is not ImageNet's: the names are kept as they are
    _hf_parquet(tmp_path / "other.parquet", [0, 1], shuffled)
    assert list_images(str(tmp_path / "other.parquet")).classes == shuffled[:2]


@pytest.mark.parametrize("label", ["../../escape_a", "..", "a/b", ""])
def test_a_label_that_is_not_a_folder_name_is_refused_before_any_output_exists(tmp_path, label):
    from raydd.rded import RdedConfig, distill

    table = pa.table({"image": pa.array([_png(1), _png(2)], pa.binary()), "label": ["fine", label]})
    pq.write_table(table, tmp_path / "hub.parquet")
    with pytest.raises(UnsafeClassNameError, match="one path component"):
        list_images(str(tmp_path / "hub.parquet"))
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeClassNameError):
        distill(RdedConfig(data=str(tmp_path / "hub.parquet"), observers=["convnet3"], out=str(out), ipc=1,
                           factor=1, mipc=1, input_size=32))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["hub.parquet"]  # no output, nothing beside it


def test_an_export_refuses_a_manifest_whose_files_leave_the_set(tmp_path):
    from raydd.io import DistilledSet, DistilledSetWriter, SetInfo

    writer = DistilledSetWriter(tmp_path / "set", ["a"])
    writer.add(0, _png(3), sources=["x.png"])
    manifest = writer.finish(SetInfo(method="test", classes=["a"]), {})
    forged = manifest.set_column(manifest.schema.get_field_index("file"), "file", pa.array(["images/../../x.png"]))
    pq.write_table(forged.replace_schema_metadata(manifest.schema.metadata), tmp_path / "set" / "manifest.parquet")
    with pytest.raises(UnsafeClassNameError):
        DistilledSet(tmp_path / "set").export_ddranking(tmp_path / "export")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "export").exists()


def test_files_are_read_many_at_a_time_in_their_order(tmp_path):
    refs = []
    for i in range(24):
        (tmp_path / f"{i}.png").write_bytes(_png(i))
        refs.append(str(tmp_path / f"{i}.png"))
    refs.append(str(tmp_path / "missing.png"))
    slow = _Recording(delay=0.05)
    got = read_image_bytes(refs, _filesystem(slow))
    assert got == [_png(i) for i in range(24)] + [None]
    assert slow.most_open >= 8  # requests overlap: the latency is paid once per round, not once per file
    one = _Recording(delay=0.0)
    assert read_image_bytes(refs, _filesystem(one), max_in_flight=1) == got and one.most_open == 1


def test_parquet_rows_are_read_by_row_group(tmp_path):
    _hf_parquet(tmp_path / "s.parquet", list(range(1600)), None, row_group_size=200)  # 8 row groups, 1.3 MB
    ref = str(tmp_path / "s.parquet")
    size = (tmp_path / "s.parquet").stat().st_size
    wanted = [1057, 3, 1051, 8]  # rows of the 1st and 6th row groups
    recording = _Recording()
    assert read_image_bytes([f"{ref}#{r}" for r in wanted], _filesystem(recording)) == [_png(r) for r in wanted]
    assert recording.bytes_read < 0.3 * size  # two row groups of eight (and the footer), not the whole file
    everything = _Recording()
    assert len(read_image_bytes([f"{ref}#{r}" for r in range(1600)], _filesystem(everything))) == 1600
    assert everything.bytes_read < 1.1 * size  # each row group once


@pytest.mark.parametrize("size, factor", [(32, 2), (33, 2), (30, 3)])
def test_parquet_images_stitched_from_cells_cut_in_shard_order_equal_those_stitched_per_image(tmp_path, size,
                                                                                              factor):
    """Step 5 by source (``cut_cells``, then a group-by, then ``stitch_cells``) makes the bytes of step 5 per image
    (``assemble``), uneven cells (33 px in halves, 30 in thirds) and JPEG draft sizes included."""
    from raydd.rded import tasks

    jpegs = []
    for i in range(12):
        pixels = np.random.default_rng(i).integers(0, 256, (48 + 4 * i, 40, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    pq.write_table(pa.table({"image": pa.array(jpegs, pa.binary()), "label": ["a"] * 12}), tmp_path / "s.parquet",
                   row_group_size=3)
    cells = factor**2
    rng = np.random.default_rng(0)
    names = [[f"s.parquet#{int(r)}" for r in rng.choice(12, cells, replace=False)] for _ in range(3)]
    boxes = [[[int(rng.integers(0, 8)), int(rng.integers(0, 8)), 24] for _ in range(cells)] for _ in range(3)]
    sizes = [[[40, 48 + 4 * int(n.rpartition("#")[2])] for n in image] for image in names]
    drafts = [[[20, 24] if k % 2 else [0, 0] for k in range(cells)] for _ in range(3)]
    fs, root = pafs.LocalFileSystem(), str(tmp_path)
    per_image = tasks.assemble({"class_index": np.zeros(3), "n": np.arange(3), "patch_names": np.array(names),
                                "patch_boxes": np.array(boxes), "patch_sizes": np.array(sizes),
                                "patch_drafts": np.array(drafts)},
                               fs=fs, root=root, size=size, factor=factor, image_format="png", reads_in_flight=4)
    rows = [(i, k, names[i][k], boxes[i][k], sizes[i][k], drafts[i][k]) for i in range(3) for k in range(cells)]
    rows.sort(key=lambda r: int(r[2].rpartition("#")[2]))  # shard order, as the pipeline hands them out
    cut = tasks.cut_cells({"class_index": np.zeros(len(rows)), "n": np.array([r[0] for r in rows]),
                           "cell": np.array([r[1] for r in rows]), "name": np.array([r[2] for r in rows]),
                           "box": np.array([r[3] for r in rows]), "size": np.array([r[4] for r in rows]),
                           "draft": np.array([r[5] for r in rows])},
                          fs=fs, root=root, size=size, factor=factor, reads_in_flight=4)
    for i in range(3):
        group = {k: v[cut["n"] == i] for k, v in cut.items()}
        image = tasks.stitch_cells(group, size=size, factor=factor, image_format="png")
        assert image["encoded"][0] == per_image["encoded"][i] and image["n"][0] == i


def test_a_scheme_only_fsspec_knows_is_read_through_it_and_an_unknown_one_is_refused():
    import fsspec

    from raydd.data.filesystem import resolve

    memory = fsspec.filesystem("memory")
    for c, name in enumerate(("cat", "dog")):
        for i in range(3):
            memory.pipe(f"/raydd-fsspec-tree/{name}/{i}.png", _png(10 * c + i))
    try:
        index = list_images("memory://raydd-fsspec-tree")  # pyarrow alone: "Unrecognized filesystem type"
        assert index.classes == ["cat", "dog"] and len(index) == 6
        refs = index.files["dog"]
        assert read_image_bytes(refs, index.filesystem()) == [_png(10 + i) for i in range(3)]
    finally:
        memory.rm("/raydd-fsspec-tree", recursive=True)
    with pytest.raises(ValueError, match="no filesystem for this scheme"):
        resolve("nosuchscheme://bucket/train")


def test_hugging_face_datasets_resolve_to_its_filesystem_without_a_request():
    hub = pytest.importorskip("huggingface_hub")
    from raydd.data.filesystem import resolve

    fs, path = resolve("hf://datasets/ILSVRC/imagenet-1k/data")
    assert isinstance(fs.handler.fs, hub.HfFileSystem) and path == "datasets/ILSVRC/imagenet-1k/data"


@pytest.mark.parametrize("names, block", [([f"train-0000{i % 4}.parquet#{i}" for i in range(200)], 256),
                                          ([f"n0144/{i:05d}.JPEG" for i in range(200)], 32)])
def test_bf16_refinement_of_parquet_rows_keeps_the_scorings_blocks(tmp_path, monkeypatch, names, block):
    """Blocks of 32 cut a row group of Parquet rows among several blocks, each of which reads all of it (1.7× the
    window's bytes against 1.06× at the scoring's blocks, BENCHMARKS.md); files keep small blocks."""
    from raydd.rded import score_stage
    from raydd.rded.config import RdedConfig
    from raydd.rded.plan import DistillPlan

    seen = {}

    def fake_scoring(config, plan, todo, folder, stats, *, precision, block_images):
        seen.update(rows=todo.num_rows, precision=precision, block_images=block_images)
        return []

    monkeypatch.setattr(score_stage, "score_candidates", fake_scoring)
    config = RdedConfig(data="d", out="o", observers=["x"], ipc=10, factor=2, mipc=200)
    plan = DistillPlan(fs=None, root="", classes=("a", "b"), columns=[None], weights=["x"], input_size=224,
                       crop_size=224, precision="bf16", gpu=False)
    ids = np.arange(len(names))
    candidates = pa.table({"image_id": ids, "class_index": pa.array(ids % 2, pa.int32()), "name": names})
    scores = candidates.append_column("score", pa.array(np.random.default_rng(0).random(len(names)), pa.float32()))
    score_stage.refine_scores(config, plan, candidates, scores, tmp_path, {})
    assert seen == {"rows": 2 * (40 + 40 // 8 + 2), "precision": "fp32", "block_images": block}
