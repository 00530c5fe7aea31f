"""``raydd.evaluate``: students trained on a distilled set (and its baselines), one Ray Tune trial per (set,
variant, seed), all in parallel on whatever CPUs and GPUs the cluster has.

A variant is how the set is trained: ``main`` (the protocol as published), and for DD-Ranking's scores
``hard`` (its class labels only), ``no_aug`` (no augmentation); the full training data's hard-label run is one
more trial, cached so that each dataset, student and epoch count pays for it once."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raydd.config import config_hash
from raydd.data import list_images, load_class_map
from raydd.data.class_map import ClassMap
from raydd.data.memory import load_labelled
from raydd.data.zca import ZCA_FILE, Zca
from raydd.evaluate.baselines import random_patches, random_subset
from raydd.evaluate.config import EvalConfig, rded_recipe, rded_test_side
from raydd.evaluate.herding import herding_subset
from raydd.evaluate.scores import dd_ranking_scores
from raydd.evaluate.students import StudentPlan, train_student
from raydd.io.atomic import write_json
from raydd.io.distilled import DistilledSet, is_distilled_set
from raydd.io.run_folder import RunFolder
from raydd.io.soft_labels import dense_logits
from raydd.io.storage import is_remote, read_text
from raydd.models import get_entry, load_observer
from raydd.models.checkpoint import load_reported_state
from raydd.models.logits import ensemble_logits
from raydd.models.observer import Observer, observer_info
from raydd.runtime import init_ray, tune_allocator
from raydd.scaling import run_failed, trial_resources

__all__ = ["evaluate"]

log = logging.getLogger("raydd.evaluate")

STUDENT_STATE = "student.pt"  # a trial's checkpoint: what train_student needs to continue where it stood


@dataclass
class _TrainingSet:
    x: torch.Tensor
    y: torch.Tensor
    soft: torch.Tensor | None = None
    cells: torch.Tensor | None = None  # stored labels of each image's grid cells, [N, factor², classes]


@dataclass
class _Source:
    """What the evaluated set says about itself."""

    classes: list[str]
    factor: int
    ipc: int
    observers: list[str]
    columns: list[Any] | None
    learned_lr: float | None
    zca: Zca | None = None
    skipped_files: dict[str, int] | None = None
    normalization: dict[str, list[float]] | None = None  # a matched set's: its experts' mean and std


def _load_set(config: EvalConfig) -> tuple[_TrainingSet, _Source]:
    if is_distilled_set(config.distilled):
        distilled = DistilledSet(config.distilled)
        x, y = distilled.images()
        soft = cells = None
        if config.protocol == "rded" and config.soft_labels == "stored":
            soft, cells = _stored_labels(distilled, _temperature(config))
        counts = np.bincount(y.numpy())
        return _TrainingSet(x, y, soft, cells), _Source(
            classes=distilled.classes, factor=distilled.info.factor, ipc=int(counts.max()),
            observers=list(distilled.info.observers), columns=distilled.info.observer_columns,
            learned_lr=distilled.info.learned_lr, normalization=distilled.info.normalization,
            zca=Zca.load(distilled.path / ZCA_FILE) if (distilled.path / ZCA_FILE).exists() else None)
    if config.soft_labels == "stored":
        raise ValueError(f"{config.distilled} is a plain ImageFolder: it has no stored soft labels "
                         "(use --soft-labels online)")
    index = list_images(config.distilled)  # a path or a URI: Path() would fold s3:// into s3:/
    size = config.input_size or get_entry(config.student).input_size
    classes = index.classes
    loaded = load_labelled(index, classes, size=size)
    if len(loaded.labels) == 0:
        raise ValueError(f"{config.distilled}: none of its {len(index)} images decode ({dict(loaded.stats.skipped)})")
    return _TrainingSet(loaded.images, loaded.labels), _Source(
        classes=classes, factor=config.factor or 1, ipc=int(np.bincount(loaded.labels.numpy()).max()), observers=[],
        columns=None, learned_lr=None, skipped_files=dict(loaded.stats.skipped))


def _temperature(config: EvalConfig) -> float:
    return config.temperature or (20.0 if config.mix == "cutmix" else 4.0)


def _stored_labels(distilled: DistilledSet, temperature: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The set's stored labels as dense logits at ``temperature``: per image, and per grid cell
    (``[N, factor², classes]``, None when the set has no patch labels) for labelling a view by what it shows."""
    classes = len(distilled.classes)
    soft = dense_logits(*distilled.soft_labels(), classes, tail=distilled.soft_label_tails(),
                        temperature=temperature)
    indices, values = distilled.soft_labels(patches=True)
    if len(indices) == 0 or len(indices) % len(soft):
        return soft, None
    cells = dense_logits(indices, values, classes, tail=distilled.soft_label_tails(patches=True),
                         temperature=temperature)
    return soft, cells.view(len(soft), -1, classes)


def _load_val(folder: str, classes: list[str], size: int, protocol: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real test images in the set's class order; RDED tests at its reference's resize (``rded_test_side``) and
    a centre crop."""
    index = list_images(folder)
    missing = sorted(set(classes) - set(index.classes))
    if missing:
        raise ValueError(f"validation data {folder} lacks class(es) {', '.join(missing[:8])}")
    load = rded_test_side(size) if protocol == "rded" else size
    loaded = load_labelled(index, classes, size=load)
    x, y = loaded.images, loaded.labels
    if load != size:
        top = (load - size) // 2
        x = x[:, :, top:top + size, top:top + size].contiguous()
    return x, y


def _teacher(config: EvalConfig, source: _Source) -> tuple[str, list[int] | None]:
    spec = config.teacher or (source.observers[0] if source.observers else None)
    if spec is None:
        raise ValueError("the RDED protocol needs a teacher: pass --teacher SPEC")
    if config.teacher is None and source.columns is not None and config.class_map is None:
        return spec, source.columns[0]
    info = observer_info(spec)  # the driver needs the teacher's outputs, not its weights
    by_name = info.class_map_for(source.classes, config.class_map).to_dict()  # refuses a class it lacks
    # The teacher's logit for each of the set's classes, in the set's order: the teacher's own may differ.
    in_set_order = ClassMap(tuple(source.classes), tuple(by_name[c] for c in source.classes))
    return spec, in_set_order.restricted(info.num_outputs)


def _plan(config: EvalConfig, source: _Source, size: int, teacher_model: str = "") -> StudentPlan:
    rded = config.protocol == "rded"
    batch, lr = rded_recipe(source.ipc, len(source.classes), size, config.student, teacher_model) if rded else (
        256, source.learned_lr or 0.01)
    return StudentPlan(
        protocol=config.protocol, student=config.student, num_classes=len(source.classes), input_size=size,
        epochs=config.epochs or (300 if rded else 1000), batch_size=config.batch_size or batch,
        lr=config.lr if config.lr is not None else lr,
        weight_decay=config.weight_decay if config.weight_decay is not None else (0.01 if rded else 5e-4),
        temperature=_temperature(config), mix=config.mix,
        factor=config.factor or source.factor, eval_every=config.eval_every, precision=config.precision,
        # MTT's students see the inputs its experts saw; RDED's reference normalises with ImageNet's statistics.
        normalization=None if rded or not source.normalization else (tuple(source.normalization["mean"]),
                                                                     tuple(source.normalization["std"])),
        threads=config.threads_per_worker or max(1, int(config.cpus_per_worker or 1)))


def _trial(params: dict[str, Any], *, sets: dict[str, _TrainingSet], val: tuple[torch.Tensor, torch.Tensor],
           zca: Zca | None, plans: dict[str, StudentPlan], teacher: tuple[str, list[int] | None] | None) -> None:
    from ray import tune

    tune_allocator()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trial = params["trial"]
    data, plan = sets[trial["set"]], plans[trial["variant"]]
    online = plan.protocol == "rded" and plan.labels == "method" and data.soft is None
    observer = load_observer(teacher[0]).restrict(teacher[1]) if teacher and online else None
    if (state := load_reported_state(tune.get_checkpoint(), STUDENT_STATE)) is not None:
        log.warning("%s: continuing from its checkpoint at epoch %d", _name(trial), state["epoch"])

    def report(metrics: dict[str, Any], student: dict[str, Any] | None) -> None:
        if student is None:  # an epoch without a test: where the trial stands, for Tune's table and the log
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(student, Path(folder) / STUDENT_STATE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    result = train_student(plan, trial["seed"], data.x, data.y, *val, teacher=observer, soft=data.soft,
                           cells=data.cells, zca=zca,
                           report=report, device=device, state=state)
    # Tune's loggers take scalars only: the lists travel as JSON. test_acc repeats the final figure so that the
    # progress table shows it for finished trials too.
    reference = {} if result["reference_acc"] is None else {"reference_acc": result["reference_acc"]}
    tune.report({"epoch": plan.epochs, "test_acc": result["final_acc"], "final_acc": result["final_acc"],
                 "best_acc": result["best_acc"], **reference,
                 "per_class_acc_json": json.dumps(result["per_class_acc"]), "curve_json": json.dumps(result["curve"])})


def _name(trial: dict[str, Any]) -> str:
    """``distilled``, ``random/no_aug``, … : the report's key for a set trained one way."""
    return trial["set"] if trial["variant"] in ("main", "full") else f"{trial['set']}/{trial['variant']}"


def _full_data_plan(plan: StudentPlan, epochs: int) -> StudentPlan:
    """DD-Ranking's full-data run for CIFAR and ConvNet-3: hard labels, SGD at 0.01 (momentum 0.9, decay 5e-4),
    batch 512, the learning rate ×0.1 from half-way (MTT's evaluation schedule), no augmentation."""
    return replace(plan, protocol="mtt", labels="hard", augment=False, epochs=epochs, batch_size=512, lr=0.01,
                   weight_decay=5e-4)


def _full_data_key(config: EvalConfig, plan: StudentPlan, zca: bool) -> str:
    what = {"real_data": config.real_data, "student": plan.student, "input_size": plan.input_size,
            "epochs": plan.epochs, "zca": zca, "precision": plan.precision, "seed": config.seeds[0]}
    if plan.normalization is not None:  # keys made before it was a plan field stay as they were
        what["normalization"] = plan.normalization
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _full_data_cache(config: EvalConfig, key: str) -> Path:
    return Path(config.cache_dir or Path.home() / ".cache" / "raydd").expanduser() / "full_data" / f"{key}.json"


def _plot_scores(scores: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["hlr", "ior", "ior_no_aug", "lrs", "ars"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(names, [scores[n]["mean"] for n in names], yerr=[scores[n]["std"] for n in names], capsize=4,
           color=["#b55", "#57a", "#79c", "#3a6", "#6b8"])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("fraction (mean ± std over seeds)")
    ax.set_title(f"DD-Ranking scores (λ = {scores['lambda']})")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    finals = np.array([r["final_acc"] for r in rows]) * 100
    best = np.array([r["best_acc"] for r in rows]) * 100
    return {
        "seeds": [r["seed"] for r in rows],
        "final_acc": [round(float(v), 2) for v in finals],
        "final_acc_mean": round(float(finals.mean()), 2),
        "final_acc_std": round(float(finals.std()), 2),
        "best_over_evaluations_mean": round(float(best.mean()), 2),
        **_reference_figure(rows),
        "per_class_acc_mean": [round(float(v) * 100, 2) for v in np.mean([r["per_class_acc"] for r in rows], 0)],
        "curves": [r["curve"] for r in rows],
    }


def _reference_figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """RDED's reported figure (best test every 10 epochs in the last 20 %), per seed and mean ± std."""
    if any(r.get("reference_acc") is None for r in rows):
        return {}
    values = np.array([r["reference_acc"] for r in rows]) * 100
    return {"reference_acc": [round(float(v), 2) for v in values], "reference_acc_mean": round(float(values.mean()), 2),
            "reference_acc_std": round(float(values.std()), 2)}


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, summary in report["sets"].items():
        epochs = [p["epoch"] for p in summary["curves"][0]]
        accs = np.array([[p["test_acc"] * 100 for p in curve] for curve in summary["curves"]])
        label = f"{name} ({summary['final_acc_mean']:.1f} ± {summary['final_acc_std']:.1f})"
        ax.plot(epochs, accs.mean(0), label=label)
        ax.fill_between(epochs, accs.mean(0) - accs.std(0), accs.mean(0) + accs.std(0), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{report['protocol']} protocol, {report['student']} students")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _herding_observer(config: EvalConfig, source: _Source) -> Observer:
    spec = config.herding_observer or config.teacher or (source.observers[0] if source.observers else None)
    if spec is None:
        raise ValueError("herding chooses by an observer's features: pass --herding-observer SPEC")
    return load_observer(spec)


def _scores(config: EvalConfig, rows: dict[str, list[dict[str, Any]]], full_acc: float) -> dict[str, Any]:
    """DD-Ranking's scores from the final accuracies, seed by seed (DD-Ranking itself takes the best test of
    the last fifth of training; raydd's figure is the final one, as everywhere in its reports)."""
    def acc(name: str) -> list[float]:
        return [r["final_acc"] for r in sorted(rows[name], key=lambda r: r["seed"])]

    table = {"set": acc("distilled"), "random": acc("random"), "set_no_aug": acc("distilled/no_aug"),
             "random_no_aug": acc("random/no_aug"),
             "set_hard": acc("distilled/hard") if config.protocol == "rded" else acc("distilled")}
    return {**dd_ranking_scores(table, full_acc, config.score_lambda), "seeds": sorted(config.seeds),
            "accuracies": table, "units": "fractions (accuracy 0.5 = 50 %)"}


def _finished_report(out: str) -> dict[str, Any]:
    text = read_text(f"{out.rstrip('/')}/report.json") if is_remote(out) else (Path(out) / "report.json").read_text()
    return {**json.loads(text or "{}"), "out": out.rstrip("/") if is_remote(out) else str(Path(out).resolve())}


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Train ``len(seeds)`` fresh students on the set (and on each requested baseline) and test them.

    Examples:
        >>> from raydd.evaluate import EvalConfig, evaluate
        >>> report = evaluate(EvalConfig(distilled="runs/rded", val_data="cifar10/test", out="runs/eval",
        ...                              baseline="random", real_data="cifar10/train"))    # doctest: +SKIP
        >>> report["sets"]["distilled"]["final_acc_mean"]                                   # doctest: +SKIP

    Returns the report also written to ``out/report.json`` (every setting, per-seed and mean ± std final
    accuracy, best-over-evaluations labelled as such, per-class accuracy, curves), with ``out/curve.png``.
    """
    from ray import tune

    tune_allocator()
    result_hash = config_hash(config)
    if RunFolder.reuse(config.out, result_hash):
        log.info("%s is already a finished evaluation with this config", config.out)
        return _finished_report(config.out)
    data, source = _load_set(config)
    size = config.input_size or int(data.x.shape[-1])
    if data.x.shape[-1] != size:
        data = replace(data, x=torch.nn.functional.interpolate(data.x.float(), size=(size, size), mode="bilinear",
                                                               antialias=True).round().clamp(0, 255).byte())
    teacher = _teacher(config, source) if config.protocol == "rded" else None
    plan = _plan(config, source, size, observer_info(teacher[0]).model if teacher else "")
    sets = {"distilled": data}
    chosen: dict[str, dict[str, list[str]]] = {}
    if config.baselines():
        index = list_images(config.real_data)
        load_class_map(None, index.classes).check(source.classes)
        ipc = config.ipc or source.ipc
        seed = config.seeds[0]
        for name in config.baselines():
            if name == "random":
                *drawn, chosen[name] = random_subset(index, source.classes, ipc, size, seed=seed)
            elif name == "random_patches":
                *drawn, chosen[name] = random_patches(index, source.classes, ipc, size, plan.factor, seed=seed)
            else:
                *drawn, chosen[name] = herding_subset(index, source.classes, ipc, size, _herding_observer(config,
                                                                                                          source))
            sets[name] = _TrainingSet(*drawn)
        if data.soft is not None:
            observer = load_observer(teacher[0]).restrict(teacher[1])
            for name in sets.keys() - {"distilled"}:
                sets[name].soft = ensemble_logits([observer], sets[name].x)
    trials = [{"set": name, "variant": "main", "seed": seed} for name in sets for seed in config.seeds]
    plans = {"main": plan}
    full_acc, full_cache = config.full_data_acc, None
    if config.scores == "dd-ranking":
        plans |= {"no_aug": replace(plan, augment=False), "hard": replace(plan, labels="hard"),
                  "full": _full_data_plan(plan, config.full_data_epochs)}
        variants = [("distilled", "no_aug"), ("random", "no_aug")]
        if config.protocol == "rded":  # under MTT's protocol the method's labels are the hard labels
            variants.append(("distilled", "hard"))
        trials += [{"set": name, "variant": v, "seed": seed} for name, v in variants for seed in config.seeds]
        full_cache = _full_data_cache(config, _full_data_key(config, plans["full"], source.zca is not None))
        if full_acc is None and full_cache.exists():
            full_acc = json.loads(full_cache.read_text())["full_data_acc"]
            log.info("full-data accuracy %.4f from %s", full_acc, full_cache)
        if full_acc is None:  # index: the real data's listing, made for the random subset dd-ranking adds
            full = load_labelled(index, source.classes, size=size)
            sets["full_data"] = _TrainingSet(full.images, full.labels)
            trials.append({"set": "full_data", "variant": "full", "seed": config.seeds[0]})
    val = _load_val(config.val_data, source.classes, size, config.protocol)
    run = RunFolder.for_config(config, result_hash, kind="evaluate")

    init_ray(config.address)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, sets=sets, val=val, zca=source.zca, plans=plans, teacher=teacher),
        trial_resources(config),
    )
    experiment = f"{run.storage}/tune/trials"
    if run.resumed and tune.Tuner.can_restore(experiment):
        # An interrupted evaluation of this same config: finished trials stand, the others go on from their
        # last test's checkpoint.
        log.info("resuming the evaluation in %s", experiment)
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials)},
            tune_config=tune.TuneConfig(max_concurrent_trials=config.num_workers),
            run_config=tune.RunConfig(name="trials", storage_path=f"{run.storage}/tune", verbose=1,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      failure_config=tune.FailureConfig(max_failures=config.max_failures)),
        )
    started = time.time()
    results = tuner.fit()
    rows: dict[str, list[dict[str, Any]]] = {_name(t): [] for t in trials}
    for result in results:
        trial = result.config["trial"]
        if result.error is not None:
            raise run_failed(f"trial {_name(trial)} (seed {trial['seed']})", result.error, config, started=started,
                             kept=f"Finished trials and the others' last checkpoints are kept in {run.work}: run the "
                                  "same command again to continue") from result.error
        metrics = result.metrics
        if "final_acc" not in metrics:  # Tune stopped early (Ctrl-C): its trials wait in the partial folder
            raise RuntimeError(f"the evaluation stopped before trial {_name(trial)} (seed {trial['seed']}) finished; "
                               f"run the same command again to continue it (its work is in {run.work})")
        rows[_name(trial)].append({
            "seed": trial["seed"], "final_acc": metrics["final_acc"], "best_acc": metrics["best_acc"],
            "reference_acc": metrics.get("reference_acc"),
            "per_class_acc": json.loads(metrics["per_class_acc_json"]), "curve": json.loads(metrics["curve_json"])})
    report = {
        "protocol": config.protocol, "student": config.student, "config": asdict(config),
        "plan": json.loads(json.dumps(asdict(plan))),  # as report.json holds it (tuples as lists)
        "teacher": teacher[0] if teacher else None, "classes": source.classes, "zca": source.zca is not None,
        "skipped_files": source.skipped_files or {},
        "sets": {name: _summary(sorted(r, key=lambda x: x["seed"])) for name, r in rows.items()},
        "baselines": {name: {"files": files} for name, files in chosen.items()},
        "note": "final_acc is the accuracy after the last epoch; best_over_evaluations is the maximum over every "
                "periodic test; reference_acc (RDED) is the figure RDED's reference code reports, the best of its "
                "tests every 10 epochs in the last 20 % of training; std is over seeds (ddof=0).",
    }
    if config.scores == "dd-ranking":
        if full_acc is None:
            full_acc = rows["full_data"][0]["final_acc"]
            full_cache.parent.mkdir(parents=True, exist_ok=True)
            write_json({"full_data_acc": full_acc, "real_data": config.real_data, "plan": asdict(plans["full"])},
                       full_cache)
        report["scores"] = _scores(config, rows, full_acc)
        _plot_scores(report["scores"], run.work / "scores.png")
    write_json(report, run.work / "report.json")
    _plot(report, run.work / "curve.png")
    final = run.finish()
    for name, summary in report["sets"].items():
        log.info("%s: %.2f ± %.2f %% (seeds %s)", name, summary["final_acc_mean"], summary["final_acc_std"],
                 summary["seeds"])
    report["out"] = str(final)
    return report
