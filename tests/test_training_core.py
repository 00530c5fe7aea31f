"""The training core the observers', experts' and students' loops share (``raydd.models.training``)."""

import pytest
import torch
from torch import nn

from raydd.models.training import class_hits, lr_at, make_optimizer, train_step


def test_adamw_exempts_biases_and_norms_and_sgd_keeps_its_momentum():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    decay, rest = make_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01).param_groups
    assert (decay["weight_decay"], rest["weight_decay"]) == (0.01, 0.0)
    assert [p.ndim for p in decay["params"]] == [4, 2] and all(p.ndim == 1 for p in rest["params"])
    (sgd,) = make_optimizer(model, "sgd", lr=0.1, weight_decay=5e-4, momentum=0.5).param_groups
    assert (sgd["momentum"], sgd["weight_decay"], len(sgd["params"])) == (0.5, 5e-4, 6)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(model, "adam", lr=1.0, weight_decay=0.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at("linear", 0, 10, 1.0)


def test_a_step_moves_the_weights_and_hits_count_each_class():
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 2))  # class 0 wins on x0, class 1 on x1, class 2 never
    images = torch.tensor([[9, 0], [0, 9], [9, 0], [0, 9], [9, 1]], dtype=torch.uint8)
    labels = torch.tensor([0, 1, 1, 1, 2])
    correct, total = class_hits(model, images, labels, inputs=lambda b: b.float(), num_classes=3,
                                device=torch.device("cpu"), batch_size=2)
    assert correct.tolist() == [1, 2, 0] and total.tolist() == [1, 3, 1]
    before = model.weight.detach().clone()
    train_step(torch.optim.SGD(model.parameters(), lr=0.1), model(images.float()).sum())
    assert not torch.equal(model.weight, before) and not model.training  # eval mode stays the caller's to undo
