"""Why raydd sets ``MALLOC_ARENA_MAX=1``: an observer's forward on the main thread and on a worker thread.

    env -u MALLOC_MMAP_MAX_ -u MALLOC_TRIM_THRESHOLD_ -u MALLOC_ARENA_MAX python allocator_threads.py
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_ARENA_MAX=1 python allocator_threads.py

The second is what every Ray worker raydd starts gets (its runtime_env sets these variables at process start).

Ray Data calls a UDF from a thread other than the main one; glibc gives such a thread an arena of its own.
Prints images/s and minor page faults over three batches of 64 (EfficientNet-Lite0, 224 px, fp32,
channels-last, 2 threads) on each thread.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time

import torch
from _machine import machine

from raydd.models import load_observer


def main() -> None:
    mode = {k: os.environ.get(k) for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")}
    observer = load_observer("efficientnet_lite0").to(memory_format=torch.channels_last)
    x = torch.randn(64, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    results = {}

    def run(where: str) -> None:
        torch.set_num_threads(2)
        with torch.inference_mode():
            observer.logits(x)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            started = time.perf_counter()
            for _ in range(3):
                observer.logits(x)
            elapsed = time.perf_counter() - started
        results[where] = {"images_per_s": round(192 / elapsed, 1),
                          "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}

    run("main_thread")
    worker = threading.Thread(target=run, args=("worker_thread",))
    worker.start()
    worker.join()
    print(json.dumps({"benchmark": "allocator_threads", "env": mode, **results, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
