"""Top-1 of the shipped observers on real data: CIFAR ResNet-20/56 on the CIFAR-10 JPEG test set, and
EfficientNet-Lite0 on Imagenette val restricted to its 10 classes.

    python benchmarks/observers.py            (unpacks ../shared/data once into ~/.cache/raydd-bench)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from _machine import machine, peak_rss_gib, shared_dataset, shared_path

from raydd.data import list_images
from raydd.data.memory import load_labelled_images
from raydd.models import load_observer
from raydd.runtime import tune_allocator


@torch.inference_mode()
def top1(spec: str, folder: str, *, size: int, class_map: str | None, batch_size: int = 128) -> dict:
    observer = load_observer(spec)
    index = list_images(folder)
    cmap = observer.class_map_for(index.classes, class_map)
    observer.restrict(cmap.restricted(observer.num_outputs))
    refs = [r for c in cmap.classes for r in index.files[c]]
    labels = [cmap.index_of(c) for c in cmap.classes for _ in index.files[c]]
    loaded = load_labelled_images(refs, labels, size=size)
    images, targets = loaded.images, loaded.labels
    started = time.perf_counter()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((observer(images[i:i + batch_size].float() / 255).argmax(1) == targets[i:i + batch_size]).sum())
    return {"observer": spec, "data": folder, "images": len(images), "top1": round(100 * correct / len(images), 2),
            "images_per_s": round(len(images) / (time.perf_counter() - started), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cifar", default=None, help="CIFAR-10 test folder (default: from ../shared)")
    parser.add_argument("--imagenette", default=None, help="Imagenette val folder (default: from ../shared)")
    args = parser.parse_args()
    args.cifar = args.cifar or os.path.join(shared_dataset("cifar10-jpg"), "test")
    args.imagenette = args.imagenette or os.path.join(shared_dataset("imagenette-224sq"), "val")
    tune_allocator()
    results = [
        top1(f"cifar_resnet20@{shared_path('models', 'cifar10-resnet20-akamaster.th')}", args.cifar, size=32,
             class_map=None),
        top1(f"cifar_resnet56@{shared_path('models', 'cifar10-resnet56-akamaster.th')}", args.cifar, size=32,
             class_map=None),
        top1("efficientnet_lite0", args.imagenette, size=224, class_map="imagenet"),
    ]
    print(json.dumps({"benchmark": "observers", "results": results, "peak_rss_gib": peak_rss_gib(),
                      "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
