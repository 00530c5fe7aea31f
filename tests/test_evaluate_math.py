"""The evaluation protocols' pieces as pure functions."""

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from raydd.evaluate import EvalConfig
from raydd.evaluate.config import rded_recipe, rded_test_side
from raydd.evaluate.losses import kd_loss
from raydd.evaluate.students import StudentPlan, _mixed_soft_targets, train_student
from raydd.models.precision import autocast_dtype
from raydd.models.training import lr_at
from raydd.transforms.augment import cutmix, dsa, mixup, random_resized_crop, shuffle_strips


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


@pytest.mark.parametrize("alpha, low_share", [(1.0, 0.1), (0.5, 0.2048)])
def test_mixing_lambda_follows_beta_alpha_alpha(alpha, low_share):
    """λ ~ Beta(α, α): mean 1/2, variance 1/(4(2α+1)), and P(λ < 0.1) = 0.1 for α = 1, (2/π)·asin(√0.1) for α = ½."""
    from raydd.transforms.augment import _beta

    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([_beta(alpha, g) for _ in range(6000)], dtype=torch.float64)
    assert float(draws.mean()) == pytest.approx(0.5, abs=0.015)
    assert float(draws.var()) == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.06)
    assert float((draws < 0.1).double().mean()) == pytest.approx(low_share, abs=0.015)


def test_cutmix_pastes_a_box_of_side_root_one_minus_lambda_from_the_shuffled_batch(monkeypatch):
    import raydd.transforms.augment as augment

    n, h = 6, 200
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, h, h).clone()  # image i is all i
    moved = 0
    for seed, lam in enumerate((0.1, 0.3, 0.5, 0.7, 0.9) * 4):
        monkeypatch.setattr(augment, "_beta", lambda alpha, generator, lam=lam: lam)
        mixed, perm, effective, (top, left, bottom, right) = cutmix(x, torch.Generator().manual_seed(seed))
        half = int(h * math.sqrt(1 - lam)) // 2
        if top > 0 and left > 0 and bottom < h and right < h:  # not clipped by the border: the full box
            assert (bottom - top, right - left) == (2 * half, 2 * half)
        assert effective == pytest.approx(1 - (bottom - top) * (right - left) / h**2)
        inside = torch.zeros(h, h, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        for i in range(n):  # inside the box: the image perm[i]; outside: image i itself
            assert torch.equal(mixed[i, 0][inside], torch.full((int(inside.sum()),), float(perm[i])))
            assert torch.equal(mixed[i, 0][~inside], torch.full((int((~inside).sum()),), float(i)))
        moved += int((perm != torch.arange(n)).sum())
    assert moved > 60  # the shuffle moves images (an identity permutation would pass the pixel checks above)


def test_mixup_blends_each_image_with_a_shuffled_one_by_a_random_lambda():
    x = torch.rand(8, 3, 8, 8)
    lams, moved = [], 0
    for seed in range(300):
        mixed, perm, lam = mixup(x, torch.Generator().manual_seed(seed))
        assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
        lams.append(lam)
        moved += int((perm != torch.arange(8)).any())
    lams = torch.tensor(lams)
    assert moved > 290 and float(lams.std()) == pytest.approx(math.sqrt(1 / 12), rel=0.15)  # Beta(1, 1)


def test_random_resized_crop_zooms_by_its_scale():
    """On a horizontal ramp (pixel value = column), a crop of a quarter of the area, ratio 1, is half the width:
    resized back to the full width, neighbouring output pixels differ by 1/2 instead of 1."""
    x = torch.arange(32.0).view(1, 1, 1, 32).expand(4, 1, 32, 32).contiguous()
    out = random_resized_crop(x, (0.25, 0.25), torch.Generator().manual_seed(0), ratio=(1.0, 1.0))
    slope = out[:, 0, 16, 8:24].diff(dim=-1)
    assert torch.allclose(slope, torch.full_like(slope, 0.5), atol=1e-4)
    assert random_resized_crop(x, (1.0, 1.0), torch.Generator(), ratio=(1.0, 1.0)).allclose(x, atol=1e-4)


def test_random_resized_crop_is_torchvisions_resize_of_the_box():
    """Issue 29: the crop samples only inside its box, as torchvision's crop-then-resize does; sampling with zero
    padding darkened up to a pixel's width along the image's edges (a constant image came out 1.9 % darker)."""
    from torchvision.transforms.v2 import functional as TF

    from raydd.transforms.augment import resized_boxes

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    boxes = [(0, 0, 16, 16), (5, 9, 20, 11), (12, 0, 20, 32)]  # top, left, height, width
    top, left, height, width = (torch.tensor([float(b[i]) for b in boxes]) for i in range(4))
    out = resized_boxes(x, top, left, height, width)
    for i, (t, lf, bh, bw) in enumerate(boxes):
        expected = TF.resized_crop(x[i], t, lf, bh, bw, [32, 32], antialias=True)
        assert torch.allclose(out[i], expected, atol=1e-5), boxes[i]
    flat = torch.full((64, 3, 32, 32), 0.7)
    cropped = random_resized_crop(flat, (0.5, 1.0), torch.Generator().manual_seed(1))
    assert float((cropped - 0.7).abs().max()) < 1e-6


def test_every_dsa_family_changes_the_images_as_its_kind_does():
    x = torch.rand(6, 3, 16, 16)
    seen = set()
    for seed in range(60):
        family = int(torch.randint(0, 6, (1,), generator=torch.Generator().manual_seed(seed)))  # dsa's first draw
        out = dsa(x, torch.Generator().manual_seed(seed))
        assert out.shape == x.shape and not torch.allclose(out, x), family
        if family == 2:  # cutout: a square of half the side set to zero in each image, the rest untouched
            zeroed = (out == 0).all(dim=1)
            assert torch.equal(out[~zeroed.unsqueeze(1).expand_as(out)], x[~zeroed.unsqueeze(1).expand_as(x)])
            assert 0.1 < float(zeroed.float().mean()) <= 0.3
        if family == 3:  # flip: each image is itself or its mirror, and at least one is mirrored
            flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
            assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, x, strict=True)) and any(flipped)
        seen.add(family)
    assert seen == set(range(6))


def test_schedules_first_and_last_values():
    assert lr_at("half_cosine", 0, 300, 1e-3) == pytest.approx(1e-3)
    assert lr_at("half_cosine", 299, 300, 1e-3) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 299 / 600)))
    assert lr_at("half_cosine", 299, 300, 1e-3) == pytest.approx(5.026e-4, rel=1e-3)
    assert lr_at("step", 0, 1000, 0.01) == 0.01 and lr_at("step", 499, 1000, 0.01) == 0.01
    assert lr_at("step", 500, 1000, 0.01) == pytest.approx(0.001)
    assert lr_at("step", 999, 1000, 0.01) == pytest.approx(0.001)
    assert lr_at("cosine", 0, 10, 0.1) == 0.1 and lr_at("cosine", 5, 10, 0.1) == pytest.approx(0.05)
    assert lr_at("constant", 9, 10, 0.1) == 0.1


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
    assert [rded_recipe(i, 10, 32, "convnet3_bn")[0] for i in (1, 10, 50)] == [10, 50, 100]
    assert [rded_recipe(i, 1000, 224, "resnet18")[0] for i in (1, 10, 50)] == [20, 100, 200]


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

    progress: list[dict] = []

    def keep(metrics, state):
        progress.append(metrics)
        if state is not None:
            states.append(copy.deepcopy(state))

    whole = train_student(plan, 3, x, y, x, y, soft=soft, report=keep)
    assert [s["epoch"] for s in states] == [2, 4]
    # Every epoch reports where the trial stands; only the tests carry an accuracy and a state.
    assert [m["epoch"] for m in progress] == [1, 2, 3, 4]
    assert ["test_acc" in m for m in progress] == [False, True, False, True]
    assert all(m["images_per_s"] > 0 and m["train_loss"] > 0 for m in progress) and progress[-1]["eta_s"] == 0
    ends: list[dict] = []
    resumed = train_student(plan, 3, x, y, x, y, soft=soft, state=states[0],
                            report=lambda metrics, state: state and ends.append(copy.deepcopy(state)))
    assert resumed == whole and [s["epoch"] for s in ends] == [4]
    for name, tensor in states[1]["model"].items():
        assert torch.equal(ends[0]["model"][name], tensor), name


def _batches_seen(monkeypatch, plan: StudentPlan, **kwargs) -> tuple[list[torch.Tensor], list[str]]:
    """The pixels the student was fed and the losses used, for one short run."""
    import raydd.evaluate.students as students

    fed, losses = [], []
    real_ce, real_kd = students.F.cross_entropy, students.kd_loss
    monkeypatch.setattr(students, "_normalize", lambda x, *norm: fed.append(x.clone()) or x)
    monkeypatch.setattr(students.F, "cross_entropy", lambda *a, **k: losses.append("ce") or real_ce(*a, **k))
    monkeypatch.setattr(students, "kd_loss", lambda *a, **k: losses.append("kd") or real_kd(*a, **k))
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    train_student(plan, 0, x, torch.arange(8) % 2, x[:0], torch.arange(0), **kwargs)
    return fed[:2], losses, x


@pytest.mark.parametrize("protocol", ["rded", "mtt"])
def test_without_augmentation_the_student_sees_the_images_unchanged(monkeypatch, protocol):
    plan = StudentPlan(protocol=protocol, student="convnet3", num_classes=2, input_size=32, epochs=1, batch_size=8,
                       lr=1e-3, weight_decay=0.01, temperature=4.0, mix="cutmix", factor=2, eval_every=1)
    for augment in (True, False):
        fed, _, x = _batches_seen(monkeypatch, replace(plan, augment=augment), soft=torch.randn(8, 2))
        seen = sorted(fed[0].reshape(8, -1).tolist())
        unchanged = seen == sorted((x.float() / 255).reshape(8, -1).tolist())
        assert unchanged is not augment


def test_hard_labels_train_with_cross_entropy_under_either_protocol(monkeypatch):
    plan = StudentPlan(protocol="rded", student="convnet3", num_classes=2, input_size=32, epochs=1, batch_size=8,
                       lr=1e-3, weight_decay=0.01, temperature=4.0, mix="cutmix", factor=1, eval_every=1)
    assert set(_batches_seen(monkeypatch, plan, soft=torch.randn(8, 2))[1]) == {"kd"}
    # CutMix's hard-label loss: one cross-entropy per label of the mixed pair.
    assert _batches_seen(monkeypatch, replace(plan, labels="hard"), soft=torch.randn(8, 2))[1][:2] == ["ce", "ce"]
    assert set(_batches_seen(monkeypatch, replace(plan, protocol="mtt"))[1]) == {"ce"}


def test_rded_recipe_has_the_references_special_cases():
    """Issue 29: argument.py's cases, not one rule: 200 classes (Tiny-ImageNet) stay at batch 100; 100 classes
    double like 1,000 while other counts do not; CIFAR-100 ConvNet-3 → ConvNet-3 trains at 25 and 2e-3; students
    have their own AdamW learning rates; a batch never exceeds the set."""
    assert rded_recipe(10, 200, 64, "convnet4_bn") == (100, 1e-3)
    assert rded_recipe(50, 200, 64, "resnet18_small") == (100, 1e-3)
    assert rded_recipe(10, 100, 128, "resnet18") == (100, 1e-3)  # ImageNet-100
    assert rded_recipe(10, 500, 224, "resnet18") == (50, 1e-3)
    assert rded_recipe(10, 100, 32, "convnet3_bn", "convnet3_bn") == (25, 2e-3)
    assert rded_recipe(10, 100, 32, "convnet3_bn", "resnet18_small") == (100, 1e-3)
    assert rded_recipe(10, 10, 224, "mobilenet_v2") == (50, 2.5e-3)
    assert rded_recipe(10, 10, 224, "efficientnet_b0")[1] == 2e-3
    assert rded_recipe(10, 1000, 224, "vit_b_16")[1] == rded_recipe(10, 1000, 224, "swin_v2_t")[1] == 1e-4
    assert rded_recipe(1, 5, 32, "convnet3_bn") == (5, 1e-3)


def test_rded_tests_at_its_references_resize():
    """Issue 29: ``Resize(size // 7 * 8)`` then a centre crop: CIFAR's 32 px test images are used as they are
    (``round(32 · 8 / 7)`` = 37 upsampled them by 1.16×)."""
    assert [rded_test_side(s) for s in (32, 64, 128, 224)] == [32, 72, 144, 256]


def test_cifar_test_images_reach_rded_students_unresized(tmp_path):
    from PIL import Image

    from raydd.evaluate.inputs import load_val

    pixels = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for name, image in zip(("a", "b"), pixels, strict=True):
        (tmp_path / name).mkdir()
        Image.fromarray(image.numpy()).save(tmp_path / name / "0.png")
    x, y = load_val(str(tmp_path), ["a", "b"], 32, "rded")
    assert torch.equal(x, pixels.permute(0, 3, 1, 2)) and y.tolist() == [0, 1]


def test_rded_reports_its_references_figure_and_runs_batch_norm_students_on_the_clean_batch(monkeypatch):
    """Issue 29: the reference reports the best test every 10 epochs once past 80 % of training (250–300 of 300),
    and runs a BatchNorm student once more on its batch before mixing, without gradients (its running statistics
    see it); its CutMix pastes in place, so that batch is the mixed one."""
    from raydd.evaluate.students import rded_reported_epochs

    assert rded_reported_epochs(300) == [250, 260, 270, 280, 290, 300]
    assert rded_reported_epochs(25) == [25]
    plan = StudentPlan(protocol="rded", student="convnet3_bn", num_classes=2, input_size=32, epochs=25, batch_size=8,
                       lr=1e-3, weight_decay=0.01, temperature=4.0, mix="cutmix", factor=1, eval_every=10)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 2
    result = train_student(plan, 0, x, y, x, y, soft=torch.randn(8, 2))
    assert [c["epoch"] for c in result["curve"]] == [10, 20, 25]
    assert result["reference_acc"] == result["curve"][-1]["test_acc"]
    assert train_student(replace(plan, protocol="mtt"), 0, x, y, x, y)["reference_acc"] is None
    fed = {name: len(_batches_seen(monkeypatch, replace(plan, epochs=1, student=name), soft=torch.randn(8, 2))[0])
           for name in ("convnet3_bn", "convnet3")}
    assert fed == {"convnet3_bn": 2, "convnet3": 1}  # forward passes of the one training step
    (mixed, clean), _, _ = _batches_seen(monkeypatch, replace(plan, epochs=1), soft=torch.randn(8, 2))
    assert torch.equal(mixed, clean)  # under CutMix, which the reference applies in place, both see the mixed batch
    (mixed, clean), _, _ = _batches_seen(monkeypatch, replace(plan, epochs=1, mix="mixup"), soft=torch.randn(8, 2))
    assert not torch.equal(mixed, clean)


def test_a_stored_view_label_is_its_cells_labels_by_the_area_each_shows():
    """Issue 29: a strip-shuffled, cropped, CutMixed view is labelled by the cells it shows — each image's own
    outside the box, its partner's inside — not by its whole stitched image's label."""
    from raydd.evaluate.students import _cell_maps, _view_soft_targets

    t = 4.0
    cells = torch.full((2, 4, 8), -30.0)
    for image in range(2):
        for c in range(4):
            cells[image, c, 4 * image + c] = 30.0  # cell c of image i is class 4i + c, with certainty
    maps = _cell_maps(8, 2, torch.device("cpu")).expand(2, -1, -1, -1)
    perm = torch.tensor([1, 0])
    probs = F.softmax(_view_soft_targets(cells, maps, perm, 1.0, (0, 0, 4, 4), t) / t, dim=1)
    # Image 0's view: its cells 1, 2, 3 outside the 4×4 box at the top left, image 1's cell 0 inside it.
    assert torch.allclose(probs[0], torch.tensor([0, 0.25, 0.25, 0.25, 0.25, 0, 0, 0]), atol=1e-6)
    mixed = F.softmax(_view_soft_targets(cells, maps, perm, 0.75, None, t) / t, dim=1)  # Mixup, λ = 0.75
    assert torch.allclose(mixed[0], torch.tensor([0.1875] * 4 + [0.0625] * 4), atol=1e-6)


def test_stored_view_labels_keep_the_online_views_and_change_their_labels(monkeypatch):
    import raydd.evaluate.students as students

    plan = StudentPlan(protocol="rded", student="convnet3", num_classes=8, input_size=32, epochs=1, batch_size=8,
                       lr=1e-3, weight_decay=0.01, temperature=4.0, mix="cutmix", factor=2, eval_every=1)
    targets: list[torch.Tensor] = []
    real_kd = students.kd_loss
    monkeypatch.setattr(students, "kd_loss", lambda logits, target, t: targets.append(target) or real_kd(
        logits, target, t))
    cells = torch.randn(8, 4, 8, generator=torch.Generator().manual_seed(1)) * 5
    soft = cells.mean(1)
    torch.manual_seed(0)  # _batches_seen draws its images from the global generator
    whole, _, _ = _batches_seen(monkeypatch, plan, soft=soft)
    torch.manual_seed(0)
    by_view, _, _ = _batches_seen(monkeypatch, plan, soft=soft, cells=cells)
    assert all(torch.equal(a, b) for a, b in zip(whole, by_view, strict=True))  # the same draws, the same views
    assert not torch.allclose(targets[0], targets[1])
