"""RDED's reference code as the oracle of raydd's protocol and synthesis, on CIFAR-10 with a ConvNet-3 (BatchNorm).

    python benchmarks/reference_rded_oracle.py --reference ~/src/RDED --teacher runs/convnet3-bn/checkpoint.pt \
        --out /tmp/oracle-run
    python benchmarks/reference_rded_oracle.py … --ipc 1 --stages baselines --out /tmp/oracle-ipc1  # the table's rows

The reference (a checkout of LINs-lab/RDED, kept outside the project) runs unchanged, each run in its own
process and working folder, with two substitutions a CPU needs: ``.cuda()`` leaves tensors where they are, and
its ``./data`` holds links to the CIFAR-10 folders (as ``00000``, ``00001``, … in sorted class order) and the
teacher — a raydd ``convnet3_bn`` checkpoint written in the reference ConvNet's parameter names. Then:

1. *Synthesis*: the reference's ``synthesize.main`` and ``raydd distill`` on the same data and observer, at the
   reference's CIFAR-10 settings (``scripts/cifar10_10ipc_conv3_to_conv3_cr5.sh``: factor 1, 5 crops, mipc 300).
2. *Protocol*: raydd's set evaluated by the reference's ``validation/main.py`` (seed by seed) and by
   ``raydd evaluate`` (the same seeds, the same teacher), both at ``--epochs``.
3. *Synthesis, judged alike*: the reference's set evaluated by ``raydd evaluate``.
4. *The paper's table* (``baselines``): raydd's set with its random and herding baselines and DD-Ranking's
   scores (full-data accuracy: ``--full-data-acc``), over ``--baseline-seeds``.
5. *Stored labels* (``stored``): a factor-2 set evaluated with the online teacher, with each image's stored
   label and with each view labelled by its cells' stored labels (``--soft-labels stored_cells``).
6. *Synthesis draws* (``draws``): more sets from each code (``--draw-seeds``; raydd's seed, the reference's
   generators seeded by the harness), each evaluated by ``raydd evaluate`` with the first of ``--seeds``: how far
   one set's accuracy moves with the synthesis' own randomness, beside the two codes' difference.

Writes ``OUT/oracle.json`` after every stage: every accuracy per seed (the final and, for both codes, the
reference's reported figure), the means and stds, timings and the machine. Each reference run's output is kept
in ``OUT/reference-work/logs`` and each evaluation in its folder, so a rerun of the same command (with more
stages, say) repeats no finished run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _machine import machine, shared_dataset

from raydd.runtime import tune_allocator

SETTINGS = {"subset": "cifar10", "arch-name": "conv3", "stud-name": "conv3", "factor": "1", "num-crop": "5",
            "mipc": "300", "ipc": "10"}


def reference_state_dict(checkpoint: str) -> dict:
    """A raydd ``convnet*_bn`` checkpoint's weights under the reference ConvNet's names (``layers.conv.d``,
    ``layers.norm.d``, ``classifier``), in its ``{"model": …}`` file layout."""
    from raydd.models.checkpoint import read_checkpoint

    state = read_checkpoint(checkpoint)
    if not state["model"].endswith("_bn"):
        raise ValueError(f"the reference's ConvNets use BatchNorm: {checkpoint} holds a {state['model']}")
    renamed = {}
    for key, value in state["state_dict"].items():
        if key.startswith("features."):
            _, index, name = key.split(".", 2)
            depth, role = divmod(int(index), 4)  # conv, norm, relu, pool per block
            key = f"layers.{'conv' if role == 0 else 'norm'}.{depth}.{name}"
        renamed[key] = value
    return {"model": renamed}


def _workspace(root: Path, cifar: str, classes: list[str], teacher: str) -> Path:
    import torch

    for split, folder in (("train", "train"), ("val", "test")):
        target = root / "data" / "cifar10" / split
        target.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(classes):
            link = target / f"{i:05d}"
            if not link.exists():
                link.symlink_to(Path(cifar, folder, name).resolve())
    (root / "data" / "pretrain_models").mkdir(parents=True, exist_ok=True)
    torch.save(reference_state_dict(teacher), root / "data" / "pretrain_models" / "cifar10_conv3.pth")
    return root


def _reference(work: Path, reference: str, stage: str, epochs: int, seed: int, syn: Path | None = None,
               draw: int | None = None, settings: dict[str, str] = SETTINGS) -> str:
    """One run of the reference's ``stage`` (synthesize or validate) in its own process; its printed output,
    kept in ``work/logs`` (a finished run is not repeated). The reference's synthesis seeds nothing itself:
    ``draw`` seeds Python's and torch's generators before it starts, for another draw of its random crops."""
    name = f"{stage}-{Path(syn).parent.name if draw is not None else Path(syn).name if syn else 'default'}"
    log = work / "logs" / f"{name}-epochs{epochs}-seed{seed}.txt"
    if log.exists():
        return log.read_text()
    argv = [f"--{k}={v}" for k, v in settings.items()] + [f"--re-epochs={epochs}", f"--seed={seed}"]
    code = f"""
import os, sys, torch
sys.path.insert(0, {str(Path(reference).expanduser().resolve())!r})
os.chdir({str(work)!r})
sys.argv = ["main.py", *{argv!r}]
torch.Tensor.cuda = lambda self, *a, **k: self
torch.nn.Module.cuda = lambda self, *a, **k: self
torch.cuda.empty_cache = lambda: None
if {draw!r} is not None:
    import random
    random.seed({draw!r})
    torch.manual_seed({draw!r})
from argument import args
args.syn_data_path = {str(syn) if syn else ""!r} or args.syn_data_path
if {stage!r} == "synthesize":
    from synthesize.main import main
else:
    from validation.main import main
main(args)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the reference's {stage} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.with_suffix(".tmp").write_text(done.stdout)
    log.with_suffix(".tmp").replace(log)
    return done.stdout


def _reference_set(work: Path, reference: str, folder: Path, classes: list[str], epochs: int,
                   draw: int | None = None, settings: dict[str, str] = SETTINGS) -> Path:
    """The reference's synthesis into ``folder/numbered`` (once: ``folder/done`` marks it), and the same images
    under the class names raydd evaluate matches to the test set, ``folder/named``; returns the latter."""
    named = folder / "named"
    if not (folder / "done").exists():
        _reference(work, reference, "synthesize", epochs, 0, syn=folder / "numbered", draw=draw, settings=settings)
        named.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(classes):
            if not (named / name).exists():
                (named / name).symlink_to(folder / "numbered" / f"{i:05d}")
        (folder / "done").touch()
    return named


def _reference_accuracies(output: str, epochs: int) -> dict[str, object]:
    """The final test accuracy and the reported best from the reference's validation log (it prints "TEST:" on a
    line of its own, then "Iter E: loss = …, Top-1 err = …" with E counted from 0)."""
    found = re.findall(r"TEST:\s*\nIter (\d+): loss = [-+\w.]+,\s*Top-1 err = ([\d.]+)", output)
    tests = {int(e) + 1: round(100 - float(err), 2) for e, err in found}
    best = re.search(r"Best accuracy is ([\d.]+)@(\d+)", output)
    return {"final_acc": tests.get(epochs), "reference_acc": float(best.group(1)) if best else None,
            "tests": tests}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 2), "std": round(float(np.std(values)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="a checkout of LINs-lab/RDED")
    parser.add_argument("--teacher", required=True, help="a raydd convnet3_bn checkpoint trained on CIFAR-10")
    parser.add_argument("--out", required=True, help="work folder (links, sets, evaluations)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--full-data-acc", type=float, help="for DD-Ranking's scores (a fraction)")
    parser.add_argument("--baseline-seeds", type=int, nargs="+", help="seeds of the baselines stage (default: --seeds)")
    parser.add_argument("--draw-seeds", type=int, nargs="+", default=[1, 2], help="synthesis seeds of the draws stage")
    parser.add_argument("--ipc", type=int, default=int(SETTINGS["ipc"]),
                        help="images per class of every set (the reference's script: 10; give each IPC its --out)")
    parser.add_argument("--stages", nargs="+", default=["synthesis", "protocol", "judged", "baselines"],
                        choices=["synthesis", "protocol", "judged", "baselines", "stored", "draws"])
    args = parser.parse_args()
    tune_allocator()
    from raydd.data import list_images
    from raydd.evaluate import EvalConfig, evaluate
    from raydd.io import DistilledSet
    from raydd.rded import RdedConfig, distill

    cifar = shared_dataset("cifar10-jpg")
    classes = list_images(f"{cifar}/train").classes
    out = Path(args.out).resolve()
    work = _workspace(out / "reference-work", cifar, classes, args.teacher)
    observer = f"checkpoint@{Path(args.teacher).resolve()}"
    settings = {**SETTINGS, "ipc": str(args.ipc)}
    result: dict = {"benchmark": "reference_rded_oracle", "settings": settings, "epochs": args.epochs,
                    "seeds": args.seeds, "teacher": args.teacher, "timings_s": {}}

    def save() -> None:
        result["machine"] = machine()
        (out / "oracle.json").write_text(json.dumps(result, indent=2, default=str))

    def raydd_set(name: str, seed: int = 0, factor: int = int(settings["factor"])) -> DistilledSet:
        """raydd's synthesis at the reference script's settings (a finished one is returned as it is)."""
        return distill(RdedConfig(data=f"{cifar}/train", out=str(out / name), observers=[observer],
                                  ipc=args.ipc, factor=factor, mipc=int(settings["mipc"]),
                                  num_crops=int(settings["num-crop"]), seed=seed))

    started = time.perf_counter()
    ours = raydd_set("raydd-set")
    result["timings_s"]["raydd_distill"] = round(time.perf_counter() - started, 1)
    theirs = out / "reference-set"
    if "synthesis" in args.stages and not (theirs / "done").exists():
        started = time.perf_counter()
        _reference_set(work, args.reference, theirs, classes, args.epochs, settings=settings)
        result["timings_s"]["reference_synthesize"] = round(time.perf_counter() - started, 1)

    common = dict(val_data=f"{cifar}/test", protocol="rded", student="convnet3_bn", teacher=observer,
                  epochs=args.epochs, seeds=args.seeds, eval_every=50)
    if "protocol" in args.stages:
        numbered = out / "raydd-set-numbered"  # raydd's set as the reference reads a set: class folders 00000, …
        numbered.mkdir(exist_ok=True)
        for i, name in enumerate(classes):
            if not (numbered / f"{i:05d}").exists():
                (numbered / f"{i:05d}").symlink_to(ours.path / "images" / name)
        runs = {}
        for seed in args.seeds:
            started = time.perf_counter()
            runs[seed] = _reference_accuracies(_reference(work, args.reference, "validate", args.epochs, seed,
                                                          syn=numbered, settings=settings), args.epochs)
            runs[seed]["wall_s"] = round(time.perf_counter() - started, 1)
        result["reference_validates_raydd_set"] = {
            "per_seed": runs, "final": _mean_std([r["final_acc"] for r in runs.values()]),
            "reported": _mean_std([r["reference_acc"] for r in runs.values()])}
        started = time.perf_counter()
        report = evaluate(EvalConfig(distilled=str(ours.path), out=str(out / "raydd-evaluates-raydd-set"), **common))
        result["timings_s"]["raydd_evaluate_raydd_set"] = round(time.perf_counter() - started, 1)
        result["raydd_evaluates_raydd_set"] = report["sets"]["distilled"]
        save()
    if "judged" in args.stages:
        started = time.perf_counter()
        report = evaluate(EvalConfig(distilled=str(theirs / "named"), factor=int(settings["factor"]),
                                     out=str(out / "raydd-evaluates-reference-set"), **common))
        result["timings_s"]["raydd_evaluate_reference_set"] = round(time.perf_counter() - started, 1)
        result["raydd_evaluates_reference_set"] = report["sets"]["distilled"]
        save()
    if "baselines" in args.stages:
        started = time.perf_counter()
        scores = dict(scores="dd-ranking", full_data_acc=args.full_data_acc) if args.full_data_acc else {}
        report = evaluate(EvalConfig(distilled=str(ours.path), out=str(out / "raydd-set-with-baselines"),
                                     baseline="random,herding", real_data=f"{cifar}/train", **scores,
                                     **{**common, "seeds": args.baseline_seeds or args.seeds}))
        result["timings_s"]["raydd_set_with_baselines"] = round(time.perf_counter() - started, 1)
        result["raydd_set_with_baselines"] = {name: {k: v for k, v in s.items() if k not in ("curves",
                                                                                         "per_class_acc_mean")}
                                              for name, s in report["sets"].items()}
        result["scores"] = report.get("scores")
        save()
    if "stored" in args.stages:  # a stitched set (factor 2), its views labelled by the stored cell labels
        stitched = raydd_set("raydd-set-factor2", factor=2)
        for labels in ("online", "stored", "stored_cells"):
            started = time.perf_counter()
            report = evaluate(EvalConfig(distilled=str(stitched.path), out=str(out / f"factor2-{labels}"),
                                         soft_labels=labels, **common))
            result["timings_s"][f"factor2_{labels}"] = round(time.perf_counter() - started, 1)
            result[f"factor2_{labels}_labels"] = {k: v for k, v in report["sets"]["distilled"].items()
                                                  if k not in ("curves", "per_class_acc_mean")}
    if "draws" in args.stages:
        draws: dict[str, dict[int, float]] = {"raydd": {}, "reference": {}}
        for seed in args.draw_seeds:
            drawn = raydd_set(f"raydd-set-draw{seed}", seed=seed)
            named = _reference_set(work, args.reference, out / f"reference-set-draw{seed}", classes, args.epochs,
                                   draw=seed, settings=settings)
            for code, distilled, extra in (("raydd", str(drawn.path), {}),
                                           ("reference", str(named), {"factor": int(settings["factor"])})):
                report = evaluate(EvalConfig(distilled=distilled, out=str(out / f"{code}-draw{seed}-evaluated"),
                                             **extra, **{**common, "seeds": args.seeds[:1]}))
                draws[code][seed] = report["sets"]["distilled"]["final_acc"][0]
        result["draws"] = {"training_seed": args.seeds[0], "final_acc": draws}
    save()
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
