"""How far one step moves IADD's weights per parameter tensor, raw gradient against per-group steps (issue 30).

    python benchmarks/iadd_weight_steps.py            # ConvNet-3 for CIFAR-10, weights per output channel

The student's and expert's parameters differ by seeded Gaussian noise whose scale is the same in every element,
so no group is matched better than another on average: the step a group gets is then noise around zero, and
what it must not depend on is the group's size. Printed per tensor: its groups' element count and the median
|step| of its groups at W = 1 (lr 1), for both ``--weights-step`` choices.
"""

from __future__ import annotations

import argparse
import json

import torch
from _machine import machine

from raydd.io.experts import param_layout
from raydd.matching.loss import matching_loss
from raydd.matching.weights import GRANULARITIES, ImportanceWeights
from raydd.models import get_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--granularity", choices=GRANULARITIES, default="channel")
    args = parser.parse_args()
    names, shapes = param_layout(get_model("convnet3", num_classes=10))
    generator = torch.Generator().manual_seed(0)
    weights = ImportanceWeights(shapes, args.granularity, step="group")  # raw steps are its gradient itself
    total = weights.index.numel()
    start, end = torch.randn(total, generator=generator), torch.randn(total, generator=generator)
    (grad,) = torch.autograd.grad(matching_loss(end, torch.zeros(total), start, weights()), [weights.rho])
    steps = {"raw": grad.abs(), "group": weights.precondition(grad).abs()}
    group_of_tensor = torch.repeat_interleave(torch.arange(len(shapes)),
                                              torch.tensor([weights._groups(s) for s in shapes]))
    rows = []
    for i, name in enumerate(names):
        mine = group_of_tensor == i
        rows.append({"tensor": name, "groups": int(mine.sum()), "elements_per_group": int(weights.counts[mine][0]),
                     **{f"median_step_{k}": float(v[mine].median()) for k, v in steps.items()}})
    print(json.dumps({"benchmark": "iadd_weight_steps", "granularity": args.granularity, "parameters": total,
                      "groups": weights.rho.numel(),
                      "step_spread": {k: {"median": float(v.median()), "max": float(v.max()),
                                          "max_over_median": float(v.max() / v.median())}
                                      for k, v in steps.items()},
                      "tensors": rows, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
