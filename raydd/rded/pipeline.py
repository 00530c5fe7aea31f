"""RDED as a Ray Data pipeline: candidates → crops → scores (observer actors) → per-class top-k → stitch →
soft labels (observer actors) → the distilled-set folder. This module is the orchestration; the CPU work is
in ``raydd.rded.tasks``, the observers' in ``raydd.rded.actors`` (scoring) and
``raydd.models.observer_actors`` (labelling).

Pixels never reach the driver: what it receives while scoring is one small row per candidate image (its boxes
and scores), written to Parquet parts as it arrives so that a killed run resumes without rescoring what
finished. Candidates are decoded either by CPU tasks or, on GPU actors, by the actors themselves (nvJPEG);
the CPU tasks then only read the bytes and the header.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raydd.data import ClassMap, list_images, sample_per_class
from raydd.data.filesystem import resolve
from raydd.io.atomic import write_parquet
from raydd.io.distilled import DistilledSet
from raydd.io.run_folder import RunFolder
from raydd.io.set_info import SetInfo
from raydd.io.storage import is_remote
from raydd.io.writer import DistilledSetWriter, fixed_size_list
from raydd.models.observer import observer_info
from raydd.models.observer_actors import LAYOUT_COLUMNS, LabelImages
from raydd.models.precision import resolve_scoring_precision
from raydd.rded import tasks
from raydd.rded.actors import ScoreCrops
from raydd.rded.config import RdedConfig
from raydd.rded.selection import combine_topk, in_doubt, partial_topk
from raydd.runtime import init_ray, tune_allocator
from raydd.scaling import actor_pool, table_dataset
from raydd.transforms.crops import draft_size
from raydd.transforms.grid import patch_ranks

__all__ = ["DistillPlan", "distill", "draw_candidates", "plan_distillation"]

log = logging.getLogger("raydd.rded")


@dataclass(frozen=True)
class DistillPlan:
    """Everything resolved on the driver before any work starts."""

    fs: Any
    root: str
    classes: tuple[str, ...]
    columns: list[list[int] | None]
    weights: list[str]  # which weights each observer loads, recorded in the manifest
    input_size: int
    crop_size: int
    precision: str  # the scoring precision "auto" resolved to on the actors' kind of device
    gpu: bool


def plan_distillation(config: RdedConfig) -> tuple[DistillPlan, Any]:
    """Step 0, on the driver: the classes, each observer's output columns, sizes and precision (observers'
    metadata only: the actors load the weights), and the index of the data's files."""
    index = list_images(config.data)
    unknown = sorted(set(config.classes or ()) - set(index.classes))
    if unknown:
        raise ValueError(f"no such class folder(s) in {config.data}: {', '.join(unknown[:8])}")
    wanted = [c for c in index.classes if c in set(config.classes)] if config.classes else index.classes
    observers = [observer_info(spec) for spec in config.observers]  # the actors load the weights, not the driver
    cmap: ClassMap = observers[0].class_map_for(wanted, config.class_map)
    columns = [cmap.restricted(observers[0].num_outputs)]
    for observer in observers[1:]:
        other = observer.class_map_for(wanted, config.class_map).to_dict()
        columns.append([other[c] for c in cmap.classes])
    input_size = config.input_size or observers[0].input_size
    fs, root = resolve(config.data)
    gpu = config.use_gpu
    plan = DistillPlan(fs=fs, root=root, classes=cmap.classes, columns=columns, weights=[o.weights for o in observers],
                 input_size=input_size,
                 crop_size=input_size // config.factor, gpu=gpu,
                 precision=resolve_scoring_precision(config.precision, "cuda" if gpu else "cpu"))
    return plan, index


def draw_candidates(config: RdedConfig, plan: DistillPlan, index: Any) -> pa.Table:
    """Step 1: ``mipc`` seeded draws per class; ids follow (class order, draw order).

    Parquet rows are put in (shard, row) order, so that each block of candidates reads few shards and, in each,
    only the row groups it needs (datasets published as Parquet are shuffled across their shards). The order
    depends on the draws alone, never on the number of actors.
    """
    drawn = sample_per_class(index, config.mipc, seed=config.seed, min_count=config.per_class,
                             classes=list(plan.classes))
    names, labels = [], []
    for c, name in enumerate(plan.classes):
        names += [os.path.relpath(ref, plan.root) if "#" not in ref else ref.removeprefix(plan.root + "/")
                  for ref in drawn[name]]
        labels += [c] * len(drawn[name])
    table = pa.table({"image_id": pa.array(np.arange(len(names)), pa.int64()),
                      "class_index": pa.array(labels, pa.int32()), "name": pa.array(names, pa.string())})
    if _is_parquet(names):
        table = table.take(pa.array(_in_shard_order(names), pa.int64()))
    return table


def _actor_args(config: RdedConfig, plan: DistillPlan, precision: str, batch_rows: int) -> dict[str, Any]:
    """``map_batches`` arguments of an observer actor pool. GPU actors get an explicit batch size (Ray Data
    requires one when GPUs are requested); forwards of a fixed shape keep the results independent of it."""
    import ray.data

    pool = actor_pool(config)
    return {
        "compute": ray.data.ActorPoolStrategy(size=pool.size),
        "fn_constructor_args": (list(config.observers), plan.columns),
        "fn_constructor_kwargs": {"precision": precision, "channels_last": config.channels_last,
                                  "threads": pool.threads, "batch_size": config.batch_size,
                                  "input_size": plan.input_size},
        "batch_size": batch_rows if plan.gpu else None,
        "num_cpus": pool.num_cpus,
        **({"num_gpus": pool.num_gpus} if plan.gpu else {}),
    }


def _score(config: RdedConfig, plan: DistillPlan, candidates: pa.Table, parts_dir: Path, stats: dict[str, Any], *,
           precision: str, block_images: int) -> list[pa.Table]:
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
    actor = _actor_args(config, plan, precision, block_images)
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


def _refine(config: RdedConfig, plan: DistillPlan, candidates: pa.Table, scores: pa.Table, folder: Path,
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
    sub: dict[str, Any] = {}
    # The window is a fraction of the candidates: small blocks keep every actor busy to the end.
    parts = _score(config, plan, candidates.filter(pc.is_in(candidates["image_id"], value_set=need)), folder, sub,
                   precision="fp32", block_images=min(config.block_images, 32))
    stats["refined_images"] = len(need)
    if not parts:
        return scores
    refined = pa.concat_tables(parts)
    refined = refined.append_column("refined", pa.array(np.ones(refined.num_rows, dtype=bool)))
    kept = scores.filter(pc.invert(pc.is_in(scores["image_id"], value_set=refined["image_id"])))
    return pa.concat_tables([kept, refined.select(kept.column_names)])


def _layout(config: RdedConfig, plan: DistillPlan, topk: pa.Table) -> pa.Table:
    """Which ranked patches make each distilled image (step 5), one row per distilled image, one list column per
    fact of its patches: sources, boxes, full sizes, scores, and the JPEG draft size each was scored at ((0, 0):
    full size)."""
    topk = topk.sort_by([("class_index", "ascending"), ("score", "ascending"), ("image_id", "ascending")])
    classes = topk["class_index"].to_numpy()
    counts = np.bincount(classes, minlength=len(plan.classes))
    short = np.flatnonzero(counts < config.per_class)
    if len(short):
        c = int(short[0])
        raise ValueError(f"class {plan.classes[c]!r}: only {counts[c]} images could be scored but "
                         f"{config.per_class} patches are needed (see skipped files in stats.json)")
    num_crops = config.num_crops
    boxes = np.stack(topk["boxes"].to_numpy(zero_copy_only=False)).reshape(topk.num_rows, num_crops, 3)
    chosen = boxes[np.arange(topk.num_rows), topk["best_crop"].to_numpy()]
    sizes = np.stack(topk["size"].to_numpy(zero_copy_only=False))
    names = topk["name"].to_pylist()
    scores = topk["score"].to_numpy()
    drafting = config.jpeg_draft and not config.decode_on_actor
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows: dict[str, list] = {k: [] for k in ("class_index", "n", *LAYOUT_COLUMNS)}
    for c, first in enumerate(starts):
        for i in range(config.ipc):
            ranks = [int(first) + r for r in patch_ranks(i, config.ipc, config.factor)]
            rows["class_index"].append(c)
            rows["n"].append(i)
            rows["patch_names"].append([names[r] for r in ranks])
            rows["patch_boxes"].append(chosen[ranks].tolist())
            rows["patch_sizes"].append(sizes[ranks].tolist())
            rows["patch_scores"].append([float(scores[r]) for r in ranks])
            rows["patch_drafts"].append([(drafting and draft_size(tuple(sizes[r]), boxes[r], plan.crop_size))
                                         or (0, 0) for r in ranks])
    return pa.table(rows)


def _assemble_and_label(config: RdedConfig, plan: DistillPlan, layout: pa.Table, writer: DistilledSetWriter) -> None:
    """Steps 5–6 through Ray Data; each image, its sources and soft labels go to ``writer`` as it arrives."""
    init_ray(config.address)
    # A GPU actor labels many images a call; on CPU small blocks keep every actor busy.
    block_rows = 64 if plan.gpu else 16
    actor = _actor_args(config, plan, plan.precision, block_rows)
    actor["fn_constructor_kwargs"].update(topk=config.soft_label_topk, factor=config.factor, size=plan.input_size,
                                          block_rows=block_rows)
    if _is_parquet(layout["patch_names"][0].as_py()):
        # Parquet is read by row group: patches in shard order (a block reads a few row groups, not one a patch),
        # then each image's cells are grouped back together. The same cuts and stitch as per image, by source.
        # The stitched images are materialized before the labelling actors start: an actor pool holding every
        # CPU would leave the group-by's shuffle none.
        size, factor = plan.input_size, config.factor
        stitched = (table_dataset(_cell_rows(layout, factor), config.block_images)
                    .map_batches(tasks.cut_cells, batch_size=None, batch_format="numpy",
                                 fn_kwargs={"fs": plan.fs, "root": plan.root, "size": size, "factor": factor,
                                            "reads_in_flight": config.reads_in_flight})
                    .groupby(["class_index", "n"])
                    .map_groups(tasks.stitch_cells, batch_format="numpy",
                                fn_kwargs={"size": size, "factor": factor, "image_format": config.image_format})
                    .materialize())
        ds = stitched.map_batches(LabelImages, batch_format="numpy", **{**actor, "batch_size": block_rows})
    elif config.decode_on_actor:
        rows = table_dataset(layout, block_rows)
        ds = (rows.map_batches(tasks.read_sources, batch_size=None, batch_format="numpy",
                               fn_kwargs={"fs": plan.fs, "root": plan.root, "reads_in_flight": config.reads_in_flight})
              .map_batches(LabelImages, batch_format="numpy", **actor)
              .map_batches(tasks.encode, batch_size=None, batch_format="numpy",
                           fn_kwargs={"image_format": config.image_format}))
    else:
        rows = table_dataset(layout, block_rows)
        ds = (rows.map_batches(tasks.assemble, batch_size=None, batch_format="numpy",
                               fn_kwargs={"fs": plan.fs, "root": plan.root, "size": plan.input_size,
                                          "factor": config.factor, "image_format": config.image_format,
                                          "reads_in_flight": config.reads_in_flight})
              .map_batches(LabelImages, batch_format="numpy", **actor))
    made_of = {(row["class_index"], row["n"]): row for row in layout.to_pylist()}
    patches = config.factor**2 if config.factor > 1 else 0
    started, done = time.perf_counter(), 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        # Written as they come (numbered by the layout, not by arrival): the driver keeps no image.
        for i in range(len(batch["class_index"])):
            c, n = int(batch["class_index"][i]), int(batch["n"][i])
            writer.add(c, batch["encoded"][i], n=n, sha256=str(batch["sha256"][i]),
                       sources=made_of[c, n]["patch_names"], boxes=made_of[c, n]["patch_boxes"],
                       scores=made_of[c, n]["patch_scores"],
                       label=(batch["label_indices"][i], batch["label_logits"][i], batch["label_tail"][i]),
                       patch_labels=[(batch["patch_indices"][i][p], batch["patch_logits"][i][p],
                                      batch["patch_tail"][i][p]) for p in range(patches)])
        done += len(batch["class_index"])
        log.info("assembled, labelled and wrote %d/%d images (%.1f images/s)", done, layout.num_rows,
                 done / (time.perf_counter() - started))


def _is_parquet(names: list[str]) -> bool:
    return any("#" in name for name in names[:1])


def _in_shard_order(names: list[str]) -> list[int]:
    """Positions of Parquet row references (``shard#row``) sorted by shard, then row."""
    shard, _, row = zip(*(n.rpartition("#") for n in names), strict=True)
    return sorted(range(len(names)), key=lambda i: (shard[i], int(row[i])))


def _cell_rows(layout: pa.Table, factor: int) -> pa.Table:
    """One row per patch of every distilled image (its class, number, cell and what to cut), in shard order."""
    cells = factor**2
    repeat = np.repeat(np.arange(layout.num_rows), cells)
    table = pa.table({
        "class_index": layout["class_index"].take(pa.array(repeat)),
        "n": layout["n"].take(pa.array(repeat)),
        "cell": pa.array(np.tile(np.arange(cells), layout.num_rows), pa.int32()),
        **{new: pa.array([v for row in layout[old].to_pylist() for v in row])
           for new, old in (("name", "patch_names"), ("box", "patch_boxes"), ("size", "patch_sizes"),
                            ("draft", "patch_drafts"))}})
    return table.take(pa.array(_in_shard_order(table["name"].to_pylist()), pa.int64()))


def _load_scores(config: RdedConfig) -> pa.Table:
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
    reused = _load_scores(config) if config.from_scores else None  # refused before any folder is made
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
        parts = _score(config, plan, candidates, run.work / "scores", stats, precision=plan.precision,
                       block_images=config.block_images)
        scores = pa.concat_tables(parts)
    if config.refines(plan.precision):
        scores = _refine(config, plan, candidates, scores, run.work / "refine", stats)
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
    layout = _layout(config, plan, topk)
    timings["select_s"] = time.perf_counter() - t

    t = time.perf_counter()
    writer = DistilledSetWriter(run.work, plan.classes, image_format=config.image_format)
    _assemble_and_label(config, plan, layout, writer)
    timings["assemble_label_s"] = time.perf_counter() - t
    info = SetInfo(method="rded", classes=list(plan.classes), observers=list(config.observers),
                   observer_columns=plan.columns, observer_weights=plan.weights, seed=config.seed,
                   config_hash=result_hash, input_size=plan.input_size, factor=config.factor, ipc=config.ipc)
    for folder in ("scores", "refine"):
        if (run.work / folder).exists():
            _remove_parts(run.work / folder)
    timings["total_s"] = time.perf_counter() - started
    stats.update({"selected_patches": topk.num_rows, "images": len(writer), "timings": timings,
                  "crops_per_s": stats["crops_scored"] / max(timings["score_s"], 1e-9) if stats.get("scored_images")
                  else None})
    writer.finish(info, stats)
    final = run.finish()
    log.info("distilled %d images into %s (skipped files: %s)", len(writer), final, stats["skipped_files"] or "none")
    return DistilledSet(final)


def _remove_parts(folder: Path) -> None:
    """The parts are merged into scores.parquet; they were raydd's own temporary files."""
    for part in folder.glob("part-*.parquet"):
        part.unlink()
    folder.rmdir()
