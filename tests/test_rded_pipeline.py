"""RDED end to end on Ray Data, checked against a plain single-process implementation of the
published algorithm."""

import json
import math
import os
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import raydd.rded.score_stage as score_stage
from raydd.io import DistilledSet, OutputExistsError
from raydd.models import get_entry, get_model
from raydd.rded import RdedConfig, distill
from raydd.rded.plan import actor_args, plan_distillation
from raydd.train import save_checkpoint
from tests.conftest import make_image_folder

CLASSES = ["ant", "bee", "cow"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rded")
    data = make_image_folder(root / "train", CLASSES, 12, size=40)
    torch.manual_seed(0)
    model = get_model("convnet3", num_classes=3)
    save_checkpoint(root / "observer", model=model, model_name="convnet3",
                    model_args={"num_classes": 3, "input_size": 32}, normalization=get_entry("convnet3").normalization,
                    input_size=32, classes=CLASSES, epoch=1)
    return root, data, f"checkpoint@{root / 'observer'}"


def _config(setup, out, **kwargs):
    root, data, observer = setup
    values = {"data": str(data), "observers": [observer], "out": str(root / out), "ipc": 2, "factor": 2, "mipc": 10,
              "num_crops": 3, "input_size": 32, "batch_size": 12, "seed": 5, "precision": "fp32"}
    return RdedConfig(**{**values, **kwargs})


def _reference_files(data: Path) -> dict[str, list[str]]:
    """The class folders' image files, sorted (written here, not taken from raydd)."""
    return {c: sorted(str(p) for p in (data / c).iterdir() if p.suffix.lower() in (".png", ".jpg")) for c in CLASSES}


def _reference_boxes(width: int, height: int, count: int, seed: int, rel: str) -> list[tuple[int, int, int]]:
    """RandomResizedCrop's draw with ratio 1 (ten tries of an area fraction in (0.08, 1), else the centred square),
    from a generator seeded by (seed, "RDED", crc32 of the image's relative path), as the README states."""
    rng = np.random.default_rng([seed, 0x52444544, zlib.crc32(rel.encode())])
    boxes = []
    for _ in range(count):
        for _ in range(10):
            side = round(math.sqrt(width * height * rng.uniform(0.08, 1.0)))
            if 0 < side <= min(width, height):
                top = int(rng.integers(0, height - side + 1))
                boxes.append((int(rng.integers(0, width - side + 1)), top, side))
                break
        else:
            side = min(width, height)
            boxes.append(((width - side) // 2, (height - side) // 2, side))
    return boxes


def reference_rded(data: Path, observer_folder: Path, *, ipc, factor, mipc, num_crops, size, seed):
    """RDED written plainly from its description: per class, per image, per crop; sort; stitch. Only the model's
    architecture comes from raydd; files, draws, boxes, normalisation and weights are read here."""
    state = torch.load(observer_folder / "model.pt", weights_only=True)
    model = get_model(state["model"], **state["model_args"]).eval()
    model.load_state_dict(state["state_dict"])
    mean = torch.tensor(state["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(state["normalization"]["std"]).view(1, 3, 1, 1)
    crop = size // factor
    selected, images = {}, {}
    for c, (name, files) in enumerate(_reference_files(data).items()):
        order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(files))[:mipc]
        ranked = []
        for position, index in enumerate(order):
            image = Image.open(files[index]).convert("RGB")
            rel = os.path.relpath(files[index], data)
            boxes = _reference_boxes(image.width, image.height, num_crops, seed, rel)
            crops = [np.asarray(image.crop((x, y, x + s, y + s)).resize((crop, crop), Image.Resampling.BILINEAR))
                     for x, y, s in boxes]
            x = (torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255 - mean) / std
            pad = (size - crop) // 2
            x = F.pad(x, (pad, size - crop - pad, pad, size - crop - pad))
            with torch.no_grad():
                scores = -F.log_softmax(model(x), dim=1)[:, c]
            best = int(scores.argmin())
            ranked.append((float(scores[best]), position, rel, tuple(int(v) for v in boxes[best])))
        ranked.sort(key=lambda r: (r[0], r[1]))
        keep = ranked[: ipc * factor * factor]
        selected[name] = [(r[2], r[3]) for r in keep]
        for i in range(ipc):
            canvas = np.zeros((size, size, 3), np.uint8)
            for j in range(factor * factor):
                _, _, rel, (x, y, s) = keep[i + ipc * j]
                top, left = (j // factor) * (size // factor), (j % factor) * (size // factor)
                patch = Image.open(data / rel).convert("RGB").crop((x, y, x + s, y + s))
                canvas[top:top + size // factor, left:left + size // factor] = np.asarray(
                    patch.resize((size // factor, size // factor), Image.Resampling.BILINEAR))
            images[(name, i)] = canvas
    return selected, images


def test_pipeline_matches_the_plain_algorithm_and_is_deterministic(setup, ray_session):
    root, data, _observer = setup
    one = distill(_config(setup, "one", num_workers=1, threads_per_worker=1))
    two = distill(_config(setup, "two", num_workers=2, threads_per_worker=1))

    selected, images = reference_rded(data, root / "observer", ipc=2, factor=2, mipc=10, num_crops=3, size=32,
                                      seed=5)
    manifest = one.manifest.to_pylist()
    pixels, labels = one.images()
    for row, image, label in zip(manifest, pixels, labels.tolist(), strict=True):
        name, n = row["class_name"], row["n"]
        assert CLASSES[label] == name
        expected = selected[name][n::2]  # image n takes ranks n, ipc+n, …
        assert list(zip(row["patch_sources"], map(tuple, row["patch_boxes"]), strict=True)) == expected
        assert np.array_equal(image.permute(1, 2, 0).numpy(), images[(name, n)])

    # Same seed and threads per actor, other actor count: byte-identical images and manifest.
    for rel in ["manifest.parquet", *one.manifest.column("file").to_pylist()]:
        assert (one.path / rel).read_bytes() == (two.path / rel).read_bytes(), rel

    # The output format: soft labels per image and per patch, scores of every candidate, a montage.
    idx, val = one.soft_labels()
    assert idx.shape == (6, 3) and val.dtype == np.float16
    assert one.soft_labels(patches=True)[0].shape == (24, 3)
    assert one.soft_label_tails(patches=True).shape == (24, 2)  # k = 3 keeps all 3 classes: nothing outside
    assert (one.path / "montage.png").exists() and (one.path / "config.yaml").exists()
    assert one.stats["candidates"] == 30 and one.stats["crops_scored"] == 90

    # Rerunning a finished config is a no-op; any other config refuses to touch the folder.
    assert distill(_config(setup, "one", num_workers=1, threads_per_worker=1)).path == one.path
    with pytest.raises(OutputExistsError, match="never overwrites"):
        distill(_config(setup, "one", seed=6))


def _contents(distilled: DistilledSet) -> tuple[dict, dict]:
    """What a run produced: its images' bytes and its tables, without the config hash in their metadata (and
    without which rows a GPU run rescored in fp32: off CUDA its TF32 scores were fp32 already)."""
    images = {f: (distilled.path / f).read_bytes() for f in distilled.manifest.column("file").to_pylist()}
    tables = {name: pq.read_table(distilled.path / name).replace_schema_metadata(None).to_pydict()
              for name in ("manifest.parquet", "soft_labels.parquet", "scores.parquet")}
    tables["scores.parquet"].pop("refined", None)
    return images, tables


def test_gpu_actors_are_scheduled_and_give_the_cpu_runs_bytes(setup, ray_session):
    """The session's Ray has one logical GPU: GPU requests must be ones Ray accepts (``map_batches`` refuses
    GPUs without a batch size), and an actor that finds no CUDA computes what a CPU actor computes."""
    cpu = distill(_config(setup, "cpu-tasks"))
    cpu_actor = distill(_config(setup, "cpu-actor", decode="actor"))
    shared = distill(_config(setup, "gpu-half", precision="auto", gpus_per_worker=0.5))  # 2 actors, 1 GPU
    whole = distill(_config(setup, "gpu-one", precision="auto", gpus_per_worker=1, decode="tasks"))
    assert (shared.stats["decode"], shared.stats["precision"]) == ("actor", "tf32")  # tf32 is fp32 off CUDA
    assert shared.stats["refined_images"] > 0 and "refined_images" not in cpu.stats  # TF32: the images in doubt
    assert (whole.stats["decode"], cpu.stats["decode"], cpu_actor.stats["decode"]) == ("tasks", "tasks", "actor")
    assert _contents(shared) == _contents(cpu_actor)
    assert _contents(whole) == _contents(cpu)
    # The two decoders differ only in resampling (Pillow against torch, a grey level apart) on these PNGs.
    assert _contents(cpu)[1]["scores.parquet"]["boxes"] == _contents(cpu_actor)[1]["scores.parquet"]["boxes"]


def test_actor_pools_default_to_the_clusters_resources(setup, ray_session):
    from dataclasses import replace

    config = _config(setup, "unused")
    plan, _ = plan_distillation(config)
    cpu = actor_args(config, plan, "fp32", 64)
    assert (cpu["compute"].min_size, cpu["compute"].max_size) == (2, 2)  # one actor per CPU Ray has
    assert cpu["fn_constructor_kwargs"]["threads"] == 1 and cpu["num_cpus"] == 1 and cpu["batch_size"] is None
    quarter = _config(setup, "unused", gpus_per_worker=0.25)
    gpu = actor_args(quarter, replace(plan, gpu=True), "tf32", 64)
    assert (gpu["compute"].max_size, gpu["num_gpus"], gpu["batch_size"]) == (4, 0.25, 64)
    assert gpu["num_cpus"] == 0.25  # 4 GPU actors leave half of the 2 CPUs to the tasks that feed them
    with pytest.raises(ValueError, match="has 1.0 GPUs"):
        actor_args(_config(setup, "unused", gpus_per_worker=2), replace(plan, gpu=True), "tf32", 64)


def test_killed_run_resumes_and_scores_are_reused(setup, ray_session, monkeypatch):
    root, _data, _observer = setup
    bad = make_image_folder(root / "bad", CLASSES, 12, size=40)
    (bad / "ant" / "zero.png").write_bytes(b"")
    good = (bad / "bee" / "0000.png").read_bytes()
    (bad / "bee" / "cut.png").write_bytes(good[: len(good) // 2])
    config = _config(setup, "resumed", data=str(bad), mipc=13, scores_part_images=12)

    real_write = score_stage.write_parquet
    writes = []

    def crash_after_first_part(table, path):
        real_write(table, path)
        writes.append(path.name)
        if path.name.startswith("part-"):
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(score_stage, "write_parquet", crash_after_first_part)
    with pytest.raises(KeyboardInterrupt):
        distill(config)
    monkeypatch.setattr(score_stage, "write_parquet", real_write)
    assert not (root / "resumed").exists() and (root / ".resumed.partial").exists()

    done = distill(config)
    stats = json.loads((done.path / "stats.json").read_text())
    assert stats["resumed_images"] >= 12 and stats["resumed_images"] + stats["scored_images"] == 38
    assert stats["skipped_files"] == {"truncated": 1, "empty": 1}
    assert stats["skipped_examples"] == {"truncated": "bee/cut.png", "empty": "ant/zero.png"}
    assert not (root / ".resumed.partial").exists()

    again = distill(_config(setup, "reselected", data=str(bad), mipc=13, ipc=1, from_scores=str(done.path)))
    assert again.stats["scores_from"] == str(done.path) and "scored_images" not in again.stats
    assert len(again) == 3

    exported = again.export_ddranking(root / "ddr")
    assert torch.load(exported / "soft_labels.pt").shape == (3, 3)
    assert sorted(p.name for p in exported.iterdir()) == ["ant", "bee", "classes.txt", "cow", "soft_labels.pt"]


def test_bf16_scores_refined_in_fp32_select_what_fp32_selects(setup, ray_session):
    fp32 = distill(_config(setup, "fp32", precision="fp32", mipc=12))
    bf16 = distill(_config(setup, "bf16", precision="bf16", mipc=12, refine_margin=2))
    assert bf16.stats["refined_images"] == 3 * (8 + 2) and "refined_images" not in fp32.stats

    def patches(distilled):
        return [(r["patch_sources"], [tuple(b) for b in r["patch_boxes"]]) for r in distilled.manifest.to_pylist()]

    assert patches(bf16) == patches(fp32)
    exact = pq.read_table(fp32.path / "scores.parquet").to_pydict()
    mixed = pq.read_table(bf16.path / "scores.parquet").to_pydict()
    assert exact["image_id"] == mixed["image_id"]
    rows = list(zip(mixed["refined"], mixed["crop_scores"], exact["crop_scores"], strict=True))
    assert all(ours == theirs for refined, ours, theirs in rows if refined)  # fp32, bit for bit
    assert any(ours != theirs for refined, ours, theirs in rows if not refined)  # outside the window: bf16


def test_errors_before_any_work(setup, tmp_path):
    _root, _data, _observer = setup
    with pytest.raises(ValueError, match=r"cow \(12\)"):
        distill(_config(setup, "x", ipc=4, mipc=16))
    with pytest.raises(ValueError, match="trained without class.*emu"):
        few = make_image_folder(tmp_path / "other", ["ant", "emu"], 9, size=40)
        distill(_config(setup, "y", data=str(few)))
    with pytest.raises(ValueError, match="no such class folder"):
        distill(_config(setup, "z", classes=["yak"]))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("user data")
    with pytest.raises(OutputExistsError):
        distill(_config(setup, str(tmp_path / "taken")))
    assert (tmp_path / "taken" / "mine.txt").read_text() == "user data"
    with pytest.raises(FileNotFoundError):
        DistilledSet(tmp_path)
