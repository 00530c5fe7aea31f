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
        **cpu_flags(),
    }
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def cpu_flags() -> dict[str, Any]:
    """The CPU's model, the vector instructions that decide bf16's speed, and any cap set on them."""
    from raydd.models.precision import native_cpu_bf16

    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"cpu_model": model, "cpu_flags": [f for f in wanted if f in flags],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_cpu_bf16": native_cpu_bf16(),
            "isa_caps": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}}


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


class RssSampler:
    """Samples the resident memory of this process and every Ray process on the machine, every ``period`` s.

    Reports the peak of any single process and the peak of their sum (Ray's workers, raylet, GCS included).
    """

    def __init__(self, period: float = 0.25) -> None:
        import threading

        self.period = period
        self.peak_one: tuple[float, str] = (0.0, "")
        self.peak_sum = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total = 0.0
        me = os.getpid()
        for proc in psutil.process_iter(["pid", "name", "cmdline", "memory_info"]):
            cmd = " ".join(proc.info.get("cmdline") or [])
            if proc.info["pid"] != me and "ray" not in cmd and "raylet" not in (proc.info.get("name") or ""):
                continue
            mem = proc.info.get("memory_info")
            if mem is None:
                continue
            rss = mem.rss / 2**30
            total += rss
            if rss > self.peak_one[0]:
                self.peak_one = (rss, (proc.info.get("name") or "") + " " + cmd[:60])
        self.peak_sum = max(self.peak_sum, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        return {"peak_rss_one_process_gib": round(self.peak_one[0], 3), "peak_rss_process": self.peak_one[1].strip(),
                "peak_rss_sum_gib": round(self.peak_sum, 3)}
