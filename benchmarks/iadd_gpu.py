r"""IADD against MTT at a budget that means something, on one GPU inside one device call (issue 20).

    python benchmarks/iadd_gpu.py subset --out .gpu-data    # here, once: 2,500 train + 1,000 test JPEGs a class
                                                            # of ../shared's CIFAR-10 copy (about 14 MB, carried)
    python benchmarks/iadd_gpu.py run --data .gpu-data --json $OUT/iadd.json       # on the GPU machine
    python benchmarks/iadd_gpu.py run --data .gpu-data --json /tmp/iadd.json --smoke  # here: tiny, on CPU

On the device (wheels from ../shared/gpu/ray-wheels.sh .whl; .whl and .gpu-data git-ignored and carried,
about 57 MB together): `python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
PYTHONPATH=/tmp/site:$PWD timeout 570 python3 benchmarks/iadd_gpu.py run --data .gpu-data --json $OUT/iadd.json`
with timeout_s 590. Each phase's figures are in the JSON as soon as it ends, so a run cut short still reports.

Phases, each timed and written to --json as it ends: experts (ZCA, DSA, batch 256; --workers Ray Train workers
sharing the GPU), then per method a probe of --probe iterations that measures an iteration, and the run with as
many iterations as --match-s allows at that pace (MTT's published IPC-10 steps and learning rates; the
constant-memory mode is measured too), then the MTT-protocol evaluation of both sets and the random subset
(--seeds, 1000 epochs, trials sharing the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from _machine import machine, shared_dataset

from raydd.evaluate import EvalConfig, evaluate
from raydd.matching import MatchConfig, match
from raydd.runtime import init_ray, tune_allocator
from raydd.trajectories import ExpertsConfig, train_experts

# MTT's CIFAR-10 IPC-10 row as DESIGN.md gives it (ZCA; the row is disputed: flags override each value).
PUBLISHED = dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.001)


def subset(out: Path, train_per_class: int, test_per_class: int) -> None:
    """The first images of every class (sorted names) of the shared JPEG copy: class-balanced and reproducible."""
    root = Path(shared_dataset("cifar10-jpg"))
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for folder in sorted((root / split).iterdir()):
            target = out / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copyfile(image, target / image.name)


def run(args: argparse.Namespace) -> None:
    tune_allocator()
    gpu = not args.smoke
    init_ray(num_gpus=None if gpu else 0)
    train, test = os.path.join(args.data, "train"), os.path.join(args.data, "test")
    out = Path(args.out)
    result: dict[str, Any] = {"benchmark": "iadd_gpu", "args": vars(args), "phases": {}, "machine": machine()}

    def save() -> None:
        Path(args.json).write_text(json.dumps(result, indent=2))

    share = 1.0 / args.workers
    cpus = max(1, (os.cpu_count() or 2) // args.workers)
    started = time.perf_counter()
    train_experts(ExpertsConfig(data=train, out=str(out / "experts"), num_experts=args.experts, epochs=args.epochs,
                                zca=True, num_workers=args.workers, cpus_per_worker=cpus,
                                gpus_per_worker=share if gpu else 0))
    seconds = time.perf_counter() - started
    images = len([f for c in Path(train).iterdir() for f in c.iterdir()])
    # The GPU's pace: wall seconds per expert epoch over 50,000 images, all workers together.
    result["phases"]["experts"] = {"s": round(seconds, 1), "epochs_total": args.experts * args.epochs,
                                   "images": images, "s_per_50k_epoch": round(seconds / (args.experts * args.epochs)
                                                                              * 50_000 / images, 3)}
    save()

    settings = {**PUBLISHED, **{k: v for k, v in vars(args).items() if k in PUBLISHED and v is not None}}
    sets = {}
    for method in ("mtt", "iadd"):
        def matched(name: str, iterations: int, method: str = method, **extra: Any):
            return match(MatchConfig(data=train, experts=str(out / "experts"), out=str(out / name), method=method,
                                     ipc=10, iterations=iterations, checkpoint_every=max(1, iterations // 5),
                                     gpus_per_worker=1 if gpu else 0, **settings, **extra))

        phase: dict[str, Any] = {}
        for memory in ("full", "constant"):
            probe = matched(f"{method}-probe-{memory}", args.probe, memory=memory)
            phase[f"iteration_s_{memory}"] = round(probe.stats["iteration_s"], 4)
        iterations = max(args.probe, int(args.match_s / phase["iteration_s_full"]))
        started = time.perf_counter()
        sets[method] = matched(method, iterations, memory="full")
        phase |= {"iterations": iterations, "s": round(time.perf_counter() - started, 1),
                  "learned_lr": sets[method].stats["learned_lr"], "skipped_steps": sets[method].stats["skipped_steps"],
                  "weights": sets[method].stats.get("weights"),
                  "weights_by_iteration": sets[method].stats.get("weights_by_iteration")}
        result["phases"][f"match_{method}"] = phase
        save()

    for method, distilled in sets.items():
        started = time.perf_counter()
        report = evaluate(EvalConfig(distilled=str(distilled.path), val_data=test, protocol="mtt",
                                     out=str(out / f"eval-{method}"), epochs=args.eval_epochs, seeds=args.seeds,
                                     eval_every=max(1, args.eval_epochs // 4),
                                     baseline="random" if method == "mtt" else "none", real_data=train,
                                     cpus_per_worker=1, gpus_per_worker=1.0 / (2 * len(args.seeds)) if gpu else 0))
        seconds = time.perf_counter() - started
        result["phases"][f"evaluate_{method}"] = {"s": round(seconds, 1), **{
            name: {k: s[k] for k in ("final_acc", "final_acc_mean", "final_acc_std")}
            for name, s in report["sets"].items()}}
        save()
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("subset", help="copy the class-balanced CIFAR-10 subset")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--train-per-class", type=int, default=2500)
    make.add_argument("--test-per-class", type=int, default=1000)
    go = commands.add_parser("run", help="experts, matching, evaluation")
    go.add_argument("--data", required=True)
    go.add_argument("--out", default="/tmp/raydd-iadd-gpu", help="work folder (a rerun reuses its finished runs)")
    go.add_argument("--json", required=True)
    go.add_argument("--experts", type=int, default=10)
    go.add_argument("--epochs", type=int, default=30)
    go.add_argument("--workers", type=int, default=4, help="expert workers, sharing the GPU")
    go.add_argument("--probe", type=int, default=20, help="iterations that time an iteration")
    go.add_argument("--match-s", type=float, default=100.0, help="seconds of matching per method")
    go.add_argument("--eval-epochs", type=int, default=1000)
    go.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    for name, value in PUBLISHED.items():
        go.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None, help=f"(default {value})")
    go.add_argument("--smoke", action="store_true", help="CPU, tiny: the script itself works")
    args = parser.parse_args()
    if args.command == "subset":
        subset(args.out, args.train_per_class, args.test_per_class)
        return
    if args.smoke:
        args.experts, args.epochs, args.workers, args.probe, args.match_s = 2, 3, 1, 2, 1.0
        args.eval_epochs, args.seeds, args.max_start_epoch, args.syn_steps = 4, [0], 1, 3
    run(args)


if __name__ == "__main__":
    main()
