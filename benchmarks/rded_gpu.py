r"""RDED at ImageNet's class count on one GPU machine, data made in the same run.

    D=/tmp/in1k; J=$OUT/rded_gpu.json                     # each stage under its own timeout; J gathers them
    timeout 110 python benchmarks/rded_gpu.py data    --data $D --classes 1000 --per-class 64 --json $J
    timeout 45  python benchmarks/rded_gpu.py raw     --data $D --json $J
    timeout 120 python benchmarks/rded_gpu.py distill --data $D --json $J
    timeout 130 python benchmarks/rded_gpu.py actors  --data $D --json $J
    timeout 100 python benchmarks/rded_gpu.py overlap --data $D --json $J

(benchmarks/gpu_check.sh runs exactly these, after installing Ray's wheels.)

    python benchmarks/rded_gpu.py all --data /tmp/tiny --classes 4 --per-class 12 --ipc 2 --gpus-per-worker 0  # CPU

Stages:
  data     N classes (ImageNet wnid folders) × M JPEGs of natural sizes (short side 256-500, aspect 3:4-4:3):
           smooth colour fields with grain, quality 90, seeded; written by Ray tasks on every core.
  raw      the observer's bare forward at batch 256 on random tensors, bf16, tf32 and fp32: the bound.
  distill  IPC 10, factor 2, mipc = M, 5 crops, 224 px, raydd's defaults on GPU actors, from a cold start (distill
           starts Ray) to the finished folder: stage times, crops/s and their share of the bf16 raw forward, GPU
           utilisation and memory sampled every 0.5 s, peak resident memory of every process.
  actors   the same with 2 and 4 actors sharing the GPU (gpus_per_worker 0.5, 0.25).
  overlap  on the first 200 classes: fp32 with actor (GPU) decoding, and fp32 with CPU-task decoding (Pillow,
           JPEG draft), against the default run; patch overlap says what TF32 and what GPU decoding change.

The observer is torchvision's ResNet-18 with seeded random weights written by the script (the machine cannot
download; the speed is the trained model's), or ``--observer SPEC``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _images import natural_jpegs
from _machine import RssSampler, machine

from raydd.data.class_map import imagenet_wnids
from raydd.models import load_observer
from raydd.models.precision import autocast, set_fp32_math
from raydd.rded import RdedConfig, distill
from raydd.runtime import tune_allocator

STAGES = ("data", "raw", "distill", "actors", "overlap")


def _class_images(folder: str, seed: int, count: int) -> int:
    return len(natural_jpegs(folder, seed, count))


def make_data(root: str, classes: int, per_class: int) -> dict[str, Any]:
    import ray

    from raydd.runtime import init_ray

    init_ray()
    started = time.perf_counter()
    import _images
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(_images)  # Ray's workers need not find benchmarks/ on their path
    task = ray.remote(_class_images)
    wnids = imagenet_wnids()[:classes]
    done = sum(ray.get([task.remote(os.path.join(root, "train", w), c, per_class) for c, w in enumerate(wnids)]))
    wall = time.perf_counter() - started
    ray.shutdown()
    size = sum(f.stat().st_size for f in Path(root, "train").rglob("*.JPEG"))
    return {"images": done, "classes": classes, "wall_s": round(wall, 1), "images_per_s": round(done / wall),
            "mean_kib": round(size / done / 1024, 1)}


def observer_spec(args: argparse.Namespace) -> str:
    if args.observer:
        return args.observer
    path = Path(args.data, "resnet18-random.pth")
    if not path.exists():
        import torchvision

        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), path)
    return f"torchvision:resnet18@{path}"


@torch.inference_mode()
def raw_forward(spec: str, seconds: float = 6.0) -> dict[str, float]:
    """Images/s of the bare forward at batch 256, channels-last, on random tensors."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = 256 if device == "cuda" else 32
    observer = load_observer(spec, device=device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("tf32", None), ("fp32", None)):
        if device == "cuda":
            set_fp32_math(name)
        with autocast(device, dtype):
            for _ in range(3):
                observer.logits(x)
            if device == "cuda":
                torch.cuda.synchronize()
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                observer.logits(x)
                done += batch
            if device == "cuda":
                torch.cuda.synchronize()
        out[f"{name}_img_per_s"] = round(done / (time.perf_counter() - started))
    return out


class GpuSampler:
    """GPU utilisation (%) and memory used (GiB) every ``period`` s through NVML, when the machine has it."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML here (a CPU check): nothing to sample
            return
        while not self._stop.is_set():
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**30
            self.samples.append((round(time.perf_counter(), 2), util, round(used, 2)))
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, Any]:
        if not self.samples:
            return {"gpu_samples": 0}
        util = [u for _, u, _ in self.samples]
        return {"gpu_util_mean": round(float(np.mean(util)), 1), "gpu_util_p90": float(np.percentile(util, 90)),
                "gpu_mem_peak_gib": max(m for _, _, m in self.samples), "gpu_util_samples": util}


def run_distill(args: argparse.Namespace, name: str, raw: dict[str, float] | None, **overrides: Any
                ) -> dict[str, Any]:
    out = os.path.join(args.data, "runs", name)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(os.path.join(args.data, "runs", f".{name}.partial"), ignore_errors=True)
    values = {"data": os.path.join(args.data, "train"), "out": out, "observers": [observer_spec(args)],
              "class_map": "imagenet", "ipc": args.ipc, "factor": 2, "mipc": args.per_class, "num_crops": 5,
              "input_size": 224, "gpus_per_worker": args.gpus_per_worker, **overrides}
    started = time.perf_counter()
    with RssSampler() as rss, GpuSampler() as gpu:
        distilled = distill(RdedConfig(**values))
    wall = time.perf_counter() - started
    stats = distilled.stats
    result = {"run": name, "wall_s": round(wall, 1), "stage_s": {k: round(v, 1) for k, v in stats["timings"].items()},
              "precision": stats["precision"], "decode": stats["decode"], "crops": stats["crops_scored"],
              "crops_per_s": round(stats["crops_per_s"] or 0), "images": stats["images"],
              "assemble_label_images_per_s": round(stats["images"] / stats["timings"]["assemble_label_s"], 1),
              "skipped_files": stats["skipped_files"], **rss.report(), **gpu.report()}
    if raw:
        result["share_of_bf16_raw_forward"] = round(result["crops_per_s"] / raw["bf16_img_per_s"], 3)
    return result


def selected(run: str) -> set[tuple[str, tuple[int, ...]]]:
    import pyarrow.parquet as pq

    rows = pq.read_table(os.path.join(run, "manifest.parquet")).to_pylist()
    return {(n, tuple(b)) for r in rows for n, b in zip(r["patch_sources"], r["patch_boxes"], strict=True)}


def overlap(args: argparse.Namespace) -> dict[str, Any]:
    classes = sorted(os.listdir(os.path.join(args.data, "train")))[:200]
    runs = {"default": {}, "fp32_actor": {"precision": "fp32", "decode": "actor"},
            "fp32_tasks": {"precision": "fp32", "decode": "tasks"}}
    result: dict[str, Any] = {"classes": len(classes)}
    for name, overrides in runs.items():
        result[name] = run_distill(args, f"overlap-{name}", None, classes=classes, **overrides)
        result[name].pop("gpu_util_samples", None)
    picks = {name: selected(os.path.join(args.data, "runs", f"overlap-{name}")) for name in runs}
    for a, b in (("default", "fp32_actor"), ("fp32_actor", "fp32_tasks"), ("default", "fp32_tasks")):
        result[f"overlap_{a}_vs_{b}"] = round(len(picks[a] & picks[b]) / len(picks[b]), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=(*STAGES, "all"))
    parser.add_argument("--data", required=True, help="folder for the generated tree and the runs")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=64, help="JPEGs per class, and mipc")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--gpus-per-worker", type=float, default=1.0, help="0: CPU actors (a check of the script)")
    parser.add_argument("--observer", default=None, help="observer spec (default: ResNet-18, seeded random weights)")
    parser.add_argument("--json", default=None, help="also write the result here (stages merge into one file)")
    args = parser.parse_args()
    tune_allocator()
    result: dict[str, Any] = {"benchmark": "rded_gpu", "machine": machine()}
    if args.json and Path(args.json).exists():
        result = {**json.loads(Path(args.json).read_text()), **result}
    stages = STAGES if args.stage == "all" else (args.stage,)
    raw_file = Path(args.data, "raw.json")
    for stage in stages:
        if stage == "data":
            result["data"] = make_data(args.data, args.classes, args.per_class)
        elif stage == "raw":
            result["raw"] = raw_forward(observer_spec(args))
            raw_file.write_text(json.dumps(result["raw"]))
        elif stage == "distill":
            raw = json.loads(raw_file.read_text()) if raw_file.exists() else None
            result["distill"] = run_distill(args, "default", raw)
        elif stage == "actors":
            raw = json.loads(raw_file.read_text()) if raw_file.exists() else None
            result["actors"] = []
            for n in (2, 4):  # actors sharing the GPU (on CPU: that many CPU actors)
                share = {"gpus_per_worker": 1 / n} if args.gpus_per_worker else {"num_workers": n}
                result["actors"].append(run_distill(args, f"actors-{n}", raw, **share))
        elif stage == "overlap":
            result["overlap"] = overlap(args)
        print(json.dumps({stage: result[stage]}, indent=1), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
