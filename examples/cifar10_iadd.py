r"""IADD on CIFAR-10 through the raydd API: expert trajectories → importance-weighted matching → evaluation.

On a cluster (experts and matching on Ray Train workers, students as Ray Tune trials; paths local, on
shared storage, or s3://…)::

    ray job submit --working-dir . -- python examples/cifar10_iadd.py \
        --data s3://bucket/cifar10/train --val-data s3://bucket/cifar10/test --out s3://bucket/iadd-ipc10 \
        --ipc 10 --num-workers 4 --gpus-per-worker 1

    python examples/cifar10_iadd.py --smoke-test --out /tmp/iadd-smoke    # CPU, a minute: the built-in sample

The defaults are the published CIFAR-10 IPC 10 settings (100 experts × 50 epochs, ZCA whitening, CIFAR-10's
own normalisation, 5000 iterations of 30 student steps); rerunning the same command skips finished experts
and resumes matching from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from raydd import ExpertsConfig, MatchConfig, match, train_experts
from raydd.config import add_config_arguments, config_from_args, option
from raydd.demo import sample_path
from raydd.evaluate import EvalConfig, evaluate
from raydd.scaling import Restartable, scaling_of

SMOKE = {"num_experts": 2, "expert_epochs": 3, "iterations": 4, "syn_steps": 3, "max_start_epoch": 1,
         "eval_epochs": 4, "seeds": [0, 1]}


@dataclass
class IaddExample(Restartable):
    """The chain's settings; its workers (``--num-workers`` …) train the experts and run the matching, and each
    student trial of the evaluation takes ``--cpus-per-worker`` / ``--gpus-per-worker``."""

    out: str = option(help="folder for experts/, the distilled set and eval/")
    data: str | None = option(None, help="CIFAR-10 train ImageFolder, local or s3://…")
    val_data: str | None = option(None, help="CIFAR-10 test ImageFolder")
    method: str = option("iadd", help="iadd or mtt")
    ipc: int = option(10, help="synthetic images per class")
    num_experts: int | None = option(None, help="expert trajectories (default: the published setting, as in "
                                     "raydd experts)")
    expert_epochs: int | None = option(None, help="epochs per expert (default: the published setting)")
    iterations: int | None = option(None, help="matching iterations (default: the published setting, as in "
                                    "raydd match)")
    syn_steps: int | None = option(None, help="student steps per iteration (default: the published setting)")
    max_start_epoch: int | None = option(None, help="start epochs are drawn below this (default: the published "
                                         "setting)")
    zca: bool | None = option(None, help="ZCA-whiten experts, matching and evaluation (default: at IPC 1 and 10, "
                              "MTT's published CIFAR-10 setting; off at 50)")
    eval_epochs: int | None = option(None, help="epochs of each evaluation student (default: MTT's protocol)")
    seeds: list[int] = option([0, 1, 2, 3, 4], help="evaluation seeds", flags=("--seed",))
    smoke_test: bool = option(False, help="a tiny budget on the built-in sample, on CPU")


def _given(**values: Any) -> dict[str, Any]:
    """The settings the user gave; the others keep the job config's own (published) defaults."""
    return {k: v for k, v in values.items() if v is not None}


def main(args: IaddExample) -> dict:
    scaling = scaling_of(args)
    trials = {**scaling, "num_workers": None}  # as many student trials at once as the resources allow
    zca = args.zca if args.zca is not None else args.ipc <= 10
    experts = train_experts(ExpertsConfig(data=args.data, out=f"{args.out}/experts", zca=zca, **scaling,
                                          **_given(num_experts=args.num_experts, epochs=args.expert_epochs)))
    distilled = match(MatchConfig(data=args.data, experts=f"{args.out}/experts", out=f"{args.out}/{args.method}",
                                  method=args.method, ipc=args.ipc, **scaling,
                                  **_given(iterations=args.iterations, syn_steps=args.syn_steps,
                                           max_start_epoch=args.max_start_epoch)))
    report = evaluate(EvalConfig(distilled=distilled.uri or str(distilled.path), val_data=args.val_data,
                                 out=f"{args.out}/eval", protocol="mtt", epochs=args.eval_epochs, seeds=args.seeds,
                                 baseline="random", real_data=args.data, **trials))
    summary = {"experts": len(experts), "distilled": str(distilled.uri or distilled.path),
               "learned_lr": distilled.stats["learned_lr"],
               **{name: f"{s['final_acc_mean']:.2f} ± {s['final_acc_std']:.2f}" for name, s in report["sets"].items()}}
    print(json.dumps(summary, indent=2))
    return summary


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, IaddExample)
    return parser


def parse(argv: list[str] | None = None) -> IaddExample:
    """The example's settings from its flags; ``--smoke-test`` sets the tiny budget and the built-in sample."""
    parser = get_parser()
    flags = parser.parse_args(argv)
    smoke = {"data": sample_path("cifar10", "train"), "val_data": sample_path("cifar10", "val"), **SMOKE}
    args = config_from_args(IaddExample, flags, defaults=smoke if flags.smoke_test else None)
    if not (args.data and args.val_data):
        parser.error("--data and --val-data are required (or --smoke-test)")
    return args


if __name__ == "__main__":
    main(parse())
