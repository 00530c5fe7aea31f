"""Trajectory matching as pure functions: the loss formula, IADD's weights, and IADD with W = 1 being MTT."""

import pytest
import torch

from raydd.data.zca import Zca
from raydd.io.experts import load_expert, param_layout, save_expert
from raydd.matching.loss import matching_gradients, matching_loss, unroll_student
from raydd.matching.weights import ImportanceWeights
from raydd.models import get_model
from raydd.trajectories.experts import ExpertsConfig, train_expert
from raydd.transforms.augment import dsa


def test_loss_equals_the_formula_on_hand_computed_tensors():
    start = torch.tensor([0.0, 0.0, 0.0])
    target = torch.tensor([1.0, 2.0, 2.0])  # ‖start − target‖² = 9
    student = torch.tensor([1.0, 1.0, 4.0])  # diff (0, −1, 2): MTT's numerator 5
    assert matching_loss(student, target, start).item() == pytest.approx(5 / 9)
    w = torch.tensor([3.0, 0.5, 2.0])  # weighted diff (0, −0.5, 4): 16.25; the denominator stays unweighted
    assert matching_loss(student, target, start, w).item() == pytest.approx(16.25 / 9)
    w = torch.tensor([1.0, 1.0, 0.5])  # (0, −1, 1) → 2
    assert matching_loss(student, target, start, w).item() == pytest.approx(2 / 9)


@pytest.mark.parametrize("granularity, groups",
                         [("tensor", 4), ("channel", 8 + 8 + 3 + 3), ("element", 8 * 27 + 8 + 3 * 8 * 4 + 3)])
def test_weights_start_at_one_stay_positive_and_average_one(granularity, groups):
    shapes = [(8, 3, 3, 3), (8,), (3, 8, 2, 2), (3,)]
    weights = ImportanceWeights(shapes, granularity)
    assert weights.rho.numel() == groups
    assert torch.equal(weights(), torch.ones(8 * 27 + 8 + 96 + 3))
    with torch.no_grad():
        weights.rho.normal_(0, 3)
    w = weights()
    # W = exp(ρ) / mean over elements of exp(ρ): each element's ratio to another is exp of their ρ difference.
    rho = weights.rho.detach()[weights.index]
    assert torch.allclose(w / w[0], torch.exp(rho - rho[0]), rtol=1e-4)
    assert (w > 0).all() and float(w.double().mean()) == pytest.approx(1.0, abs=1e-6) and w.std() > 0.5
    summary = weights.summary(["a", "b", "c", "d"])
    first = w[: 8 * 27]
    assert summary["a"] == pytest.approx({"mean": float(first.mean()), "min": float(first.min()),
                                          "max": float(first.max())})


def _setup():
    torch.manual_seed(0)
    model = get_model("convnet3", num_classes=3, width=8)
    names, shapes = param_layout(model)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(6, 3, 32, 32, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    lr = torch.tensor(0.01, requires_grad=True)
    return model, names, shapes, start, target, images, labels, lr


def test_iadd_with_unit_weights_is_mtt_in_loss_and_gradients():
    model, names, shapes, start, target, images, labels, lr = _setup()
    weights = ImportanceWeights(shapes, "channel")

    def run(w):
        end = unroll_student(model, names, shapes, start, images, labels, lr, steps=3, batch_size=4,
                             generator=torch.Generator().manual_seed(1), augment=dsa)
        loss = matching_loss(end, target, start, w)
        return (loss, *torch.autograd.grad(loss, [images, lr]))

    mtt = run(None)
    iadd = run(weights())
    for a, b in zip(mtt, iadd, strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)
    assert mtt[1].abs().sum() > 0 and mtt[2].abs() > 0


@pytest.mark.parametrize("granularity", ["tensor", "channel", "element"])
def test_the_gradient_in_rho_at_unit_weights_is_the_closed_form(granularity):
    """At ρ = 0 (W = 1): ∂L/∂ρ_k = (2/D)·(Σ_{i∈k} d_i² − (n_k/N)·Σ_i d_i²), with d = θ̂ − θ*, D the denominator,
    n_k the elements of group k and N all elements (the mean-1 normalisation gives the second term)."""
    model, names, shapes, start, target, images, labels, lr = _setup()
    weights = ImportanceWeights(shapes, granularity)
    end = unroll_student(model, names, shapes, start, images, labels, lr, steps=2, batch_size=6,
                         generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(matching_loss(end, target, start, weights()), [weights.rho])
    d2 = (end.detach() - target).double().pow(2)
    denominator = (start - target).double().pow(2).sum()
    per_group = torch.zeros(weights.rho.numel(), dtype=torch.float64).index_add_(0, weights.index, d2)
    expected = 2 / denominator * (per_group - weights.counts.double() / d2.numel() * d2.sum())
    assert torch.allclose(grad.double(), expected, rtol=1e-3, atol=1e-9) and expected.abs().max() > 0


@pytest.mark.parametrize("augment", [None, dsa])
def test_constant_memory_mode_gives_the_full_graphs_loss_and_gradients(augment):
    model, names, shapes, start, target, images, labels, lr = _setup()
    weights = ImportanceWeights(shapes, "channel")
    with torch.no_grad():
        weights.rho.normal_(0, 0.3)  # learned, unequal weights: their gradient must match too

    def run(memory):
        return matching_gradients(model, names, shapes, start, target, images, labels, lr, weights, steps=4,
                                  batch_size=4, generator=torch.Generator().manual_seed(3), augment=augment,
                                  memory=memory)

    full_loss, full = run("full")
    const_loss, const = run("constant")
    assert torch.allclose(full_loss, const_loss, rtol=1e-6)
    for a, b in zip(full, const, strict=True):
        assert a.shape == b.shape and a.abs().sum() > 0
        assert float((a - b).norm() / a.norm()) < 1e-4  # float32 rounding, nothing more
    with pytest.raises(ValueError, match="memory"):
        matching_gradients(model, names, shapes, start, target, images, labels, lr, memory="small", steps=1,
                           batch_size=4, generator=torch.Generator())


def test_weights_learn_from_the_loss():
    model, names, shapes, start, target, images, labels, lr = _setup()
    weights = ImportanceWeights(shapes, "tensor")
    end = unroll_student(model, names, shapes, start, images, labels, lr, steps=2, batch_size=6,
                         generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(matching_loss(end, target, start, weights()), [weights.rho])
    assert grad.abs().sum() > 0 and grad.shape == (len(shapes),)


def test_expert_trajectory_round_trip(tmp_path):
    torch.manual_seed(0)
    model = get_model("convnet3", num_classes=2, width=8)
    names, shapes = param_layout(model)
    config = ExpertsConfig(data="unused", out=str(tmp_path), epochs=2, batch_size=4)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1] * 4)
    trajectory = train_expert(model, x, y, config, seed=0)
    assert trajectory.shape == (3, sum(p.numel() for p in model.parameters()))
    assert not torch.equal(trajectory[0], trajectory[2])
    save_expert(tmp_path / "expert_0000.pt", trajectory=trajectory, model_name="convnet3",
                model_args={"num_classes": 2, "width": 8}, names=names, shapes=shapes, seed=0, config={})
    state = load_expert(tmp_path / "expert_0000.pt")
    assert torch.equal(state["trajectory"], trajectory) and state["names"] == names
    with pytest.raises(ValueError, match="not a raydd expert"):
        torch.save({"x": 1}, tmp_path / "bad.pt")
        load_expert(tmp_path / "bad.pt")


def test_zca_whitens_correlated_pixels_and_inverts_exactly():
    torch.manual_seed(0)
    mixing = torch.randn(48, 48)
    x = (torch.randn(2000, 48) @ mixing).reshape(2000, 3, 4, 4) + 5.0
    zca = Zca.fit(x, reg=1e-6)
    white = zca.apply(x).reshape(2000, -1)
    cov = white.T @ white / 2000
    assert torch.allclose(white.mean(0), torch.zeros(48), atol=1e-3)
    assert torch.allclose(cov, torch.eye(48), atol=0.02)
    assert torch.allclose(zca.invert(zca.apply(x)), x, atol=1e-3)
    assert torch.allclose(zca.transform, zca.transform.T)  # ZCA, not PCA: no rotation away from pixel space
    regularized = Zca.fit(x, reg=0.1).apply(x).reshape(2000, -1)
    assert float(regularized.var(0).max()) < 1.0  # the regularizer damps rather than amplifies
