"""How large the fp32 refinement window must be: selection overlap with fp32 against the margin, offline.

    python benchmarks/refine_margin.py FP32_RUN BF16_RUN --per-class 40

FP32_RUN and BF16_RUN are two `rded_bench.py --keep` outputs of the same job, the second scored in bf16
without refinement (`--refine-margin 0`). For each margin the bf16 scores of each class's best
``per_class + margin`` images are replaced by their fp32 scores (what raydd's refinement computes; margin 0
here rescores just the selected images, where raydd's ``--refine-margin 0`` turns refinement off) and the
patches selected from that table are compared with fp32's own selection.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _machine import machine

from raydd.rded.selection import partial_topk


def selected(scores: pa.Table, per_class: int) -> set[tuple[str, tuple[int, ...]]]:
    top = partial_topk(scores, per_class)
    boxes = np.stack(top["boxes"].to_numpy(zero_copy_only=False)).reshape(top.num_rows, -1, 3)
    best = top["best_crop"].to_numpy()
    return {(name, tuple(boxes[i, best[i]])) for i, name in enumerate(top["name"].to_pylist())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32_run")
    parser.add_argument("bf16_run")
    parser.add_argument("--per-class", type=int, required=True, help="ipc · factor²")
    parser.add_argument("--margins", type=int, nargs="+", default=[0, 2, 4, 6, 7, 8, 12, 16])
    args = parser.parse_args()
    columns = ["image_id", "class_index", "name", "boxes", "best_crop", "score"]
    fp32 = pq.read_table(os.path.join(args.fp32_run, "scores.parquet"), columns=columns).sort_by("image_id")
    bf16 = pq.read_table(os.path.join(args.bf16_run, "scores.parquet"), columns=columns).sort_by("image_id")
    if fp32["image_id"] != bf16["image_id"]:
        raise SystemExit("the two runs scored different candidates")
    reference = selected(fp32, args.per_class)
    rows = [{"margin": None, "rescored_images": 0,
             "overlap": round(len(selected(bf16, args.per_class) & reference) / len(reference), 4)}]
    for margin in args.margins:
        window = pc.is_in(bf16["image_id"], value_set=partial_topk(bf16, args.per_class + margin)["image_id"])
        mixed = bf16
        for name in ("best_crop", "score"):  # names and boxes are the same in both: same seed
            mixed = mixed.set_column(mixed.schema.get_field_index(name), name,
                                     pc.if_else(window, fp32[name], bf16[name]))
        rows.append({"margin": margin, "rescored_images": int(pc.sum(window).as_py()),
                     "overlap": round(len(selected(mixed, args.per_class) & reference) / len(reference), 4)})
    print(json.dumps({"benchmark": "refine_margin", "per_class": args.per_class, "rows": rows,
                      "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
