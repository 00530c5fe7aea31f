r"""Distil with RDED and evaluate under the RDED protocol beside the random-subset baseline.

    python benchmarks/evaluate_bench.py cifar10 --ipc 1 10 50          # ResNet-20 observer, ConvNet-3 students
    python benchmarks/evaluate_bench.py cifar10 --observer checkpoint@RUN  # an observer from `raydd train`
    python benchmarks/evaluate_bench.py imagenette --ipc 10 --student convnet5 --input-size 128 \
        --precision bf16                                                 # EfficientNet-Lite0 observer
    python benchmarks/evaluate_bench.py cifar10 --baseline random,herding --scores dd-ranking \
        --full-data-acc 0.8102                                           # DD-Ranking's scores, herding beside

Scores once (at the largest IPC) and selects the smaller IPCs from the same scores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from _machine import machine, shared_dataset, shared_path

from raydd.evaluate import EvalConfig, evaluate
from raydd.models.precision import TRAIN_PRECISIONS
from raydd.rded import RdedConfig, distill
from raydd.runtime import tune_allocator

JOBS = {
    "cifar10": dict(
        dataset="cifar10-jpg",
        val="test",
        observer="cifar_resnet20@{models}/cifar10-resnet20-akamaster.th",
        class_map=None,
        factor=1,
        input_size=32,
    ),
    "imagenette": dict(
        dataset="imagenette-224sq",
        val="val",
        observer="efficientnet_lite0",
        class_map="imagenet",
        factor=2,
        input_size=224,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--ipc", type=int, nargs="+", default=[10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--observer", default=None, help="observer and teacher spec (default: the job's)")
    parser.add_argument("--student", default="convnet3")
    parser.add_argument("--input-size", type=int, default=None, help="student input (default: the set's)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--soft-labels", default="online", choices=["online", "stored"])
    parser.add_argument("--precision", default="auto", choices=TRAIN_PRECISIONS)
    parser.add_argument("--baseline", default="random", help="random, random_patches, herding, both, or a list "
                                                              "joined by commas")
    parser.add_argument("--scores", default="none", choices=["none", "dd-ranking"])
    parser.add_argument("--full-data-acc", type=float, default=None, help="dd-ranking: a known full-data accuracy")
    parser.add_argument("--full-data-epochs", type=int, default=200, help="dd-ranking: else the full-data run's")
    parser.add_argument("--eval-every", type=int, default=25, help="test every N epochs (the last always)")
    parser.add_argument("--out", default=None, help="keep the sets and reports here")
    args = parser.parse_args()
    tune_allocator()
    job = JOBS[args.job]
    root = shared_dataset(job["dataset"])
    out = args.out or tempfile.mkdtemp(prefix="raydd-eval-bench-")
    observer = args.observer or job["observer"].format(models=shared_path("models"))
    results = []
    scores_from = None
    for ipc in sorted(args.ipc, reverse=True):
        started = time.perf_counter()
        distilled = distill(
            RdedConfig(
                data=os.path.join(root, "train"),
                observers=[observer],
                class_map=job["class_map"],
                ipc=ipc,
                factor=job["factor"],
                mipc=300,
                num_crops=5,
                input_size=job["input_size"],
                out=os.path.join(out, f"rded-ipc{ipc}"),
                from_scores=scores_from,
            )
        )
        distill_s = time.perf_counter() - started
        scores_from = scores_from or str(distilled.path)
        started = time.perf_counter()
        report = evaluate(
            EvalConfig(
                distilled=str(distilled.path),
                val_data=os.path.join(root, job["val"]),
                out=os.path.join(out, f"eval-ipc{ipc}"),
                student=args.student,
                input_size=args.input_size,
                epochs=args.epochs,
                seeds=args.seeds,
                soft_labels=args.soft_labels,
                baseline=args.baseline,
                scores=args.scores,
                full_data_acc=args.full_data_acc,
                full_data_epochs=args.full_data_epochs,
                precision=args.precision,
                eval_every=args.eval_every,
                real_data=os.path.join(root, "train"),
                class_map=job["class_map"],
            )
        )
        results.append(
            {
                "ipc": ipc,
                "distill_s": round(distill_s, 1),
                "evaluate_s": round(time.perf_counter() - started, 1),
                "plan": report["plan"],
                "teacher": report["teacher"],
                **{
                    name: {
                        k: s[k] for k in ("final_acc", "final_acc_mean", "final_acc_std", "best_over_evaluations_mean")
                    }
                    for name, s in report["sets"].items()
                },
                **({"scores": {k: report["scores"][k] for k in ("hlr", "ior", "ior_no_aug", "lrs", "ars", "per_seed",
                                                                "full_data_acc")}} if "scores" in report else {}),
                "report": os.path.join(report["out"], "report.json"),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    print(
        json.dumps(
            {
                "benchmark": f"evaluate_{args.job}",
                "observer": observer,
                "student": args.student,
                "soft_labels": args.soft_labels,
                "precision": args.precision,
                "results": results,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
