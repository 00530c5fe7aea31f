"""Sources and decoding on the kinds of files real datasets contain."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raydd.data import DecodeStats, decode_rgb, list_images, read_image_bytes
from raydd.data.memory import load_labelled_images


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8))


@pytest.mark.parametrize("image, fmt", [
    (RGB.convert("L"), "PNG"),
    (RGB.convert("CMYK"), "JPEG"),
    (RGB.convert("P"), "PNG"),
    (RGB.convert("RGBA"), "PNG"),
    (RGB.convert("LA"), "PNG"),
    (RGB.convert("I;16"), "PNG"),
    (RGB, "JPEG"),
])
def test_every_mode_decodes_to_rgb(image, fmt):
    out = decode_rgb(_encode(image, fmt))
    assert out is not None and out.mode == "RGB" and out.size == (24, 20)


def test_palette_with_transparency_becomes_rgb():
    image = RGB.convert("P")
    image.info["transparency"] = 0
    assert decode_rgb(_encode(image, "PNG", transparency=0)).mode == "RGB"


def test_bad_files_are_counted_not_fatal():
    stats = DecodeStats()
    good = _encode(RGB, "JPEG")
    assert decode_rgb(b"", ref="zero", stats=stats) is None
    assert decode_rgb(b"not an image at all", ref="junk", stats=stats) is None
    assert decode_rgb(good[: len(good) // 2], ref="cut", stats=stats) is None
    assert decode_rgb(None, ref="gone", stats=stats) is None
    assert decode_rgb(good, stats=stats) is not None
    assert stats.decoded == 1
    assert dict(stats.skipped) == {"empty": 1, "unreadable": 1, "truncated": 1, "missing": 1}
    assert stats.examples["truncated"] == "cut"


def test_jpeg_draft_decodes_fewer_pixels():
    big = Image.fromarray(np.zeros((400, 600, 3), dtype=np.uint8))
    out = decode_rgb(_encode(big, "JPEG"), draft=lambda size: (size[0] // 4, size[1] // 4))
    assert out.size == (150, 100)


def test_image_folder_listing_and_tensor_loading(tmp_path):
    for name, fmt in (("cat", "png"), ("dog", "jpg")):
        (tmp_path / name).mkdir()
        for i in range(3):
            RGB.save(tmp_path / name / f"{i}.{fmt}")
    (tmp_path / "dog" / "bad.jpg").write_bytes(b"")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "tiny").mkdir()
    Image.new("RGB", (5, 3), (255, 0, 0)).save(tmp_path / "tiny" / "0.png")
    index = list_images(tmp_path)
    assert index.classes == ["cat", "dog", "tiny"]
    assert index.counts() == {"cat": 3, "dog": 4, "tiny": 1}
    refs = [r for c in index.classes for r in index.files[c]]
    labels = [i for i, c in enumerate(index.classes) for _ in index.files[c]]
    stats = DecodeStats()
    loaded = load_labelled_images(refs, labels, size=16, stats=stats)
    images, kept = loaded.images, loaded.labels
    assert images.shape == (7, 3, 16, 16) and images.dtype.is_floating_point is False
    assert kept.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert stats.skipped["empty"] == 1
    assert images[-1, 0].min() == 255  # the 5x3 red image was upsampled, not dropped


def test_missing_or_empty_source_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(tmp_path)


def test_parquet_table_source(tmp_path):
    table = pa.table({"image": [_encode(RGB, "PNG"), _encode(RGB.convert("L"), "JPEG"), b""],
                      "label": ["x", "y", "x"]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    index = list_images(tmp_path)
    assert index.counts() == {"x": 2, "y": 1}
    data = read_image_bytes(index.files["x"])
    assert decode_rgb(data[0]).size == (24, 20)
    assert data[1] == b""
    with pytest.raises(ValueError, match="no image column 'pixels'"):
        list_images(tmp_path, image_column="pixels")


def test_probe_reads_the_header_only():
    from raydd.data.decode import probe

    good = _encode(RGB, "JPEG")
    assert probe(good).size == (24, 20) and probe(good).tensor_jpeg
    large = _encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (150, 200, 3), dtype=np.uint8)), "JPEG")
    assert probe(large[: len(large) // 2]).size == (200, 150)  # truncated scan data: the header is enough
    assert not probe(_encode(RGB.convert("CMYK"), "JPEG")).tensor_jpeg  # Pillow's colour conversion
    assert not probe(_encode(RGB.convert("L"), "JPEG")).tensor_jpeg
    assert not probe(_encode(RGB, "PNG")).tensor_jpeg and probe(_encode(RGB, "PNG")).size == (24, 20)
    assert [probe(d).reason for d in (b"", None, b"junk")] == ["empty", "missing", "unreadable"]


def test_tensor_decoding_agrees_with_pillow_and_counts_the_same_failures():
    import torch

    from raydd.data.decode import decode_tensors, probe

    good = _encode(RGB, "JPEG")
    files = {"good.jpg": good, "cmyk.jpg": _encode(RGB.convert("CMYK"), "JPEG"), "plain.png": _encode(RGB, "PNG"),
             "cut.jpg": good[: len(good) // 2], "zero.jpg": b"", "junk.jpg": b"\xff\xd8\xff" + b"x" * 50,
             "gone.jpg": None}
    refs = list(files)
    items = list(files.values())
    # Marked the way the CPU task marks them, except the junk file, which the batch decoder must reject.
    marks = [probe(d).tensor_jpeg or ref == "junk.jpg" for ref, d in files.items()]
    stats = DecodeStats()
    tensors, reasons = decode_tensors(items, marks, device="cpu", refs=refs, stats=stats)
    reference = DecodeStats()
    for ref, data, tensor, reason in zip(refs, items, tensors, reasons, strict=True):
        expected = decode_rgb(data, ref=ref, stats=(one := DecodeStats()))
        reference.merge(one)
        if expected is None:
            assert tensor is None and reason == next(iter(one.skipped)), ref
        else:
            assert reason == "" and torch.equal(tensor, torch.from_numpy(np.array(expected)).permute(2, 0, 1)), ref
    assert stats.decoded == reference.decoded == 3 and stats.skipped == reference.skipped
