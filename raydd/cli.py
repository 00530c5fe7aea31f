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


def _run_models(args: argparse.Namespace) -> Any:
    from raydd.models import get_entry, list_models

    return {name: {"input_size": get_entry(name).input_size, "pretrained": get_entry(name).pretrained or None}
            for name in list_models()}


def _commands() -> dict[str, tuple[str, type | None, Callable[[argparse.Namespace], Any]]]:
    from raydd.train import TrainConfig

    return {
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from raydd._runtime import tune_allocator

    tune_allocator()
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        result = _commands()[args.command][2](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"raydd {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
