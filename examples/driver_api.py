r"""The Python API from a driver script: RDED, MTT and IADD on the same data, each evaluated beside the others.

    python examples/driver_api.py --smoke-test --out /tmp/api-smoke       # the built-in CIFAR-10 sample, CPU
    python examples/driver_api.py --data /data/cifar10/train --val-data /data/cifar10/test \
        --observer cifar_resnet20@/ckpt/resnet20.th --out runs/compare --ipc 10

A driver connects to the running Ray cluster (``RAY_ADDRESS``, or ``ray job submit``) or starts a local one;
every call below blocks until its Ray work is done and returns a handle on files, so the steps chain.
"""

from __future__ import annotations

import argparse
import json

from raydd import ExpertsConfig, MatchConfig, RdedConfig, distill, match, train_experts
from raydd.demo import sample_path
from raydd.evaluate import EvalConfig, evaluate


def main(args: argparse.Namespace) -> dict[str, str]:
    if args.smoke_test:
        args.data, args.val_data = sample_path("cifar10", "train"), sample_path("cifar10", "val")
        args.observer = f"cifar_resnet20@{sample_path('cifar10_resnet20.th')}"
        args.ipc, args.iterations, args.epochs, args.seeds = 1, 3, 3, [0]
    sets = {"rded": distill(RdedConfig(data=args.data, observers=[args.observer], out=f"{args.out}/rded",
                                       ipc=args.ipc, factor=1, input_size=32, mipc=40 if args.smoke_test else 300))}
    train_experts(ExpertsConfig(data=args.data, out=f"{args.out}/experts", num_experts=2 if args.smoke_test else 10,
                                epochs=3 if args.smoke_test else 50, num_workers=args.num_workers))
    for method in ("mtt", "iadd"):
        sets[method] = match(MatchConfig(data=args.data, experts=f"{args.out}/experts", out=f"{args.out}/{method}",
                                         method=method, ipc=args.ipc, iterations=args.iterations,
                                         syn_steps=3 if args.smoke_test else 30,
                                         max_start_epoch=1 if args.smoke_test else 20, num_workers=args.num_workers))
    results = {}
    for name, distilled in sets.items():
        report = evaluate(EvalConfig(distilled=str(distilled.uri or distilled.path), val_data=args.val_data,
                                     out=f"{args.out}/eval-{name}", protocol="rded" if name == "rded" else "mtt",
                                     epochs=args.epochs, seeds=args.seeds))
        summary = report["sets"]["distilled"]
        results[name] = f"{summary['final_acc_mean']:.2f} ± {summary['final_acc_std']:.2f}"
    print(json.dumps(results, indent=2))
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="training ImageFolder (32 px classes), local or s3://…")
    parser.add_argument("--val-data", help="validation ImageFolder with the same classes")
    parser.add_argument("--observer", help="RDED observer spec (also the RDED students' teacher)")
    parser.add_argument("--out", required=True, help="one sub-folder per set and per evaluation")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=5000, help="MTT / IADD matching iterations")
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: each protocol's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--smoke-test", action="store_true", help="a tiny budget on the built-in sample, on CPU")
    return parser


if __name__ == "__main__":
    parsed = get_parser().parse_args()
    if not parsed.smoke_test and not (parsed.data and parsed.val_data and parsed.observer):
        get_parser().error("--data, --val-data and --observer are required (or --smoke-test)")
    main(parsed)
