"""How far each scoring precision moves RDED's selection from fp32's, on real data, in one process.

    python benchmarks/precision_selection.py imagenette --precisions bf16 tf32

Cuts every candidate's crops as the pipeline does (same seed, boxes and JPEG draft), scores them in fp32 and in
each precision, selects each class's best ``ipc · factor²`` images and their best crops, and prints the share of
fp32's patches each precision selects too, alone and after each way of rescoring some images in fp32:
``margin`` M rescores every crop of each class's best ``ipc · factor² + M`` images (raydd's bf16 refinement);
``gap`` G rescores the images in doubt (``raydd.rded.selection.in_doubt``), those whose score is within G
(relative) of their class's cut-off or whose best crop is within G of their next-best crop (raydd's TF32
refinement). Each line says how many images it rescores. ``--from-saved`` reads the scores of an earlier run.

A CPU has no TF32: "tf32" here is fp32 arithmetic on inputs and weights
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

from raydd.models import load_observer
from raydd.rded import RdedConfig
from raydd.rded.plan import draw_candidates, plan_distillation
from raydd.rded.scoring import score_crops
from raydd.rded.selection import best_crops, in_doubt, partial_topk
from raydd.rded.tasks import cut_crops
from raydd.runtime import tune_allocator


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


def in_window(table: pa.Table, scores: np.ndarray, per_class: int, margin: int) -> np.ndarray:
    """Rows among their class's best ``per_class + margin`` (raydd's refinement window)."""
    _, score = best_crops(scores)
    ranked = partial_topk(table.append_column("score", pa.array(score.astype(np.float32))), per_class + margin)
    return np.isin(table["image_id"].to_numpy(), ranked["image_id"].to_numpy())


def selection(table: pa.Table, scores: np.ndarray, per_class: int) -> set[tuple[int, int]]:
    best, score = best_crops(scores)
    ranked = partial_topk(table.append_column("score", pa.array(score.astype(np.float32)))
                          .append_column("best_crop", pa.array(best)), per_class)
    return set(zip(ranked["image_id"].to_pylist(), ranked["best_crop"].to_pylist(), strict=True))


def score_everything(args: argparse.Namespace, config: RdedConfig) -> tuple[dict[str, np.ndarray], dict]:
    """Every crop's scores in fp32 and in each precision, as ``[images, crops]`` arrays, with the timings."""
    plan, index = plan_distillation(config)
    candidates = draw_candidates(config, plan, index)
    if args.classes:
        candidates = candidates.filter(pa.compute.less(candidates["class_index"], args.classes))
    started = time.perf_counter()
    batch = {k: np.asarray(v.to_pylist(), dtype=object if k == "name" else None) for k, v in
             zip(candidates.column_names, candidates.columns, strict=True)}
    cut = cut_crops(batch, fs=plan.fs, root=plan.root, seed=config.seed, num_crops=config.num_crops,
                    crop_size=plan.crop_size, scale=(config.min_scale, config.max_scale), jpeg_draft=True,
                    reads_in_flight=config.reads_in_flight)
    timings = {"cut_s": round(time.perf_counter() - started, 1)}
    ok = np.array([r == "" for r in cut["reason"]])
    crops = torch.from_numpy(cut["crops"][ok]).reshape(-1, plan.crop_size, plan.crop_size, 3).permute(0, 3, 1, 2)
    labels = torch.from_numpy(np.repeat(cut["class_index"][ok], config.num_crops).astype(np.int64))
    scores = {"class_index": cut["class_index"][ok]}
    for precision in ("fp32", *args.precisions):
        t = time.perf_counter()
        observer = load_observer(config.observers[0]).restrict(plan.columns[0])
        if precision == "tf32":
            emulate_tf32(observer)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        out = score_crops([observer], crops, labels, input_size=plan.input_size, autocast_dtype=dtype,
                          channels_last=True, batch_size=32)
        scores[precision] = out.numpy().reshape(-1, config.num_crops)
        timings[f"{precision}_s"] = round(time.perf_counter() - t, 1)
    return scores, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--precisions", nargs="+", default=["bf16", "tf32"], choices=["bf16", "tf32", "fp16"])
    parser.add_argument("--classes", type=int, default=None, help="only the first N classes")
    parser.add_argument("--margins", type=int, nargs="*", default=[0, 2, 4, 7, 12])
    parser.add_argument("--gaps", type=float, nargs="*", default=[0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--save", default=None, help="keep every crop's scores here (.npz)")
    parser.add_argument("--from-saved", default=None, help="analyse the scores an earlier --save kept")
    args = parser.parse_args()
    tune_allocator()
    job = dict(JOBS[args.job])
    data = os.path.join(shared_dataset(job.pop("dataset")), "train")
    config = RdedConfig(data=data, out="unused", **job)
    if args.from_saved:
        scores, timings = dict(np.load(args.from_saved)), {"from_saved": args.from_saved}
    else:
        scores, timings = score_everything(args, config)
        if args.save:
            np.savez(args.save, **scores)
    classes, exact = scores["class_index"], scores["fp32"]
    table = pa.table({"image_id": np.arange(len(classes)), "class_index": classes.astype(np.int32)})
    reference = selection(table, exact, config.per_class)
    result = {"benchmark": f"precision_selection_{args.job}", "images": len(classes), "per_class": config.per_class,
              **timings}
    for precision in args.precisions:
        other = scores[precision]
        mine = selection(table, other, config.per_class)
        result[precision] = {"overlap_with_fp32": round(len(mine & reference) / len(reference), 4),
                             "max_abs_score_diff": float(np.nanmax(np.abs(other - exact))),
                             "same_best_crop": round(float((best_crops(other)[0] == best_crops(exact)[0]).mean()), 4)}
        windows = {f"margin {m}": in_window(table, other, config.per_class, m) for m in args.margins}
        windows |= {f"gap {g}": in_doubt(classes, other, config.per_class, g) for g in args.gaps}
        for name, rescored in windows.items():
            picked = selection(table, np.where(rescored[:, None], exact, other), config.per_class)
            result[precision][name] = {"rescored_images": int(rescored.sum()),
                                       "overlap_with_fp32": round(len(picked & reference) / len(reference), 4)}
    result["machine"] = machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
