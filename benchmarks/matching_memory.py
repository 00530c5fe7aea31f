"""Peak memory and time of one MTT/IADD matching iteration against syn_steps, in both memory modes.

    python benchmarks/matching_memory.py                     # CIFAR-10 IPC 10 shapes: ConvNet-3, 100 images

Each (mode, syn_steps) runs in a fresh process so that its peak resident memory is its own; the figure that
matters is the peak above the process's resident memory just before the iteration (model, images, one warm-up
iteration: what any mode needs).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from raydd.runtime import tune_allocator

tune_allocator()

import torch  # noqa: E402  (after the allocator settings)
from _machine import machine  # noqa: E402


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def one(mode: str, steps: int, ipc: int, threads: int) -> dict:
    from raydd.io.experts import flat_params, param_layout
    from raydd.matching.loss import matching_gradients
    from raydd.matching.weights import ImportanceWeights
    from raydd.models import get_model
    from raydd.transforms.augment import dsa

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = get_model("convnet3", num_classes=10)
    names, shapes = param_layout(model)
    start = flat_params(model)
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(10 * ipc, 3, 32, 32, requires_grad=True)
    labels = torch.arange(10).repeat_interleave(ipc)
    lr = torch.tensor(0.01, requires_grad=True)
    weights = ImportanceWeights(shapes, "channel")

    def iteration(n: int) -> None:
        matching_gradients(model, names, shapes, start, target, images, labels, lr, weights, steps=n,
                           batch_size=len(images), generator=torch.Generator().manual_seed(1), augment=dsa,
                           memory=mode)

    iteration(2)
    before = _rss_gib()
    started = time.perf_counter()
    iteration(steps)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"mode": mode, "syn_steps": steps, "seconds": round(seconds, 2), "rss_before_gib": round(before, 3),
            "peak_rss_gib": round(peak, 3), "peak_above_before_gib": round(peak - before, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.child[0], int(args.child[1]), args.ipc, args.threads)))
        return
    rows = []
    for mode in ("full", "constant"):
        for steps in args.steps:
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(steps), "--ipc", str(args.ipc),
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"benchmark": "matching_memory", "model": "convnet3", "images": 10 * args.ipc,
                      "threads": args.threads, "results": rows, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
