r"""RDED on ImageNet-1K (or any ImageNet subset) through the raydd API.

The same file runs on a laptop against a small local folder and unchanged on a cluster::

    ray job submit --working-dir . -- python examples/imagenet_rded.py \
        --data s3://bucket/imagenet/train --out /mnt/shared/rded-in1k-ipc10 --num-gpus-per-actor 1

    python examples/imagenet_rded.py --smoke-test      # CPU, seconds: the built-in sample

Every option of ``raydd rded`` is a flag here, with the same name; this script's own defaults are ImageNet's:
``--class-map imagenet --observer torchvision:resnet18 --input-size 224``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from raydd.config import add_config_arguments, config_from_args
from raydd.demo import sample_path
from raydd.rded import RdedConfig, distill

IMAGENET_DEFAULTS = {"class_map": "imagenet", "observers": ["torchvision:resnet18"], "input_size": 224}


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke_test:
        config = RdedConfig(data=sample_path("cifar10", "train"), out=args.out or "imagenet-rded-smoke",
                            observers=[f"cifar_resnet20@{sample_path('cifar10_resnet20.th')}"], ipc=1, factor=2,
                            mipc=8, input_size=32)
    else:
        config = config_from_args(RdedConfig, args, defaults=IMAGENET_DEFAULTS)
    distilled = distill(config)
    summary = {"out": str(distilled.path), "images": len(distilled), "stats": distilled.stats}
    print(json.dumps(summary, indent=2))
    return summary


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, RdedConfig)
    parser.add_argument("--smoke-test", action="store_true", help="run on the built-in sample, on CPU")
    return parser


if __name__ == "__main__":
    parser = get_parser()
    arguments = parser.parse_args()
    try:
        main(arguments)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        parser.error(str(err))
