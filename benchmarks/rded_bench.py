"""RDED synthesis benchmark: wall time, crops/s, peak memory, and the observer's compute bound.

    python benchmarks/rded_bench.py imagenette                     # raydd's defaults
    python benchmarks/rded_bench.py imagenette --precision fp32 --num-workers 1 --keep RUN_DIR_OF_FP32
    python benchmarks/rded_bench.py imagenette --precision bf16 --compare-to RUN_DIR_OF_FP32
    python benchmarks/rded_bench.py cifar10

imagenette: IPC 10, mipc 300, 5 crops, factor 2, input 224, EfficientNet-Lite0 restricted to the 10 classes.
cifar10: IPC 10, mipc 300, 5 crops, factor 1, input 32, CIFAR ResNet-20.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import pyarrow.parquet as pq
import torch
from _machine import RssSampler, machine, shared_dataset, shared_path

from raydd.models import load_observer
from raydd.models.observer_actors import forward_batch_size
from raydd.models.precision import autocast, autocast_dtype
from raydd.rded import RdedConfig, distill
from raydd.runtime import tune_allocator

JOBS = {
    "imagenette": dict(dataset="imagenette-224sq", observers=["efficientnet_lite0"], class_map="imagenet",
                       ipc=10, mipc=300, num_crops=5, factor=2, input_size=224),
    "cifar10": dict(dataset="cifar10-jpg", observers=["cifar_resnet20@{models}/cifar10-resnet20-akamaster.th"],
                    class_map=None, ipc=10, mipc=300, num_crops=5, factor=1, input_size=32),
}


@torch.inference_mode()
def raw_throughput(spec: str, *, batch: int, size: int, precision: str, channels_last: bool, threads: int,
                   seconds: float = 20.0) -> float:
    """Images/s of the observer's bare forward on random tensors (the compute bound's denominator)."""
    torch.set_num_threads(threads)
    observer = load_observer(spec)
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        observer = observer.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = autocast_dtype(precision, "cpu")
    with autocast("cpu", dtype):
        observer.logits(x)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            observer.logits(x)
            done += batch
    return done / (time.perf_counter() - started)


def selected_patches(run: str) -> set[tuple[str, tuple[int, ...]]]:
    manifest = pq.read_table(os.path.join(run, "manifest.parquet")).to_pylist()
    return {(name, tuple(box)) for row in manifest for name, box in zip(row["patch_sources"], row["patch_boxes"],
                                                                          strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="scoring precision (default: raydd's auto)")
    parser.add_argument("--num-workers", type=int, default=None, help="scoring actors (default: raydd's)")
    parser.add_argument("--threads-per-worker", type=int, default=None, help="default: raydd's")
    parser.add_argument("--decode", default="auto", choices=["auto", "tasks", "actor"], help="default: raydd's")
    parser.add_argument("--batch-size", type=int, default=None, help="crops per forward (default: raydd's)")
    parser.add_argument("--keep", default=None, help="keep the distilled set here (default: a temporary folder)")
    parser.add_argument("--compare-to", default=None, help="another run's output: report the selection overlap")
    parser.add_argument("--block-images", type=int, default=None, help="candidates per block (default: raydd's)")
    parser.add_argument("--raw-seconds", type=float, default=20.0)
    parser.add_argument("--refine-margin", type=int, default=None, help="bf16: fp32 window (default: raydd's; 0: off)")
    args = parser.parse_args()
    tune_allocator()

    job = dict(JOBS[args.job])
    data = os.path.join(shared_dataset(job.pop("dataset")), "train")
    job["observers"] = [s.format(models=shared_path("models")) for s in job["observers"]]
    tmp = tempfile.mkdtemp(prefix="raydd-bench-")
    out = args.keep or os.path.join(tmp, "out")
    config = RdedConfig(data=data, out=out, precision=args.precision, num_workers=args.num_workers,
                        threads_per_worker=args.threads_per_worker, decode=args.decode,
                        batch_size=args.batch_size, refine_margin=args.refine_margin,
                        **({"block_images": args.block_images} if args.block_images else {}), **job)
    started = time.perf_counter()
    with RssSampler() as rss:
        distilled = distill(config)
    wall = time.perf_counter() - started
    stats = distilled.stats
    if stats.get("resumed_images"):
        raise SystemExit(f"{out} resumed an earlier partial run: the timing would be meaningless; remove it first")
    crops = stats["crops_scored"]

    def batch_at(precision: str) -> int:
        """The forward batch raydd's CPU actors use at ``precision`` (the raw forward is timed at it)."""
        return config.batch_size or forward_batch_size(torch.device("cpu"), autocast_dtype(precision, "cpu"))

    precision = stats["precision"]  # what "auto" resolved to
    forward_batch = batch_at(precision)
    actors = config.num_workers or os.cpu_count() or 1
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // actors)
    raw = raw_throughput(config.observers[0], batch=forward_batch, size=config.input_size, precision=precision,
                         channels_last=config.channels_last, threads=os.cpu_count() or 1, seconds=args.raw_seconds)
    # bf16 runs rescore each class's cut-off window in fp32 (refine_margin): those crops count at fp32's rate.
    refined_crops = stats.get("refined_images", 0) * config.num_crops
    raw_fp32 = raw if not refined_crops else raw_throughput(
        config.observers[0], batch=batch_at("fp32"), size=config.input_size, precision="fp32",
        channels_last=config.channels_last, threads=os.cpu_count() or 1, seconds=args.raw_seconds)
    bound = crops / raw + refined_crops / raw_fp32
    result = {
        "benchmark": f"rded_{args.job}",
        "config": {"precision": args.precision, "resolved_precision": precision, "decode": stats["decode"],
                   "num_workers": actors, "forward_batch": forward_batch,
                   "threads_per_worker": threads, "block_images": config.block_images, "ipc": config.ipc,
                   "mipc": config.mipc, "num_crops": config.num_crops, "factor": config.factor,
                   "input_size": config.input_size,
                   "observers": config.observers},
        "wall_s": round(wall, 1),
        "stage_s": {k: round(v, 1) for k, v in stats["timings"].items()},
        "crops": crops,
        "assemble_label_images_per_s": round(stats["images"] / stats["timings"]["assemble_label_s"], 1),
        "crops_per_s_wall": round(crops / wall, 1),
        "raw_forward_img_per_s": round(raw, 1),
        "refined_crops_fp32": refined_crops,
        "raw_forward_fp32_img_per_s": round(raw_fp32, 1),
        "compute_bound_s": round(bound, 1),
        "wall_over_bound": round(wall / bound, 2),
        **rss.report(),
        "skipped_files": stats["skipped_files"],
        "machine": machine(),
    }
    if args.compare_to:
        mine, theirs = selected_patches(str(distilled.path)), selected_patches(args.compare_to)
        result["selection_overlap"] = round(len(mine & theirs) / max(1, len(theirs)), 4)
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
