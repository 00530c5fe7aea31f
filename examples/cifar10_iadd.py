r"""IADD on CIFAR-10 through the raydd API: expert trajectories → importance-weighted matching → evaluation.

On a cluster (experts and matching on Ray Train workers, students as Ray Tune trials; paths local, on
shared storage, or s3://…)::

    ray job submit --working-dir . -- python examples/cifar10_iadd.py \
        --data s3://bucket/cifar10/train --val-data s3://bucket/cifar10/test --out s3://bucket/iadd-ipc10 \
        --ipc 10 --num-workers 4 --use-gpu

    python examples/cifar10_iadd.py --smoke-test --out /tmp/iadd-smoke    # CPU, a minute: the built-in sample

The defaults are the published CIFAR-10 IPC 10 settings (100 experts × 50 epochs, 5000 iterations of 30
student steps); rerunning the same command skips finished experts and resumes matching from its checkpoint.
"""

from __future__ import annotations

import argparse
import json

from raydd import ExpertsConfig, MatchConfig, match, train_experts
from raydd.demo import sample_path
from raydd.evaluate import EvalConfig, evaluate


def main(args: argparse.Namespace) -> dict:
    if args.smoke_test:
        args.data, args.val_data = sample_path("cifar10", "train"), sample_path("cifar10", "val")
        args.num_experts, args.expert_epochs, args.iterations, args.syn_steps = 2, 3, 4, 3
        args.max_start_epoch, args.eval_epochs, args.seeds = 1, 4, [0, 1]
    experts = train_experts(ExpertsConfig(data=args.data, out=f"{args.out}/experts", num_experts=args.num_experts,
                                          epochs=args.expert_epochs, num_workers=args.num_workers,
                                          use_gpu=args.use_gpu))
    distilled = match(MatchConfig(data=args.data, experts=f"{args.out}/experts", out=f"{args.out}/{args.method}",
                                  method=args.method, ipc=args.ipc, iterations=args.iterations,
                                  syn_steps=args.syn_steps, max_start_epoch=args.max_start_epoch,
                                  num_workers=args.num_workers, use_gpu=args.use_gpu))
    report = evaluate(EvalConfig(distilled=distilled.uri or str(distilled.path), val_data=args.val_data,
                                 out=f"{args.out}/eval", protocol="mtt", epochs=args.eval_epochs, seeds=args.seeds,
                                 baseline="random", real_data=args.data, gpus_per_trial=1.0 if args.use_gpu else 0.0))
    summary = {"experts": len(experts), "distilled": str(distilled.uri or distilled.path),
               "learned_lr": distilled.stats["learned_lr"],
               **{name: f"{s['final_acc_mean']:.2f} ± {s['final_acc_std']:.2f}" for name, s in report["sets"].items()}}
    print(json.dumps(summary, indent=2))
    return summary


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="CIFAR-10 train ImageFolder, local or s3://…")
    parser.add_argument("--val-data", help="CIFAR-10 test ImageFolder")
    parser.add_argument("--out", required=True, help="folder for experts/, the distilled set and eval/")
    parser.add_argument("--method", default="iadd", choices=["iadd", "mtt"])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--num-experts", type=int, default=100)
    parser.add_argument("--expert-epochs", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--syn-steps", type=int, default=30)
    parser.add_argument("--max-start-epoch", type=int, default=20)
    parser.add_argument("--eval-epochs", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers for experts and matching")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker and per student trial")
    parser.add_argument("--smoke-test", action="store_true", help="a tiny budget on the built-in sample, on CPU")
    return parser


if __name__ == "__main__":
    parsed = get_parser().parse_args()
    if not parsed.smoke_test and not (parsed.data and parsed.val_data):
        get_parser().error("--data and --val-data are required (or --smoke-test)")
    main(parsed)
