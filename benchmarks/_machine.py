"""What every benchmark prints beside its figures: the machine, the software, and memory readings."""

from __future__ import annotations

import os
import platform
import resource
from typing import Any

import torch


def machine() -> dict[str, Any]:
    import ray

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "malloc_mmap_max": os.environ.get("MALLOC_MMAP_MAX_"),
    }
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def shared_path(*parts: str) -> str:
    """A path under ../shared (benchmarks only: users do not have it)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "shared", *parts)


def shared_dataset(name: str) -> str:
    """Unpack ``../shared/data/<name>.tar.gz`` once into a cache folder and return that folder.

    ``cifar10-jpg`` unpacks to ``train/`` and ``test/``; ``imagenette-224sq`` to ``train/`` and ``val/``.
    """
    import tarfile

    cache = os.path.join(os.environ.get("RAYDD_BENCH_CACHE", os.path.expanduser("~/.cache/raydd-bench")), name)
    if not os.path.isdir(os.path.join(cache, "train")):
        os.makedirs(cache, exist_ok=True)
        with tarfile.open(shared_path("data", f"{name}.tar.gz")) as archive:
            archive.extractall(cache, filter="data")
    return cache
