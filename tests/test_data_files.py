"""Sources and decoding on the kinds of files real datasets contain."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raydd.data import DecodeStats, decode_rgb, list_images, read_image_bytes
from raydd.data.memory import load_tensor_images


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
    images, kept = load_tensor_images(refs, labels, size=16, stats=stats)
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
