"""The evaluation protocols' pieces as pure functions."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from raydd.evaluate import EvalConfig
from raydd.evaluate.augment import cutmix, dsa, mixup, random_resized_crop, shuffle_strips
from raydd.evaluate.config import rded_batch_size
from raydd.evaluate.losses import kd_loss, mtt_lr, rded_lr
from raydd.evaluate.students import StudentPlan, _mixed_soft_targets, train_student
from raydd.models.precision import autocast_dtype


def _grid(n: int = 3, size: int = 8, factor: int = 2) -> torch.Tensor:
    """Images whose cell (r, c) is filled with the value 10·r + c + 100·sample."""
    x = torch.zeros(n, 1, size, size)
    cell = size // factor
    for i in range(n):
        for r in range(factor):
            for c in range(factor):
                x[i, :, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 10 * r + c + 100 * i
    return x


def test_strip_shuffling_permutes_whole_strips():
    x = _grid(4, 9, 3)
    out = shuffle_strips(x, 3, torch.Generator().manual_seed(1))
    for i in range(4):
        # Every cell value survives, each row strip holds one original row's cells, each column one column's.
        assert sorted(out[i].unique().tolist()) == sorted(x[i].unique().tolist())
        rows = {int((v - 100 * i) // 10) for v in out[i, 0, 0, :].unique().tolist()}
        cols = {int((v - 100 * i) % 10) for v in out[i, 0, :, 0].unique().tolist()}
        assert len(rows) == 1 and len(cols) == 1
    assert not torch.equal(out, x)
    assert torch.equal(shuffle_strips(x, 1), x)


def test_cutmix_box_covers_one_minus_lambda():
    x = torch.zeros(2, 1, 64, 64)
    x[1] = 1
    for seed in range(20):
        mixed, perm, lam, (top, left, bottom, right) = cutmix(x, torch.Generator().manual_seed(seed))
        changed = (mixed != x).float().mean(dim=(1, 2, 3))
        area = (bottom - top) * (right - left) / 64**2
        assert math.isclose(1 - lam, area, abs_tol=1e-9)
        for i in range(2):
            if perm[i] != i:
                assert math.isclose(float(changed[i]), area, abs_tol=1e-6)


def test_mixup_is_a_convex_combination():
    x = torch.rand(4, 3, 8, 8)
    mixed, perm, lam = mixup(x, torch.Generator().manual_seed(0))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])


def test_random_resized_crop_and_dsa_keep_shapes():
    x = torch.rand(5, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert random_resized_crop(x, (1.0, 1.0), g, ratio=(1.0, 1.0)).allclose(x, atol=1e-5)
    for _ in range(12):
        assert dsa(x, g).shape == x.shape


def test_schedules_first_and_last_values():
    assert rded_lr(0, 300, 1e-3) == pytest.approx(1e-3)
    assert rded_lr(299, 300, 1e-3) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 299 / 600)))
    assert rded_lr(299, 300, 1e-3) == pytest.approx(5.026e-4, rel=1e-3)
    assert mtt_lr(0, 1000, 0.01) == 0.01 and mtt_lr(499, 1000, 0.01) == 0.01
    assert mtt_lr(500, 1000, 0.01) == pytest.approx(0.001) and mtt_lr(999, 1000, 0.01) == pytest.approx(0.001)


def test_kd_loss_equals_the_formula():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 4.0
    p = F.softmax(t / T, 1)
    expected = (p * (p.log() - F.log_softmax(s / T, 1))).sum() / 2
    assert torch.allclose(kd_loss(s, t, T), expected)
    assert kd_loss(t, t, T) == pytest.approx(0.0, abs=1e-7)


def test_stored_labels_mix_as_distributions():
    soft = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    target = _mixed_soft_targets(soft, torch.tensor([1, 0]), 0.25, 4.0)
    p = F.softmax(soft / 4, 1)
    assert torch.allclose(F.softmax(target / 4, 1), 0.25 * p + 0.75 * p[[1, 0]], atol=1e-6)


def test_batch_sizes_by_ipc():
    assert [rded_batch_size(i, 10) for i in (1, 10, 50)] == [10, 50, 100]
    assert [rded_batch_size(i, 1000) for i in (1, 10, 50)] == [20, 100, 200]


def test_config_validation():
    with pytest.raises(ValueError, match="real-data"):
        EvalConfig(distilled="d", val_data="v", out="o", baseline="random")
    with pytest.raises(ValueError, match="protocol"):
        EvalConfig(distilled="d", val_data="v", out="o", protocol="kip")
    with pytest.raises(ValueError, match="loss scaling"):
        EvalConfig(distilled="d", val_data="v", out="o", precision="fp16")


def test_precision_names_resolve_per_device():
    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("auto", "cuda") is torch.bfloat16
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert autocast_dtype("fp32", "cuda") is None
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype("int8", "cpu")


@pytest.mark.parametrize("precision, conv_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_student_trains_in_the_asked_precision(precision, conv_dtype):
    """bf16 reaches the convolutions, while the weights (and so the optimizer's update) stay fp32."""
    seen: set[torch.dtype] = set()
    weights: set[torch.dtype] = set()

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            seen.add(output.dtype)
            weights.add(module.weight.dtype)

    plan = StudentPlan(protocol="rded", student="convnet3", num_classes=2, input_size=32, epochs=1,
                       batch_size=4, lr=1e-3, weight_decay=0.01, temperature=4.0, mix="cutmix", factor=1,
                       eval_every=1, precision=precision)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(8) % 2
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        result = train_student(plan, 0, x, y, x, y, soft=torch.randn(8, 2))
    finally:
        handle.remove()
    assert seen == {conv_dtype}
    assert weights == {torch.float32}
    assert 0.0 <= result["final_acc"] <= 1.0 and len(result["per_class_acc"]) == 2


@pytest.mark.parametrize("protocol", ["rded", "mtt"])
def test_a_student_resumed_from_its_state_ends_as_one_never_stopped(protocol):
    plan = StudentPlan(protocol=protocol, student="convnet3", num_classes=2, input_size=32, epochs=4, batch_size=4,
                       lr=1e-3, weight_decay=0.01, temperature=4.0, mix="cutmix", factor=2, eval_every=2)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(8) % 2
    soft = torch.randn(8, 2)
    states: list[dict] = []

    def keep(metrics, state):
        states.append(copy.deepcopy(state))

    whole = train_student(plan, 3, x, y, x, y, soft=soft, report=keep)
    assert [s["epoch"] for s in states] == [2, 4]
    ends: list[dict] = []
    resumed = train_student(plan, 3, x, y, x, y, soft=soft, state=states[0],
                            report=lambda metrics, state: ends.append(copy.deepcopy(state)))
    assert resumed == whole and [s["epoch"] for s in ends] == [4]
    for name, tensor in states[1]["model"].items():
        assert torch.equal(ends[0]["model"][name], tensor), name
