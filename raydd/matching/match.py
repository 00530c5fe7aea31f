"""MTT / IADD trajectory matching on Ray Train.

Every worker draws its own expert and start epoch, unrolls the student on the synthetic set, and computes the
gradients of the matching loss in the images, the step size α and (IADD) the weights' log-scale ρ; the
gradients are averaged across workers with an all-reduce, so every worker applies the same update and the
copies never drift apart (the reported ``worker_divergence`` checks it). A non-finite loss on any worker
skips the step on all of them and is counted. α is kept positive by projecting it back above ``1e-8``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from raydd.data.zca import ZCA_FILE, Zca, experts_zca
from raydd.io.experts import expert_files, load_expert
from raydd.io.torch_files import load_torch_file
from raydd.matching.config import MatchConfig
from raydd.matching.loss import matching_gradients
from raydd.matching.matched_set import write_matched_set
from raydd.matching.weights import ImportanceWeights, still_elements
from raydd.models.checkpoint import load_reported_state
from raydd.models.registry import IMAGENET_NORM, Normalization, get_model
from raydd.transforms.augment import dsa

__all__ = ["InitialSet", "expert_normalization", "finite_flag", "initial_set", "match"]

log = logging.getLogger("raydd.match")
STATE = "state.pt"
MIN_LR = 1e-8


@dataclass
class InitialSet:
    """The synthetic set's start: real images (normalized), their labels and source files, the classes, and the
    files skipped on the way."""

    images: torch.Tensor
    labels: torch.Tensor
    sources: list[str]
    classes: list[str]
    skipped: dict[str, int]


def expert_normalization(expert: dict[str, Any]) -> Normalization:
    """The input normalisation an expert was trained with (ImageNet's for files written before it was kept)."""
    norm = expert.get("normalization")
    return Normalization(tuple(norm["mean"]), tuple(norm["std"])) if norm else IMAGENET_NORM


def initial_set(config: MatchConfig, size: int, normalization: Normalization = IMAGENET_NORM) -> InitialSet:
    """``ipc`` real images per class (normalised with ``normalization``), taken in a seeded order: a file that does
    not decode is skipped (and counted) and the next one in that order takes its place, so every image keeps its
    true source.

    Raises:
        ValueError: naming a class with fewer than ``ipc`` images that decode.
    """
    from raydd.data import DecodeStats, list_images, load_class_map, sample_per_class
    from raydd.data.memory import load_labelled

    index = list_images(config.data)
    cmap = load_class_map(None, index.classes)
    drawn = sample_per_class(index, max(index.counts().values()), seed=config.seed, min_count=config.ipc)
    stats = DecodeStats()
    images, labels, sources = [], [], []
    for name in cmap.classes:
        order, taken, start = drawn[name], 0, 0
        while taken < config.ipc and start < len(order):
            wanted = order[start:start + config.ipc - taken]
            part = load_labelled(index, cmap.classes, size=size, files={name: wanted}, stats=stats)
            images.append(part.images)
            labels.append(part.labels)
            sources += part.refs
            taken, start = taken + len(part.refs), start + len(wanted)
        if taken < config.ipc:
            raise ValueError(f"class {name!r} has {taken} images that decode, but ipc = {config.ipc} are needed "
                             f"(skipped files: {dict(stats.skipped)})")
    x = normalization.apply(torch.cat(images).float() / 255)
    return InitialSet(x, torch.cat(labels), sources, list(cmap.classes), dict(stats.skipped))


def finite_flag(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """``[1.0]`` when the loss and every gradient are finite, else ``[0.0]``: float32 on the loss's device either
    way, so every rank all-reduces a tensor of the same dtype (its minimum skips a step on all of them)."""
    checks = torch.stack([torch.isfinite(loss).all(), *(torch.isfinite(g).all() for g in grads)])
    return checks.all().to(torch.float32).reshape(1)


def _all_mean(tensors: list[torch.Tensor], world: int) -> None:
    if world > 1:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= world
        start = 0
        for t in tensors:
            t.copy_(flat[start:start + t.numel()].view_as(t))
            start += t.numel()


def _match_loop(loop_config: dict[str, Any]) -> None:
    import ray.train

    from raydd.scaling import start_train_worker

    config = MatchConfig(**loop_config["config"])
    worker = start_train_worker(config)
    rank, world, device = worker.rank, worker.world, worker.device
    files = expert_files(config.experts)
    first = load_expert(files[0])
    names, shapes = first["names"], [tuple(s) for s in first["shapes"]]
    model = get_model(first["model"], **first["model_args"]).to(device)
    size = first["model_args"].get("input_size") or 32

    norm = expert_normalization(first)
    start_set = initial_set(config, size, norm)
    images, labels = start_set.images, start_set.labels
    zca = _zca(config, first)
    if zca is not None:
        images = zca.apply(images)  # matching happens in the space the experts were trained in
    syn = torch.nn.Parameter(images.to(device))
    labels = labels.to(device)
    lr = torch.nn.Parameter(torch.tensor(config.lr_teacher, device=device))
    weights = (ImportanceWeights(shapes, config.granularity, config.weights_step, bound=config.weights_bound,
                                 still=still_elements(first["trajectory"]) if config.hold_still else None).to(device)
               if config.method == "iadd" else None)
    opt_img = torch.optim.SGD([syn], lr=config.lr_img, momentum=config.momentum)
    opt_lr = torch.optim.SGD([lr], lr=config.lr_lr, momentum=config.momentum)
    opt_w = torch.optim.SGD(weights.parameters(), lr=config.lr_weights, momentum=config.momentum) if weights else None
    start_it, skipped, resumed_from = 0, 0, 0
    history: dict[int, dict[str, dict[str, float]]] = {}  # the weights at the first, middle and last iteration
    if weights is not None:
        history[0] = weights.summary(names)
    if (state := load_reported_state(ray.train.get_checkpoint(), STATE, map_location=device)) is not None:
        syn.data.copy_(state["images"])
        lr.data.fill_(state["lr"])
        opt_img.load_state_dict(state["opt_img"])
        opt_lr.load_state_dict(state["opt_lr"])
        if weights is not None:
            weights.load_state_dict(state["weights"])
            opt_w.load_state_dict(state["opt_w"])
        start_it, skipped = state["iteration"], state["skipped"]
        history = state.get("weight_history") or {}
        resumed_from = start_it
        log.info("resuming at iteration %d", start_it)

    batch = config.batch_syn or len(syn)
    params = [syn, lr, *(weights.parameters() if weights else [])]
    trajectories: dict[int, torch.Tensor] = {}  # each expert file opened (memory-mapped) once, not per iteration
    loop_started = time.perf_counter()
    for it in range(start_it, config.iterations):
        rng = np.random.default_rng([config.seed, rank, it])
        drawn = int(rng.integers(len(files)))
        if drawn not in trajectories:
            trajectories[drawn] = load_torch_file(files[drawn], mmap=True)["trajectory"]
        trajectory = trajectories[drawn]
        t = int(rng.integers(config.max_start_epoch))
        start = trajectory[t].to(device)
        target = trajectory[t + config.expert_epochs].to(device)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        loss, grads = matching_gradients(model, names, shapes, start, target, syn, labels, lr, weights,
                                         steps=config.syn_steps, batch_size=batch, generator=generator,
                                         augment=dsa if config.dsa else None, memory=config.memory)
        finite = finite_flag(loss, grads)
        stats = torch.where(finite.bool(), loss.detach().float().reshape(1), torch.zeros_like(finite))
        if world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            dist.all_reduce(stats)
        if finite.item() == 1.0:
            _all_mean(grads, world)
            if weights is not None:
                grads[2] = weights.precondition(grads[2])
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt_img.step()
            opt_lr.step()
            if opt_w is not None:
                opt_w.step()
                weights.project()
            with torch.no_grad():
                lr.clamp_(min=MIN_LR)
        else:
            skipped += 1
        for p in params:
            p.grad = None
        last = it + 1 == config.iterations
        if weights is not None and (it + 1 == config.iterations // 2 or last):
            history[it + 1] = weights.summary(names)
        loss_sum, lr_now = torch.cat([stats, lr.detach().reshape(1)]).tolist()  # one host read an iteration
        metrics = {"iteration": it + 1, "loss": loss_sum / world, "lr": lr_now, "skipped_steps": skipped,
                   "iteration_s": (time.perf_counter() - loop_started) / (it + 1 - start_it)}
        if (it + 1) % config.checkpoint_every == 0 or last:
            reference = syn.detach().clone()
            if world > 1:
                dist.broadcast(reference, src=0)
            divergence = (syn.detach() - reference).abs().max().reshape(1)
            if world > 1:
                dist.all_reduce(divergence, op=dist.ReduceOp.MAX)
            metrics["worker_divergence"] = float(divergence)
            with tempfile.TemporaryDirectory() as tmp:
                if rank == 0:
                    torch.save({"images": syn.detach().cpu(), "labels": labels.cpu(), "lr": float(lr.detach()),
                                "opt_img": opt_img.state_dict(), "opt_lr": opt_lr.state_dict(),
                                "weights": weights.state_dict() if weights else None,
                                "weight_groups": weights.group_weights().detach().cpu() if weights else None,
                                "weight_summary": weights.summary(names) if weights else None,
                                "weight_history": history,
                                "opt_w": opt_w.state_dict() if opt_w else None, "iteration": it + 1,
                                "skipped": skipped, "input_size": size, "resumed_from": resumed_from,
                                "sources": start_set.sources, "classes": start_set.classes,
                                "normalization": {"mean": list(norm.mean), "std": list(norm.std)},
                                "skipped_files": start_set.skipped,
                                "worker_divergence": metrics["worker_divergence"],
                                "iteration_s": metrics["iteration_s"]}, Path(tmp) / STATE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
            if rank == 0:
                log.info("iteration %d/%d loss=%.4f lr=%.3g skipped=%d", it + 1, config.iterations,
                         metrics["loss"], metrics["lr"], skipped)
        else:
            ray.train.report(metrics)


def _zca(config: MatchConfig, expert: dict[str, Any]) -> Zca | None:
    zca = experts_zca(config.experts)
    if zca is None and expert["config"].get("zca"):
        raise FileNotFoundError(f"the experts in {config.experts} were trained with ZCA but its {ZCA_FILE} is missing")
    return zca


def match(config: MatchConfig):
    """Distil ``config.data`` by MTT or IADD trajectory matching against the experts in ``config.experts``.

    Rerunning the same config resumes from the last checkpoint; the result is a distilled set (images,
    manifest with the learned lr, montage, ``stats.json`` with the weights' summary, ``weights.png``).
    """
    from raydd.data import list_images
    from raydd.io.distilled import DistilledSet
    from raydd.io.run_folder import RunFolder
    from raydd.runtime import tune_allocator
    from raydd.scaling import run_torch_trainer

    tune_allocator()
    first = load_expert(expert_files(config.experts)[0])
    epochs = first["trajectory"].shape[0] - 1
    if config.max_start_epoch + config.expert_epochs > epochs:
        raise ValueError(f"max_start_epoch + expert_epochs = {config.max_start_epoch + config.expert_epochs} "
                         f"exceeds the experts' {epochs} epochs")
    zca = _zca(config, first)  # a missing whitening is an error here, before any worker starts
    list_images(config.data)  # so is a source without images, or with a class name that is not a folder name
    result_hash = config.result_hash()
    if RunFolder.reuse(config.out, result_hash):
        return DistilledSet(config.out)
    run = RunFolder.for_config(config, result_hash, kind=config.method)
    result = run_torch_trainer(_match_loop, {"config": asdict(config)}, config, name=config.name,
                               storage_path=f"{run.storage}/ray")
    with result.checkpoint.as_directory() as folder:
        state = load_torch_file(Path(folder) / STATE)
    write_matched_set(config, state, run.work, zca)
    if run.uri is None:  # the set is all a user needs; its Ray Train checkpoints were raydd's own
        shutil.rmtree(run.work / "ray", ignore_errors=True)
    log.info("%s: lr %.4g after %d iterations (%d skipped)", config.method, state["lr"], state["iteration"],
             state["skipped"])
    return DistilledSet(run.finish())
