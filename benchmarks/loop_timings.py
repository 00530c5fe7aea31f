"""Seconds per unit of the three training loops IADD's benchmark runs, in one process, no Ray (issue 20).

    python benchmarks/loop_timings.py                 # CPU here; --device cuda on the GPU machine

* an expert epoch (``train_expert``: ConvNet-3, SGD, batch 256, DSA) over --images random 32 px images,
  reported per 50,000 images;
* a matching iteration at CIFAR-10 IPC 10 (100 images, syn_steps 30, DSA), MTT, full graph and constant memory;
* a student epoch of the MTT protocol (100 images, batch 256, DSA) — 1000 of them make an evaluation seed.

Each figure is the median of --repeats timed runs after one warm-up; on a GPU every timed run ends with a
synchronisation, so queued work is counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from raydd.runtime import tune_allocator

tune_allocator()

import torch  # noqa: E402  (after the allocator settings)
from _machine import machine  # noqa: E402


def _median_s(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    from raydd.evaluate.students import StudentPlan, train_student
    from raydd.io.experts import flat_params, param_layout
    from raydd.matching.loss import matching_gradients
    from raydd.models import get_model
    from raydd.trajectories.experts import ExpertsConfig, train_expert
    from raydd.transforms.augment import dsa

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=5000, help="expert epoch size (scaled to 50,000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(args.images) % 10
    config = ExpertsConfig(data="unused", out="unused", epochs=1)
    model = get_model("convnet3", num_classes=10)
    expert_s = _median_s(lambda: train_expert(model, x, y, config, seed=0, device=device), args.repeats, device)

    names, shapes = param_layout(model)
    start = flat_params(model).to(device)
    target = start + 0.01 * torch.randn_like(start)
    syn = torch.randn(100, 3, 32, 32, device=device, requires_grad=True)
    labels = (torch.arange(100) % 10).to(device)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    model = model.to(device)
    iteration_s = {}
    for memory in ("full", "constant"):
        def iteration(memory: str = memory) -> object:
            return matching_gradients(model, names, shapes, start, target, syn, labels, lr, steps=30, batch_size=100,
                                      generator=torch.Generator().manual_seed(0), augment=dsa, memory=memory)
        iteration_s[memory] = _median_s(iteration, args.repeats, device)

    plan = StudentPlan(protocol="mtt", student="convnet3", num_classes=10, input_size=32, epochs=20, batch_size=256,
                       lr=0.01, weight_decay=5e-4, temperature=1.0, mix="cutmix", factor=1, eval_every=20)
    small = x[:100]
    student_s = _median_s(lambda: train_student(plan, 0, small, y[:100], small[:10], y[:10], device=device),
                          args.repeats, device) / plan.epochs
    print(json.dumps({"benchmark": "loop_timings", "device": str(device),
                      "expert_epoch_s_per_50k": round(expert_s * 50_000 / args.images, 2),
                      "matching_iteration_s": {k: round(v, 3) for k, v in iteration_s.items()},
                      "student_epoch_s": round(student_s, 4),
                      "evaluation_seed_s_1000_epochs": round(student_s * 1000, 1),
                      "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
