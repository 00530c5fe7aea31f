"""Expert-trajectory throughput: a plain serial loop in one process against Ray Train workers.

    python benchmarks/experts_throughput.py --experts 4 --epochs 2 --per-class 200

Every runner trains the same experts with the same function (``train_expert``: SGD 0.01, batch 256, DSA) on a
class-balanced CIFAR-10 subset. Each figure is the wall time a user pays: the serial loop's includes reading
the images, the Ray figures include Ray Train's start-up and each worker's reading. Ray Train runs as 1 and
2 workers of 1 CPU (one torch thread each) and as 1 worker of 2 CPUs (two threads, like the serial loop).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from raydd.runtime import tune_allocator

tune_allocator()

import torch  # noqa: E402
from _machine import machine, shared_dataset  # noqa: E402


def serial(data: str, out: str, args: argparse.Namespace) -> float:
    from raydd.data import list_images, load_class_map, sample_per_class
    from raydd.data.memory import load_labelled
    from raydd.models.registry import build_model
    from raydd.trajectories import ExpertsConfig, train_expert

    config = ExpertsConfig(data=data, out=out, num_experts=args.experts, epochs=args.epochs,
                           max_per_class=args.per_class)
    started = time.perf_counter()
    index = list_images(data)
    cmap = load_class_map(None, index.classes)
    loaded = load_labelled(index, cmap.classes, size=32, files=sample_per_class(index, args.per_class, seed=0))
    images, labels = loaded.images, loaded.labels
    for i in range(args.experts):
        torch.manual_seed(i)
        model, _ = build_model("convnet3", cmap.num_classes, 32)
        train_expert(model, images, labels, config, seed=i)
    return time.perf_counter() - started


def on_ray(data: str, out: str, workers: int, cpus: int, args: argparse.Namespace) -> float:
    from raydd.trajectories import ExpertsConfig, train_experts

    started = time.perf_counter()
    train_experts(ExpertsConfig(data=data, out=out, num_experts=args.experts, epochs=args.epochs,
                                max_per_class=args.per_class, num_workers=workers, cpus_per_worker=cpus))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()
    data = os.path.join(shared_dataset("cifar10-jpg"), "train")
    work = tempfile.mkdtemp(prefix="raydd-experts-bench-")
    rows = {"serial_loop": serial(data, os.path.join(work, "serial"), args)}
    for workers, cpus in ((1, 1), (2, 1), (1, 2)):
        rows[f"ray_train_{workers}_workers_{cpus}_cpus_each"] = on_ray(
            data, os.path.join(work, f"ray{workers}x{cpus}"), workers, cpus, args)
    expert_epochs = args.experts * args.epochs
    print(json.dumps({"benchmark": "experts_throughput", "experts": args.experts, "epochs": args.epochs,
                      "images": 10 * args.per_class, "torch_threads_serial": torch.get_num_threads(),
                      "results": {k: {"seconds": round(v, 1), "expert_epochs_per_hour": round(expert_epochs / v * 3600)}
                                  for k, v in rows.items()},
                      "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
