"""RDED as a Ray Data pipeline: candidates → crops → scores (observer actors) → per-class top-k → stitch →
soft labels (observer actors) → the distilled-set folder. This module is the orchestration of its stages:
``plan`` (driver), ``score_stage`` (steps 2–3), selection (``selection``), ``assemble_stage`` (steps 5–6); the
CPU work is in ``raydd.rded.tasks``, the observers' in ``raydd.rded.actors`` (scoring) and
``raydd.models.observer_actors`` (labelling).

Pixels never reach the driver: what it receives while scoring is one small row per candidate image (its boxes
and scores), written to Parquet parts as it arrives so that a killed run resumes without rescoring what
finished. Candidates are decoded either by CPU tasks or, on GPU actors, by the actors themselves (nvJPEG);
the CPU tasks then only read the bytes and the header.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raydd.io.atomic import write_parquet
from raydd.io.distilled import DistilledSet
from raydd.io.run_folder import RunFolder
from raydd.io.set_info import SetInfo
from raydd.io.writer import DistilledSetWriter
from raydd.rded.assemble_stage import assemble_and_label, layout_images
from raydd.rded.config import RdedConfig
from raydd.rded.plan import draw_candidates, plan_distillation
from raydd.rded.score_stage import load_scores, refine_scores, remove_parts, score_candidates
from raydd.rded.selection import combine_topk, partial_topk
from raydd.runtime import tune_allocator

__all__ = ["distill"]

log = logging.getLogger("raydd.rded")


def distill(config: RdedConfig) -> DistilledSet:
    """Distil ``config.data`` with RDED into ``config.out`` and return a handle on the result.

    Examples:
        >>> from raydd.rded import RdedConfig, distill
        >>> cfg = RdedConfig(data="tiny/train", observers=["cifar_resnet20@r20.th"], out="tiny-rded",
        ...                  ipc=1, factor=1, mipc=20, input_size=32)                     # doctest: +SKIP
        >>> distill(cfg).images()[0].shape                                                 # doctest: +SKIP
        torch.Size([10, 3, 32, 32])

    Raises:
        ValueError: for a class map that does not fit the data or observers, or a class with too few images.
        OutputExistsError: when ``out`` is not empty (a finished run of the same config is returned instead).
    """
    tune_allocator()
    result_hash = config.result_hash()
    if RunFolder.reuse(config.out, result_hash):
        log.info("%s is already a finished run of this config", config.out)
        return DistilledSet(config.out)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    plan, index = plan_distillation(config)
    candidates = draw_candidates(config, plan, index)
    reused = load_scores(config) if config.from_scores else None  # refused before any folder is made
    run = RunFolder.for_config(config, result_hash, kind="rded")
    timings["plan_s"] = time.perf_counter() - started
    stats: dict[str, Any] = {"classes": len(plan.classes), "candidates": candidates.num_rows,
                             "crops_per_image": config.num_crops, "precision": plan.precision,
                             "decode": "actor" if config.decode_on_actor else "tasks"}

    t = time.perf_counter()
    meta = {b"raydd": json.dumps({"scoring_hash": config.scoring_hash(), "root": config.data}).encode()}
    if reused is not None:
        scores = reused
        stats["scores_from"] = config.from_scores
        parts = [scores]
    else:
        parts = score_candidates(config, plan, candidates, run.work / "scores", stats, precision=plan.precision,
                       block_images=config.block_images)
        scores = pa.concat_tables(parts)
    if config.refines(plan.precision):
        scores = refine_scores(config, plan, candidates, scores, run.work / "refine", stats)
        parts = [scores]
    scores = scores.sort_by("image_id").replace_schema_metadata(meta)
    write_parquet(scores, run.work / "scores.parquet")
    timings["score_s"] = time.perf_counter() - t

    skipped = [s for s in scores["skipped"].to_pylist() if s]
    stats["skipped_files"] = {reason: skipped.count(reason) for reason in sorted(set(skipped))}
    stats["skipped_examples"] = {r: scores.filter(pc.equal(scores["skipped"], r))["name"][0].as_py()
                                 for r in stats["skipped_files"]}
    stats["crops_scored"] = (scores.num_rows - len(skipped)) * config.num_crops

    t = time.perf_counter()
    topk = combine_topk((partial_topk(p, config.per_class) for p in parts), config.per_class)
    layout = layout_images(config, plan, topk)
    timings["select_s"] = time.perf_counter() - t

    t = time.perf_counter()
    writer = DistilledSetWriter(run.work, plan.classes, image_format=config.image_format)
    assemble_and_label(config, plan, layout, writer)
    timings["assemble_label_s"] = time.perf_counter() - t
    info = SetInfo(method="rded", classes=list(plan.classes), observers=list(config.observers),
                   observer_columns=plan.columns, observer_weights=plan.weights, seed=config.seed,
                   config_hash=result_hash, input_size=plan.input_size, factor=config.factor, ipc=config.ipc)
    for folder in ("scores", "refine"):
        if (run.work / folder).exists():
            remove_parts(run.work / folder)
    timings["total_s"] = time.perf_counter() - started
    stats.update({"selected_patches": topk.num_rows, "images": len(writer), "timings": timings,
                  "crops_per_s": stats["crops_scored"] / max(timings["score_s"], 1e-9) if stats.get("scored_images")
                  else None})
    writer.finish(info, stats)
    final = run.finish()
    log.info("distilled %d images into %s (skipped files: %s)", len(writer), final, stats["skipped_files"] or "none")
    return DistilledSet(final)
