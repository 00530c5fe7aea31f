"""``raydd train`` of a ConvNet-3 on the CIFAR-10 JPEG copy: accuracy, wall time and throughput.

    python benchmarks/train_convnet.py --epochs 8 --num-workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from _machine import machine, shared_dataset

from raydd.runtime import tune_allocator
from raydd.train import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--max-per-class", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    tune_allocator()
    root = shared_dataset("cifar10-jpg")
    with tempfile.TemporaryDirectory() as storage:
        config = TrainConfig(data=os.path.join(root, "train"), val_data=os.path.join(root, "test"), model="convnet3",
                             epochs=args.epochs, num_workers=args.num_workers, batch_size=args.batch_size, lr=args.lr,
                             max_per_class=args.max_per_class, storage_path=storage, name="bench")
        started = time.perf_counter()
        result = fit(config)
        wall = time.perf_counter() - started
    print(json.dumps({"benchmark": "train_convnet3_cifar10", "epochs": args.epochs, "num_workers": args.num_workers,
                      "batch_size": args.batch_size, "lr": args.lr, "schedule": config.schedule,
                      "train_images_per_class": args.max_per_class or "all (5000)",
                      "val_acc": round(100 * result.metrics["val_acc"], 2),
                      "train_acc": round(100 * result.metrics["train_acc"], 2),
                      "last_epoch_images_per_s": round(result.metrics["images_per_s"], 1),
                      "wall_s": round(wall, 1), "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
