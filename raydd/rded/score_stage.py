"""RDED's steps 2–3 through Ray Data: crops cut by CPU tasks (or decoded on the actors), scored by the observer
actors, written to Parquet parts as they arrive (a killed run resumes without rescoring what finished); the
rescoring in fp32 of what a lower precision leaves in doubt; scores reused from an earlier run."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raydd.io.atomic import write_parquet
from raydd.io.distilled import DistilledSet
from raydd.io.storage import is_remote
from raydd.io.writer import fixed_size_list
from raydd.rded import tasks
from raydd.rded.actors import ScoreCrops
from raydd.rded.config import RdedConfig
from raydd.rded.plan import DistillPlan, actor_args, is_parquet
from raydd.rded.selection import in_doubt, partial_topk
from raydd.runtime import init_ray
from raydd.scaling import table_dataset

__all__ = ["load_scores", "refine_scores", "remove_parts", "score_candidates"]

log = logging.getLogger("raydd.rded")


def score_candidates(config: RdedConfig, plan: DistillPlan, candidates: pa.Table, parts_dir: Path,
                     stats: dict[str, Any], *, precision: str, block_images: int) -> list[pa.Table]:
    """Steps 2–3 through Ray Data; returns the score parts (earlier runs' parts included)."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts = [pq.read_table(p) for p in sorted(parts_dir.glob("part-*.parquet"))]
    done = pa.concat_tables(parts).column("image_id") if parts else pa.array([], pa.int64())
    todo = candidates.filter(pc.invert(pc.is_in(candidates["image_id"], value_set=done)))
    stats["resumed_images"] = len(done)
    stats["scored_images"] = todo.num_rows
    if todo.num_rows == 0:
        return parts
    init_ray(config.address)
    common = {"fs": plan.fs, "root": plan.root, "seed": config.seed, "num_crops": config.num_crops,
              "scale": (config.min_scale, config.max_scale), "reads_in_flight": config.reads_in_flight}
    rows = table_dataset(todo, block_images)
    if config.decode_on_actor:
        ds = rows.map_batches(tasks.read_candidates, batch_size=None, batch_format="numpy", fn_kwargs=common)
    else:
        ds = rows.map_batches(tasks.cut_crops, batch_size=None, batch_format="numpy",
                              fn_kwargs={**common, "crop_size": plan.crop_size, "jpeg_draft": config.jpeg_draft})
    actor = actor_args(config, plan, precision, block_images)
    actor["fn_constructor_kwargs"]["crop_size"] = plan.crop_size
    ds = ds.map_batches(ScoreCrops, batch_format="numpy", **actor)
    buffer: list[pa.Table] = []
    started, scored = time.perf_counter(), 0

    def flush() -> None:
        part = pa.concat_tables(buffer)
        write_parquet(part, parts_dir / f"part-{len(parts):05d}.parquet")
        parts.append(part)
        buffer.clear()
        rate = scored * config.num_crops / (time.perf_counter() - started)
        log.info("scored %d/%d images (%.1f crops/s)", scored, todo.num_rows, rate)

    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        buffer.append(_scores_table(batch))
        scored += len(batch["image_id"])
        if sum(t.num_rows for t in buffer) >= config.scores_part_images:
            flush()
    if buffer:
        flush()
    return parts


def _scores_table(batch: dict[str, np.ndarray]) -> pa.Table:
    return pa.table({
        "image_id": pa.array(batch["image_id"], pa.int64()),
        "class_index": pa.array(batch["class_index"], pa.int32()),
        "name": pa.array([str(n) for n in batch["name"]], pa.string()),
        "boxes": fixed_size_list(batch["boxes"], pa.int32()),
        "size": fixed_size_list(batch["size"], pa.int32()),
        "crop_scores": fixed_size_list(batch["crop_scores"], pa.float32()),
        "best_crop": pa.array(batch["best_crop"], pa.int32()),
        "score": pa.array(batch["score"], pa.float32()),
        "skipped": pa.array([str(r) for r in batch["reason"]], pa.string()),
    })


def refine_scores(config: RdedConfig, plan: DistillPlan, candidates: pa.Table, scores: pa.Table, folder: Path,
                  stats: dict[str, Any]) -> pa.Table:
    """Rescore in fp32 the images whose selection the scoring precision leaves in doubt (those no earlier run
    refined), and put those scores in place; rows rescored are marked ``refined``.

    bf16 rounds logits to about three digits: near a class's cut-off that reorders images and changes which
    crop of an image is best, so every crop of each class's best ``per_class + refine_count`` images is rescored
    (past that margin the order is not in doubt). TF32's error is some twenty times smaller and scales with the
    score: only the images within ``refine_gap`` (relative) of their class's cut-off, or of a best-crop change,
    are rescored. Either way the selection is fp32's for a fraction of fp32's cost.
    """
    if "refined" not in scores.column_names:
        scores = scores.append_column("refined", pa.array(np.zeros(scores.num_rows, dtype=bool)))
    if plan.precision == "tf32":
        crop_scores = np.stack(scores["crop_scores"].to_numpy(zero_copy_only=False)).reshape(scores.num_rows, -1)
        doubt = in_doubt(scores["class_index"].to_numpy(), crop_scores, config.per_class, config.refine_gap)
        window = scores.filter(pa.array(doubt))
    else:
        window = partial_topk(scores, config.per_class + config.refine_count(plan.precision))
    need = window.filter(pc.invert(window["refined"]))["image_id"]
    todo = candidates.filter(pc.is_in(candidates["image_id"], value_set=need))
    # The window is a fraction of the candidates: small blocks keep every actor busy to the end. Parquet rows are
    # read by row group, each row group once by every block that holds one of its rows: there, blocks of 32 read
    # the window's row groups 1.7 times over, the scoring's blocks 1.06 times (BENCHMARKS.md).
    block_images = config.block_images if is_parquet(todo["name"][:1].to_pylist()) else min(config.block_images, 32)
    sub: dict[str, Any] = {}
    parts = score_candidates(config, plan, todo, folder, sub, precision="fp32", block_images=block_images)
    stats["refined_images"] = len(need)
    if not parts:
        return scores
    refined = pa.concat_tables(parts)
    refined = refined.append_column("refined", pa.array(np.ones(refined.num_rows, dtype=bool)))
    kept = scores.filter(pc.invert(pc.is_in(scores["image_id"], value_set=refined["image_id"])))
    return pa.concat_tables([kept, refined.select(kept.column_names)])


def load_scores(config: RdedConfig) -> pa.Table:
    """The scores of an earlier run (``from_scores``), refused unless they were computed with these settings."""
    folder = DistilledSet(config.from_scores).path if is_remote(config.from_scores) else Path(config.from_scores)
    source = folder / "scores.parquet"
    if not source.exists():
        raise FileNotFoundError(f"no scores.parquet in {config.from_scores}")
    table = pq.read_table(source)
    stored = json.loads((table.schema.metadata or {}).get(b"raydd", b"{}")).get("scoring_hash")
    if stored != config.scoring_hash():
        raise ValueError(f"the scores in {config.from_scores} were computed with other settings (data, observers, "
                         "crops, seed, factor or input size differ); rescore instead")
    return table


def remove_parts(folder: Path) -> None:
    """The parts are merged into scores.parquet; they were raydd's own temporary files."""
    for part in folder.glob("part-*.parquet"):
        part.unlink()
    folder.rmdir()
