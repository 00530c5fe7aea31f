"""Shared fixtures: one local Ray for the session, and tiny image folders generated on the fly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raydd._runtime import tune_allocator

tune_allocator()


def make_image_folder(root: Path, classes: list[str], per_class: int, *, size: int = 32, seed: int = 0,
                      fmt: str = "png") -> Path:
    """Class ``i`` is a noisy image dominated by colour channel ``i % 3`` with a class-specific stripe."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(size, size, 3))
            pixels[..., c % 3] += 150
            pixels[(c * 3) % size:(c * 3) % size + 3, :, :] = 255 - 20 * c
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.{fmt}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "train", ["a", "b", "c"], 8)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    from raydd._runtime import init_ray

    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
