"""Shared fixtures: one local Ray for the session, an S3 server on loopback, tiny image folders made on the fly."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raydd.runtime import tune_allocator

tune_allocator()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Set before Ray starts, so that its workers inherit them: the test S3 endpoint (moto, started by the `s3`
# fixture), dummy credentials, and a private cache for raydd's mirrors of remote outputs (removed at exit).
S3_PORT = _free_port()
CACHE = tempfile.mkdtemp(prefix="raydd-test-cache-")
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)
os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}", "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_EC2_METADATA_DISABLED": "true", "RAYDD_CACHE": CACHE})
# Ray Train's controller polls its workers every 2 s and starts a preemption watcher actor for every run: on 2
# cores that is ~3 s of each of the suite's Train runs (measured on trivial runs), and no test drains a node.
os.environ.update({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"})


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


def save_random_observer(folder: Path, classes: list[str], *, seed: int = 0, input_size: int = 32) -> str:
    """A seeded, untrained ConvNet-3 saved as a raydd checkpoint (an observer or teacher for tiny runs); its spec."""
    import torch

    from raydd.models import get_entry, get_model
    from raydd.train import save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(folder, model=get_model("convnet3", num_classes=len(classes), input_size=input_size),
                    model_name="convnet3", model_args={"num_classes": len(classes), "input_size": input_size},
                    normalization=get_entry("convnet3").normalization, input_size=input_size, classes=classes,
                    epoch=1)
    return f"checkpoint@{folder}"


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "train", ["a", "b", "c"], 8)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Ray on this machine: 2 CPUs and one logical GPU, where GPU requests schedule (and run on CPU)."""
    import ray

    from raydd.runtime import init_ray

    init_ray(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """A real S3-compatible server (moto) on loopback; a test may stop and start it (its buckets survive)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(s3_server: object) -> str:
    """The URI of a bucket on the loopback S3 server."""
    import boto3

    boto3.client("s3").create_bucket(Bucket="raydd-test")
    return "s3://raydd-test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Multi-node tests last: their cluster replaces the session's one-node Ray."""
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)
