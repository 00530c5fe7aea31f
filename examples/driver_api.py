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
from dataclasses import dataclass

from raydd import ExpertsConfig, MatchConfig, RdedConfig, distill, match, train_experts
from raydd.config import add_config_arguments, config_from_args, option
from raydd.demo import sample_path
from raydd.evaluate import EvalConfig, evaluate
from raydd.scaling import Restartable, scaling_of


@dataclass
class DriverExample(Restartable):
    """The comparison's settings; its workers (``--num-workers`` …) train the experts and run the matching."""

    out: str = option(help="one sub-folder per set and per evaluation")
    data: str | None = option(None, help="training ImageFolder (32 px classes), local or s3://…")
    val_data: str | None = option(None, help="validation ImageFolder with the same classes")
    observer: str | None = option(None, help="RDED observer spec (also the RDED students' teacher)")
    ipc: int = option(10, help="images per class of every set")
    iterations: int = option(5000, help="MTT / IADD matching iterations")
    epochs: int | None = option(None, help="student epochs (default: each protocol's)")
    seeds: list[int] = option([0, 1, 2], help="evaluation seeds", flags=("--seed",))
    smoke_test: bool = option(False, help="a tiny budget on the built-in sample, on CPU")


def main(args: DriverExample) -> dict[str, str]:
    smoke = args.smoke_test
    training = scaling_of(args)
    sets = {"rded": distill(RdedConfig(data=args.data, observers=[args.observer], out=f"{args.out}/rded",
                                       ipc=args.ipc, factor=1, input_size=32, mipc=40 if smoke else 300,
                                       address=args.address))}
    train_experts(ExpertsConfig(data=args.data, out=f"{args.out}/experts", num_experts=2 if smoke else 10,
                                epochs=3 if smoke else 50, **training))
    for method in ("mtt", "iadd"):
        sets[method] = match(MatchConfig(data=args.data, experts=f"{args.out}/experts", out=f"{args.out}/{method}",
                                         method=method, ipc=args.ipc, iterations=args.iterations,
                                         syn_steps=3 if smoke else 30, max_start_epoch=1 if smoke else 20,
                                         **training))
    results = {}
    for name, distilled in sets.items():
        report = evaluate(EvalConfig(distilled=str(distilled.uri or distilled.path), val_data=args.val_data,
                                     out=f"{args.out}/eval-{name}", protocol="rded" if name == "rded" else "mtt",
                                     epochs=args.epochs, seeds=args.seeds, address=args.address))
        summary = report["sets"]["distilled"]
        results[name] = f"{summary['final_acc_mean']:.2f} ± {summary['final_acc_std']:.2f}"
    print(json.dumps(results, indent=2))
    return results


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DriverExample)
    return parser


def parse(argv: list[str] | None = None) -> DriverExample:
    """The example's settings from its flags; ``--smoke-test`` sets the tiny budget and the built-in sample."""
    parser = get_parser()
    flags = parser.parse_args(argv)
    smoke = {"data": sample_path("cifar10", "train"), "val_data": sample_path("cifar10", "val"),
             "observer": f"cifar_resnet20@{sample_path('cifar10_resnet20.th')}", "ipc": 1, "iterations": 3,
             "epochs": 3, "seeds": [0]}
    args = config_from_args(DriverExample, flags, defaults=smoke if flags.smoke_test else None)
    if not (args.data and args.val_data and args.observer):
        parser.error("--data, --val-data and --observer are required (or --smoke-test)")
    return args


if __name__ == "__main__":
    main(parse())
