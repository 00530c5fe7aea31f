"""Time the reference RDED implementation's synthesis on this machine's CPU, beside ``rded_bench.py``.

    python benchmarks/reference_rded.py --reference ~/src/RDED imagenette     # a checkout of LINs-lab/RDED

The reference is not part of raydd: give a checkout of it (``git clone`` or raydd's ``fetch``). Its
``synthesize.main.init_images`` runs unchanged (class by class: a DataLoader of ``--workers`` processes decodes
``mipc`` images, cuts the crops, the observer scores them, the best are stitched and saved) with two
substitutions that a CPU needs: ``.cuda()`` leaves tensors where they are, and the observer is the one
``rded_bench.py`` uses, restricted to the job's classes. Its class folders are linked as the ``00000``,
``00001``, … it expects. Prints JSON: wall seconds of the synthesis, peak RSS of the main process and of its
loader workers, the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine, shared_dataset

from raydd.runtime import tune_allocator

JOBS = {
    "imagenette": dict(dataset="imagenette-224sq", observer="efficientnet_lite0", class_map="imagenet", ipc=10,
                       mipc=300, num_crops=5, factor=2, input_size=224),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--reference", required=True, help="a checkout of LINs-lab/RDED")
    parser.add_argument("--workers", type=int, default=2, help="the reference's DataLoader workers")
    args = parser.parse_args()
    tune_allocator()
    import torch

    from raydd.data import list_images
    from raydd.models import load_observer

    job = JOBS[args.job]
    data = f"{shared_dataset(job['dataset'])}/train"
    classes = list_images(data).classes
    observer = load_observer(job["observer"])
    columns = observer.class_map_for(classes, job["class_map"]).restricted(observer.num_outputs)

    class Restricted(torch.nn.Module):
        """The observer's logits of the job's classes, in the data's class order."""

        def __init__(self) -> None:
            super().__init__()
            self.observer = observer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.observer.logits(x)
            return logits if columns is None else logits[:, columns]

    work = Path(tempfile.mkdtemp(prefix="reference-rded-"))
    (work / "train").mkdir()
    for i, name in enumerate(classes):
        (work / "train" / f"{i:05d}").symlink_to(Path(data, name).resolve())
    sys.argv = ["main.py", "--subset", "imagenet-nette", "--arch-name", "resnet18", "--factor", str(job["factor"]),
                "--num-crop", str(job["num_crops"]), "--mipc", str(job["mipc"]), "--ipc", str(job["ipc"]),
                "--input-size", str(job["input_size"]), "--workers", str(args.workers)]
    sys.path.insert(0, str(Path(args.reference).expanduser().resolve()))
    os.chdir(work)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.empty_cache = lambda: None
    import synthesize.main as reference
    from argument import args as reference_args

    reference_args.workers, reference_args.train_dir = args.workers, str(work / "train")
    reference_args.nclass, reference_args.classes = len(classes), range(len(classes))
    model = Restricted().eval()
    started = time.perf_counter()
    with torch.no_grad():
        reference.init_images(reference_args, model)
    wall = time.perf_counter() - started
    print(json.dumps({
        "benchmark": f"reference_rded_{args.job}", **{k: v for k, v in job.items() if k != "dataset"},
        "workers": args.workers, "wall_s": round(wall, 1),
        "peak_rss_main_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "peak_rss_one_worker_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3),
        "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
