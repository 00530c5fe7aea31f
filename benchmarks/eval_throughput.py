"""Student steps/s under the RDED protocol with the teacher online, and where a step's time goes.

    python benchmarks/eval_throughput.py [--precision fp32 bf16]

Times each part of one training step (augmentation, teacher forward, student forward + backward + update)
over repeated steps on random images, for CIFAR-10 (ConvNet-3 student, ResNet-20 teacher, batch 50) and
Imagenette (ConvNet-5 at 128 px and ResNet-18 at 224 px students, EfficientNet-Lite0 teacher, batch 50).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _machine import machine, shared_path

from raydd.evaluate.losses import kd_loss
from raydd.evaluate.students import StudentPlan, student_optimizer, teacher_logits
from raydd.models import load_observer
from raydd.models.precision import autocast, autocast_dtype
from raydd.models.registry import IMAGENET_NORM, build_model
from raydd.runtime import tune_allocator
from raydd.transforms.augment import cutmix, hflip, random_resized_crop, shuffle_strips

CASES = [
    ("cifar10", "convnet3", 32, 1, f"cifar_resnet20@{shared_path('models', 'cifar10-resnet20-akamaster.th')}", None),
    ("imagenette", "convnet5", 128, 2, "efficientnet_lite0", [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]),
    ("imagenette", "resnet18", 224, 2, "efficientnet_lite0", [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]),
]


def measure(name: str, student: str, size: int, factor: int, spec: str, columns, *, precision: str,
            batch: int = 50, steps: int = 8):
    dtype = autocast_dtype(precision, "cpu")
    plan = StudentPlan(protocol="rded", student=student, num_classes=10, input_size=size, epochs=300,
                       batch_size=batch, lr=1e-3, weight_decay=0.01, temperature=20.0, mix="cutmix", factor=factor,
                       eval_every=25)
    model, _ = build_model(student, 10, size)
    optimizer = student_optimizer(model, plan)
    teacher = load_observer(spec).restrict(columns).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    parts = {"augment": 0.0, "teacher": 0.0, "student": 0.0}
    for step in range(steps + 1):
        t0 = time.perf_counter()
        x = images.float() / 255
        x = hflip(random_resized_crop(shuffle_strips(x, factor, g), (1 / factor, 1), g), g)
        x = cutmix(x, g)[0]
        t1 = time.perf_counter()
        target = teacher_logits(teacher, x, dtype)
        t2 = time.perf_counter()
        with autocast("cpu", dtype):
            logits = model(IMAGENET_NORM.apply(x))
        loss = kd_loss(logits.float(), target, 20.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t3 = time.perf_counter()
        if step:  # the first step warms up
            parts["augment"] += t1 - t0
            parts["teacher"] += t2 - t1
            parts["student"] += t3 - t2
    total = sum(parts.values())
    return {"data": name, "student": student, "input_size": size, "teacher": spec.split("@")[0], "batch": batch,
            "precision": precision,
            "steps_per_s": round(steps / total, 2), "images_per_s": round(steps * batch / total, 1),
            "share": {k: round(v / total, 3) for k, v in parts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    args = parser.parse_args()
    tune_allocator()
    torch.set_num_threads(2)
    results = [measure(*case, precision=p) for case in CASES for p in args.precision]
    print(json.dumps({"benchmark": "eval_throughput", "threads": 2, "results": results, "machine": machine()},
                     indent=2))


if __name__ == "__main__":
    main()
