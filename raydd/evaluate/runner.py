"""``raydd.evaluate``: students trained on a distilled set (and its baselines), one Ray Tune trial per (set,
variant, seed), all in parallel on whatever CPUs and GPUs the cluster has.

A variant is how the set is trained: ``main`` (the protocol as published), and for DD-Ranking's scores
``hard`` (its class labels only), ``no_aug`` (no augmentation); the full training data's hard-label run is one
more trial, cached so that each dataset, student and epoch count pays for it once."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from raydd.config import config_hash
from raydd.data import list_images, load_class_map
from raydd.data.memory import load_labelled
from raydd.data.zca import Zca
from raydd.evaluate.baselines import random_patches, random_subset
from raydd.evaluate.config import EvalConfig
from raydd.evaluate.herding import herding_subset
from raydd.evaluate.inputs import TrainingSet, herding_observer, load_set, load_val, teacher_spec
from raydd.evaluate.plans import full_data_cache, full_data_key, full_data_plan, student_plan
from raydd.evaluate.report import dd_ranking_report, finished_report, plot_curves, plot_scores, set_summary
from raydd.evaluate.students import StudentPlan, train_student
from raydd.io.atomic import write_json
from raydd.io.run_folder import RunFolder
from raydd.models import load_observer
from raydd.models.checkpoint import load_reported_state
from raydd.models.logits import ensemble_logits
from raydd.models.observer import observer_info
from raydd.runtime import init_ray, tune_allocator
from raydd.scaling import run_failed, trial_resources

__all__ = ["evaluate"]

log = logging.getLogger("raydd.evaluate")

STUDENT_STATE = "student.pt"  # a trial's checkpoint: what train_student needs to continue where it stood


def _trial(params: dict[str, Any], *, sets: dict[str, TrainingSet], val: tuple[torch.Tensor, torch.Tensor],
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
        return finished_report(config.out)
    data, source = load_set(config)
    size = config.input_size or int(data.x.shape[-1])
    if data.x.shape[-1] != size:
        data = replace(data, x=torch.nn.functional.interpolate(data.x.float(), size=(size, size), mode="bilinear",
                                                               antialias=True).round().clamp(0, 255).byte())
    teacher = teacher_spec(config, source) if config.protocol == "rded" else None
    plan = student_plan(config, source, size, observer_info(teacher[0]).model if teacher else "")
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
                *drawn, chosen[name] = herding_subset(index, source.classes, ipc, size, herding_observer(config,
                                                                                                          source))
            sets[name] = TrainingSet(*drawn)
        if data.soft is not None:
            observer = load_observer(teacher[0]).restrict(teacher[1])
            for name in sets.keys() - {"distilled"}:
                sets[name].soft = ensemble_logits([observer], sets[name].x)
    trials = [{"set": name, "variant": "main", "seed": seed} for name in sets for seed in config.seeds]
    plans = {"main": plan}
    full_acc, full_cache = config.full_data_acc, None
    if config.scores == "dd-ranking":
        plans |= {"no_aug": replace(plan, augment=False), "hard": replace(plan, labels="hard"),
                  "full": full_data_plan(plan, config.full_data_epochs)}
        variants = [("distilled", "no_aug"), ("random", "no_aug")]
        if config.protocol == "rded":  # under MTT's protocol the method's labels are the hard labels
            variants.append(("distilled", "hard"))
        trials += [{"set": name, "variant": v, "seed": seed} for name, v in variants for seed in config.seeds]
        full_cache = full_data_cache(config, full_data_key(config, plans["full"], source.zca is not None))
        if full_acc is None and full_cache.exists():
            full_acc = json.loads(full_cache.read_text())["full_data_acc"]
            log.info("full-data accuracy %.4f from %s", full_acc, full_cache)
        if full_acc is None:  # index: the real data's listing, made for the random subset dd-ranking adds
            full = load_labelled(index, source.classes, size=size)
            sets["full_data"] = TrainingSet(full.images, full.labels)
            trials.append({"set": "full_data", "variant": "full", "seed": config.seeds[0]})
    val = load_val(config.val_data, source.classes, size, config.protocol)
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
        "sets": {name: set_summary(sorted(r, key=lambda x: x["seed"])) for name, r in rows.items()},
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
        report["scores"] = dd_ranking_report(config, rows, full_acc)
        plot_scores(report["scores"], run.work / "scores.png")
    write_json(report, run.work / "report.json")
    plot_curves(report, run.work / "curve.png")
    final = run.finish()
    for name, summary in report["sets"].items():
        log.info("%s: %.2f ± %.2f %% (seeds %s)", name, summary["final_acc_mean"], summary["final_acc_std"],
                 summary["seeds"])
    report["out"] = str(final)
    return report
