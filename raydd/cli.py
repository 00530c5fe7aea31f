"""``raydd`` command line: one subcommand per job, its flags derived from the job's config dataclass.

Precedence: dataclass defaults < ``--config FILE.yaml`` < flags. The CLI only parses and calls the API.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from raydd.config import add_config_arguments, config_from_args

__all__ = ["get_parser", "main"]


def _run_train(args: argparse.Namespace) -> Any:
    from raydd.train import TrainConfig, fit

    result = fit(config_from_args(TrainConfig, args))
    return {"checkpoint": result.checkpoint, "metrics": result.metrics}


def _describe(distilled: Any) -> dict[str, Any]:
    stats = distilled.stats
    return {"out": str(distilled.path), "images": len(distilled), "classes": len(distilled.classes),
            "montage": str(distilled.path / "montage.png"), "skipped_files": stats.get("skipped_files"),
            "seconds": round(stats["timings"]["total_s"], 1)}


def _run_rded(args: argparse.Namespace) -> Any:
    from raydd.rded import RdedConfig, distill

    return _describe(distill(config_from_args(RdedConfig, args)))


def _run_demo(args: argparse.Namespace) -> Any:
    from raydd.demo import DemoConfig, run_demo

    return _describe(run_demo(config_from_args(DemoConfig, args)))


def _run_evaluate(args: argparse.Namespace) -> Any:
    from raydd.evaluate import EvalConfig, evaluate

    report = evaluate(config_from_args(EvalConfig, args))
    return {"out": report["out"], **{name: f"{s['final_acc_mean']:.2f} ± {s['final_acc_std']:.2f} % "
                                     f"(seeds {s['seeds']})" for name, s in report["sets"].items()}}


def _run_experts(args: argparse.Namespace) -> Any:
    from raydd.trajectories import ExpertsConfig, train_experts

    files = train_experts(config_from_args(ExpertsConfig, args))
    return {"experts": len(files), "folder": str(files[0].parent) if files else None}


def _run_match(args: argparse.Namespace) -> Any:
    from raydd.matching import MatchConfig, match

    distilled = match(config_from_args(MatchConfig, args))
    return {"out": str(distilled.path), "images": len(distilled), "learned_lr": distilled.info.learned_lr,
            "montage": str(distilled.path / "montage.png")}


def _run_export(args: argparse.Namespace) -> Any:
    from raydd.io import DistilledSet

    return {"exported": str(DistilledSet(args.distilled).export_ddranking(args.to))}


def _run_models(args: argparse.Namespace) -> Any:
    from raydd.models import get_entry, list_models

    return {name: {"input_size": get_entry(name).input_size, "pretrained": get_entry(name).pretrained or None}
            for name in list_models()}


def _commands() -> dict[str, tuple[str, type | None, Callable[[argparse.Namespace], Any]]]:
    from raydd.demo import DemoConfig
    from raydd.evaluate import EvalConfig
    from raydd.matching import MatchConfig
    from raydd.rded import RdedConfig
    from raydd.train import TrainConfig
    from raydd.trajectories import ExpertsConfig

    return {
        "demo": ("distil the built-in CIFAR-10 sample with RDED (a couple of minutes on a laptop)", DemoConfig,
                 _run_demo),
        "rded": ("distil an image dataset with RDED on Ray Data", RdedConfig, _run_rded),
        "evaluate": ("train students on a distilled set (and random baselines) and test them, seeds in parallel",
                     EvalConfig, _run_evaluate),
        "experts": ("train expert trajectories (MTT's buffer) on Ray Train workers", ExpertsConfig, _run_experts),
        "match": ("distil by trajectory matching: IADD (importance weights) or MTT", MatchConfig, _run_match),
        "export": ("export a distilled set to DD-Ranking's input (ImageFolder + soft_labels.pt)", None,
                   _run_export),
        "train": ("train a classifier (an observer) on an image folder with Ray Train", TrainConfig, _run_train),
        "models": ("list the model zoo", None, _run_models),
    }


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raydd", description="Dataset distillation (RDED, IADD/MTT) on Ray.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final result")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, cls, _) in _commands().items():
        command = sub.add_parser(name, help=text, description=text)
        if cls is not None:
            add_config_arguments(command, cls)
        if name == "export":
            command.add_argument("distilled", help="a distilled set folder (raydd's output)")
            command.add_argument("--to", required=True, help="new folder for the export (must not exist)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from raydd.runtime import RunFailedError, tune_allocator

    tune_allocator()
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        result = _commands()[args.command][2](args)
    except (ValueError, OSError, RunFailedError) as err:  # bad input, unreachable storage, a run to resume
        print(f"raydd {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
