"""RDED's steps 5–6: which ranked patches make each distilled image (the layout), then through Ray Data the
stitching (CPU tasks, the labelling actors, or by Parquet row group) and the soft labels, each image written as
it arrives."""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from raydd.io.writer import DistilledSetWriter
from raydd.models.observer_actors import LAYOUT_COLUMNS, LabelImages
from raydd.rded import tasks
from raydd.rded.config import RdedConfig
from raydd.rded.plan import DistillPlan, actor_args, in_shard_order, is_parquet
from raydd.runtime import init_ray
from raydd.scaling import table_dataset
from raydd.transforms.crops import draft_size
from raydd.transforms.grid import patch_ranks

__all__ = ["assemble_and_label", "layout_images"]

log = logging.getLogger("raydd.rded")


def layout_images(config: RdedConfig, plan: DistillPlan, topk: pa.Table) -> pa.Table:
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


def assemble_and_label(config: RdedConfig, plan: DistillPlan, layout: pa.Table,
                       writer: DistilledSetWriter) -> None:
    """Steps 5–6 through Ray Data; each image, its sources and soft labels go to ``writer`` as it arrives."""
    init_ray(config.address)
    # A GPU actor labels many images a call; on CPU small blocks keep every actor busy.
    block_rows = 64 if plan.gpu else 16
    actor = actor_args(config, plan, plan.precision, block_rows)
    actor["fn_constructor_kwargs"].update(topk=config.soft_label_topk, factor=config.factor, size=plan.input_size,
                                          block_rows=block_rows)
    if is_parquet(layout["patch_names"][0].as_py()):
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
    # The layout has a row per image in class order, ipc a class: image n of class c is row c * ipc + n.
    rows = np.arange(layout.num_rows)
    if not (np.array_equal(layout["class_index"].to_numpy(), rows // config.ipc)
            and np.array_equal(layout["n"].to_numpy(), rows % config.ipc)):
        raise ValueError("the layout must have one row per image, in class order, ipc images a class")
    made_of = {k: layout[k] for k in ("patch_names", "patch_boxes", "patch_scores")}
    patches = config.factor**2 if config.factor > 1 else 0
    started, done = time.perf_counter(), 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        # Written as they come (numbered by the layout, not by arrival): the driver keeps no image.
        for i in range(len(batch["class_index"])):
            c, n = int(batch["class_index"][i]), int(batch["n"][i])
            row = c * config.ipc + n
            writer.add(c, batch["encoded"][i], n=n, sha256=str(batch["sha256"][i]),
                       sources=made_of["patch_names"][row].as_py(), boxes=made_of["patch_boxes"][row].as_py(),
                       scores=made_of["patch_scores"][row].as_py(),
                       label=(batch["label_indices"][i], batch["label_logits"][i], batch["label_tail"][i]),
                       patch_labels=[(batch["patch_indices"][i][p], batch["patch_logits"][i][p],
                                      batch["patch_tail"][i][p]) for p in range(patches)])
        done += len(batch["class_index"])
        log.info("assembled, labelled and wrote %d/%d images (%.1f images/s)", done, layout.num_rows,
                 done / (time.perf_counter() - started))


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
    return table.take(pa.array(in_shard_order(table["name"].to_pylist()), pa.int64()))
