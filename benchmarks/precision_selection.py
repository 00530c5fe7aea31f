"""How far each scoring precision moves RDED's selection from fp32's, on real data, in one process.

    python benchmarks/precision_selection.py imagenette --precisions bf16 tf32

Cuts every candidate's crops as the pipeline does (same seed, boxes and JPEG draft), scores them in fp32 and in
each precision, selects each class's best ``ipc · factor²`` images and their best crops, and prints the share of
fp32's patches each precision selects too. A CPU has no TF32: "tf32" here is fp32 arithmetic on inputs and weights
rounded to TF32's 10-bit mantissa (round to nearest even) before every convolution and linear layer, as tensor
cores round them; accumulation stays fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import torch
from _machine import machine, shared_dataset
from rded_bench import JOBS

from raydd._runtime import tune_allocator
from raydd.models import load_observer
from raydd.rded import RdedConfig
from raydd.rded.pipeline import _candidates, _plan
from raydd.rded.scoring import score_crops
from raydd.rded.selection import best_crops, partial_topk
from raydd.rded.tasks import cut_crops


def to_tf32(x: torch.Tensor) -> torch.Tensor:
    """fp32 rounded to TF32's 10 mantissa bits (nearest, ties to even), still stored as fp32."""
    bits = x.contiguous().view(torch.int32)
    rounded = (bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF
    return rounded.view(torch.float32)


def emulate_tf32(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.weight.data = to_tf32(module.weight.data)
            module.register_forward_pre_hook(lambda _, inputs: (to_tf32(inputs[0]), *inputs[1:]))


def selection(table: pa.Table, scores: np.ndarray, per_class: int) -> set[tuple[int, int]]:
    best, score = best_crops(scores)
    ranked = partial_topk(table.append_column("score", pa.array(score.astype(np.float32)))
                          .append_column("best_crop", pa.array(best)), per_class)
    return set(zip(ranked["image_id"].to_pylist(), ranked["best_crop"].to_pylist(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--precisions", nargs="+", default=["bf16", "tf32"], choices=["bf16", "tf32", "fp16"])
    parser.add_argument("--classes", type=int, default=None, help="only the first N classes")
    args = parser.parse_args()
    tune_allocator()
    job = dict(JOBS[args.job])
    data = os.path.join(shared_dataset(job.pop("dataset")), "train")
    config = RdedConfig(data=data, out="unused", **job)
    plan, index = _plan(config)
    candidates = _candidates(config, plan, index)
    if args.classes:
        candidates = candidates.filter(pa.compute.less(candidates["class_index"], args.classes))
    started = time.perf_counter()
    batch = {k: np.asarray(v.to_pylist(), dtype=object if k == "name" else None) for k, v in
             zip(candidates.column_names, candidates.columns, strict=True)}
    cut = cut_crops(batch, fs=plan.fs, root=plan.root, seed=config.seed, num_crops=config.num_crops,
                    crop_size=plan.crop_size, scale=(config.min_scale, config.max_scale), jpeg_draft=True)
    cut_s = time.perf_counter() - started
    ok = np.array([r == "" for r in cut["reason"]])
    crops = torch.from_numpy(cut["crops"][ok]).reshape(-1, plan.crop_size, plan.crop_size, 3).permute(0, 3, 1, 2)
    labels = torch.from_numpy(np.repeat(cut["class_index"][ok], config.num_crops).astype(np.int64))
    table = candidates.filter(pa.array(ok)).select(["image_id", "class_index"])

    def scores(precision: str) -> np.ndarray:
        observer = load_observer(config.observers[0]).restrict(plan.columns[0])
        if precision == "tf32":
            emulate_tf32(observer)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        out = score_crops([observer], crops, labels, input_size=plan.input_size, autocast_dtype=dtype,
                          channels_last=True, batch_size=32)
        return out.numpy().reshape(-1, config.num_crops)

    result = {"benchmark": f"precision_selection_{args.job}", "images": int(ok.sum()), "crops": len(crops),
              "cut_s": round(cut_s, 1), "per_class": config.per_class}
    t = time.perf_counter()
    exact = scores("fp32")
    result["fp32_s"] = round(time.perf_counter() - t, 1)
    reference = selection(table, exact, config.per_class)
    for precision in args.precisions:
        t = time.perf_counter()
        other = scores(precision)
        mine = selection(table, other, config.per_class)
        result[precision] = {"overlap_with_fp32": round(len(mine & reference) / len(reference), 4),
                             "score_s": round(time.perf_counter() - t, 1),
                             "max_abs_score_diff": float(np.nanmax(np.abs(other - exact))),
                             "same_best_crop": round(float((best_crops(other)[0] == best_crops(exact)[0]).mean()), 4)}
    result["machine"] = machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
