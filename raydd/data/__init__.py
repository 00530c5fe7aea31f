"""Data layer: image sources, class maps, seeded sampling and robust decoding."""

from raydd.data.class_map import ClassMap, imagenet_wnids, load_class_map
from raydd.data.decode import DecodeStats, decode_rgb
from raydd.data.sampling import sample_per_class
from raydd.data.sources import ImageIndex, list_images, read_image_bytes

__all__ = [
    "ClassMap",
    "DecodeStats",
    "ImageIndex",
    "decode_rgb",
    "imagenet_wnids",
    "list_images",
    "load_class_map",
    "read_image_bytes",
    "sample_per_class",
]
