r"""RDED on ImageNet-1K (or any ImageNet subset) through the raydd API.

The same file runs on a laptop against a small local folder and unchanged on a cluster::

    ray job submit --working-dir . -- python examples/imagenet_rded.py \
        --data s3://bucket/imagenet/train --out /mnt/shared/rded-in1k-ipc10 \
        --observer torchvision:resnet18 --num-actors 8 --gpus-per-actor 1

    python examples/imagenet_rded.py --smoke-test      # CPU, seconds: the built-in sample
"""

from __future__ import annotations

import argparse
import json

from raydd.demo import sample_path
from raydd.rded import RdedConfig, distill


def main(args: argparse.Namespace) -> None:
    if args.smoke_test:
        config = RdedConfig(data=sample_path("cifar10", "train"), out=args.out or "imagenet-rded-smoke",
                            observers=[f"cifar_resnet20@{sample_path('cifar10_resnet20.th')}"], ipc=1, factor=2,
                            mipc=8, input_size=32)
    else:
        config = RdedConfig(data=args.data, out=args.out, observers=args.observer or ["torchvision:resnet18"],
                            class_map=args.class_map, ipc=args.ipc, factor=args.factor, mipc=args.mipc,
                            num_crops=args.num_crops, input_size=args.input_size, seed=args.seed,
                            num_actors=args.num_actors, num_gpus_per_actor=args.gpus_per_actor,
                            batch_size=args.batch_size)
    distilled = distill(config)
    print(json.dumps({"out": str(distilled.path), "images": len(distilled), "stats": distilled.stats}, indent=2))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="ImageNet train folder (wnid sub-folders), local or s3://…")
    parser.add_argument("--out", help="output folder (shared storage on a multi-node cluster)")
    parser.add_argument("--observer", action="append", help="observer spec; repeat for an ensemble")
    parser.add_argument("--class-map", default="imagenet", help="'imagenet' maps wnid folders to ImageNet-1K")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--mipc", type=int, default=300)
    parser.add_argument("--num-crops", type=int, default=5)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-actors", type=int, default=1)
    parser.add_argument("--gpus-per-actor", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=256, help="crops per observer forward")
    parser.add_argument("--smoke-test", action="store_true", help="run on the built-in sample, on CPU")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    if not args.smoke_test and not (args.data and args.out):
        get_parser().error("--data and --out are required (or --smoke-test)")
    main(args)
