"""A corpus of hostile files, generated (seeded) by each run: every job finishes, or stops with a clear error, and
every file it skips is counted with its reason."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raydd.data import DecodeStats, decode_rgb, list_images, read_image_bytes
from raydd.data.decode import decode_tensors, probe
from tests.conftest import make_image_folder

# What each file must come to: None decodes; a string is its skip reason; a set, either (bit flips land where
# they land: a flipped JPEG often still decodes).
EXPECTED: dict[str, str | set | None] = {
    "anim.gif": None, "cmyk.jpg": None, "deep.png": None, "exif.jpg": None, "one.png": None, "palette.png": None,
    "png_named.jpg": None, "huge.png": "too_large", "text.png": "unreadable", "trunc.jpg": "truncated",
    "trunc.png": "truncated", "trunc.webp": {"truncated", "unreadable"}, "zero.jpg": "empty",
    "bitflip.jpg": {None, "unreadable", "truncated"}, "bitflip.png": {None, "unreadable", "truncated"},
    "bitflip.webp": {None, "unreadable", "truncated"},
}


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _flip(data: bytes, rng: np.random.Generator, start: int) -> bytes:
    out = bytearray(data)
    for k in rng.integers(start, len(data) - 4, 12):
        out[k] ^= 0xFF
    return bytes(out)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` pixels and whose data holds almost nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))


def hostile_files(folder: Path, seed: int = 0) -> None:
    """Write the corpus into ``folder``: the files of ``EXPECTED``, and what no listing may return or follow (a
    dangling link, a FIFO, a folder named like an image, a link back to its own folder)."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    jpeg, png, webp = _encode(base, "JPEG"), _encode(base, "PNG"), _encode(base, "WEBP")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90°": raydd uses the stored pixels, as the reference code does
    frames = io.BytesIO()
    base.save(frames, format="GIF", save_all=True, append_images=[base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    files = {
        "bitflip.jpg": _flip(jpeg, rng, len(jpeg) // 3), "bitflip.png": _flip(png, rng, 60),
        "bitflip.webp": _flip(webp, rng, 40), "trunc.jpg": jpeg[: len(jpeg) // 2], "trunc.png": png[: len(png) // 2],
        "trunc.webp": webp[: len(webp) // 2], "zero.jpg": b"", "png_named.jpg": png,
        "text.png": b"this is not an image\n" * 10, "one.png": _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "deep.png": _encode(Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)), "PNG"),
        "palette.png": _encode(base.convert("P"), "PNG"), "cmyk.jpg": _encode(base.convert("CMYK"), "JPEG"),
        "exif.jpg": _encode(base, "JPEG", exif=exif.tobytes()), "anim.gif": frames.getvalue(),
        "huge.png": _png_claiming(40_000, 40_000),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    os.symlink(folder / "nowhere.jpg", folder / "gone.jpg")
    os.symlink(folder, folder / "loop")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "dir.jpg").mkdir()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """``ok``: good images; ``mixed``: the hostile files; ``void``: only files that cannot be decoded."""
    root = make_image_folder(tmp_path / "train", ["ok"], 8, size=40)
    hostile_files(root / "mixed")
    (root / "void").mkdir()
    for name in ("text.png", "zero.jpg", "huge.png"):
        (root / "void" / name).write_bytes((root / "mixed" / name).read_bytes())
    return root


def _outcome(data: bytes | None) -> str | None:
    stats = DecodeStats()
    return None if decode_rgb(data, stats=stats) is not None else next(iter(stats.skipped))


def _matches(expected: str | set | None, got: str | None) -> bool:
    return got in expected if isinstance(expected, set) else got == expected


def test_every_hostile_file_is_listed_once_and_decoded_or_skipped_with_its_reason(corpus):
    index = list_images(corpus)
    names = sorted(os.path.relpath(r, corpus / "mixed") for r in index.files["mixed"])
    assert names == sorted(EXPECTED)  # no FIFO, dangling link or folder; the loop is not followed
    refs = index.files["mixed"]
    data = read_image_bytes(refs)
    outcomes = {Path(r).name: _outcome(d) for r, d in zip(refs, data, strict=True)}
    for name, expected in EXPECTED.items():
        assert _matches(expected, outcomes[name]), (name, outcomes[name])
    # The header-only probe refuses the oversized image before any pixel, and the tensor decoder skips what
    # Pillow skips, with the same reasons.
    assert probe(data[names.index("huge.png")]).reason == "too_large"
    tensors, reasons = decode_tensors(data, [probe(d).tensor_jpeg for d in data], device="cpu", refs=refs,
                                      stats=DecodeStats())
    assert [r or None for r in reasons] == [outcomes[Path(r).name] for r in refs]
    assert all((t is None) == bool(r) for t, r in zip(tensors, reasons, strict=True))


def _skips(expected_of: dict[str, str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in expected_of.values():
        if reason:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def test_distill_counts_every_skip_and_names_a_class_left_empty(corpus, ray_session, tmp_path):
    from raydd.rded import RdedConfig, distill

    refs = list_images(corpus).files["mixed"]
    outcomes = {Path(r).name: _outcome(d) for r, d in zip(refs, read_image_bytes(refs), strict=True)}
    settings = dict(data=str(corpus), observers=[_observer(tmp_path)], ipc=1,
                    factor=1, mipc=16, num_crops=2, input_size=32, precision="fp32", classes=["ok", "mixed"])
    for decode in ("tasks", "actor"):
        distilled = distill(RdedConfig(out=str(tmp_path / f"rded-{decode}"), decode=decode, **settings))
        assert distilled.stats["skipped_files"] == _skips(outcomes), decode
        assert len(distilled) == 2
    with pytest.raises(ValueError, match="class 'void': only 0 images could be scored"):
        distill(RdedConfig(out=str(tmp_path / "rded-void"), **{**settings, "classes": ["ok", "void"], "mipc": 3}))


def _observer(tmp_path: Path) -> str:
    """A random ConvNet-3 checkpoint that knows the corpus's class names."""
    import torch

    from raydd.models import get_entry, get_model
    from raydd.train import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "observer", model=get_model("convnet3", num_classes=3), model_name="convnet3",
                    model_args={"num_classes": 3, "input_size": 32}, normalization=get_entry("convnet3").normalization,
                    input_size=32, classes=["mixed", "ok", "void"], epoch=1)
    return f"checkpoint@{tmp_path / 'observer'}"


def test_train_and_evaluate_finish_and_count_what_they_skip(corpus, ray_session, tmp_path):
    import json

    from raydd.evaluate import EvalConfig, evaluate
    from raydd.train import TrainConfig, fit

    refs = list_images(corpus).files["mixed"] + list_images(corpus).files["void"]
    skipped = _skips({r: _outcome(d) for r, d in zip(refs, read_image_bytes(refs), strict=True)})
    result = fit(TrainConfig(data=str(corpus), epochs=1, batch_size=8, storage_path=str(tmp_path / "runs"),
                             name="hostile"))
    assert json.loads(result.metrics["skipped_by_reason"]) == skipped
    report = evaluate(EvalConfig(distilled=str(corpus), val_data=str(corpus), out=str(tmp_path / "eval"),
                                 protocol="mtt", student="convnet3", input_size=32, epochs=1, seeds=[0]))
    assert report["skipped_files"] == skipped and len(report["sets"]["distilled"]["final_acc"]) == 1
