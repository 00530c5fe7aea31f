"""Trajectory matching as pure functions: the loss formula, IADD's weights, and IADD with W = 1 being MTT."""

import math

import pytest
import torch

from raydd.data.zca import Zca
from raydd.io.experts import load_expert, param_layout, save_expert
from raydd.matching.loss import matching_gradients, matching_loss, unroll_student
from raydd.matching.weights import ImportanceWeights, still_elements
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
        weights.rho.normal_(0, 3, generator=torch.Generator().manual_seed(0))  # not the suite's global RNG
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


# A conv layer of 16 channels × 27 elements with its biases, and a classifier of 10 rows × 64 with its biases.
_SHAPES = [(16, 3, 3, 3), (16,), (10, 64), (10,)]
_GROUPS = {"conv channel (27 elements)": 3, "conv bias (1 element)": 16 + 5, "classifier row (64 elements)": 32 + 7,
           "classifier bias (1 element)": 42 + 2}


def _weights_after(step: str, mismatched: int, iterations: int) -> torch.Tensor:
    """Group weights after ``iterations`` of the matching loop's update of ρ (its default lr and momentum) on a
    problem whose student ends 0.5 from the target in every parameter but the ``mismatched`` group's, 5 away."""
    from raydd.matching import MatchConfig

    weights = ImportanceWeights(_SHAPES, "channel", step)
    start = torch.randn(weights.index.numel(), generator=torch.Generator().manual_seed(0))
    target = torch.zeros_like(start)
    end = torch.full_like(start, 0.5).masked_fill(weights.index == mismatched, 5.0)
    defaults = MatchConfig(data="d", experts="e", out="o")
    opt = torch.optim.SGD(weights.parameters(), lr=defaults.lr_weights, momentum=defaults.momentum)
    for _ in range(iterations):
        (grad,) = torch.autograd.grad(matching_loss(end, target, start, weights()), [weights.rho])
        weights.rho.grad = weights.precondition(grad)
        opt.step()
    return weights.group_weights().detach()


@pytest.mark.parametrize("group", list(_GROUPS))
def test_a_mismatched_group_loses_weight_whatever_its_size(group):
    """The group matched 10 times worse than the rest (100× its mean squared mismatch) falls below 0.1 within 100
    iterations, a bias as far as a conv channel or a classifier row; every other group stays within 1 ± 10 %."""
    w = _weights_after("group", _GROUPS[group], 100)
    others = torch.cat([w[:_GROUPS[group]], w[_GROUPS[group] + 1:]])
    assert w[_GROUPS[group]] < 0.1, group
    assert ((others > 0.9) & (others < 1.1)).all(), group


def test_the_mismatched_groups_fall_alike_and_raw_steps_would_leave_small_groups_where_they_started():
    by_size = torch.stack([_weights_after("group", g, 20)[g] for g in _GROUPS.values()])
    assert float(by_size.max() / by_size.min()) < 1.1  # one fall, whichever the group's size
    raw = torch.stack([_weights_after("raw", g, 20)[g] for g in _GROUPS.values()])
    assert float(raw.max() / raw.min()) > 1.5  # the raw gradient: a 1-element bias moves far less than a row


def test_the_weights_settle_where_each_group_weighs_inversely_to_its_mismatch():
    """Minimising L over W with mean 1 over elements has one optimum, W_g ∝ 1 / m_g (m_g: the group's mean
    squared mismatch): there the gradient in ρ vanishes, and the update heads for it from W ≡ 1."""
    g = _GROUPS["conv channel (27 elements)"]
    weights = ImportanceWeights(_SHAPES, "channel", "group")
    start = torch.randn(weights.index.numel(), generator=torch.Generator().manual_seed(0))
    end = torch.full_like(start, 0.5).masked_fill(weights.index == g, 5.0)
    with torch.no_grad():
        weights.rho[g] = -torch.log(torch.tensor(100.0))  # m_g is 100 times the others'
    (grad,) = torch.autograd.grad(matching_loss(end, torch.zeros_like(start), start, weights()), [weights.rho])
    assert weights.precondition(grad).abs().max() < 1e-6
    ratios = [float(w[g] / w[0]) for w in (_weights_after("group", g, n) for n in (100, 400))]
    assert 0.01 < ratios[1] < ratios[0] < 0.1


def test_the_preconditioned_step_is_the_groups_mismatch_against_the_average():
    """(N / n_g)·∂L/∂ρ_g = 2 L W_g (W_g m_g / M − 1), M the weighted mean squared mismatch over all elements."""
    weights = ImportanceWeights(_SHAPES, "channel", "group")
    with torch.no_grad():
        weights.rho.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    start = torch.randn(weights.index.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    target = torch.zeros_like(start)
    end = torch.randn(weights.index.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = matching_loss(end, target, start, weights().double())
    (grad,) = torch.autograd.grad(loss, [weights.rho])
    w, d2 = weights.group_weights().double().detach(), (end - target).pow(2)
    m = torch.zeros_like(w).index_add_(0, weights.index, d2) / weights.counts.double()
    mean = (weights().double().detach().pow(2) * d2).mean()
    expected = 2 * loss.detach() * w * (w * m / mean - 1)
    assert torch.allclose(weights.precondition(grad).double(), expected, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="step"):
        ImportanceWeights(_SHAPES, "channel", "adam")


def _zero_mismatch_run(still: torch.Tensor | None, bound: float | None, iterations: int = 300) -> torch.Tensor:
    """Group weights after ``iterations`` on a problem where the conv biases are never moved by anyone (start,
    end and target agree there) and every other parameter ends 0.5 from its target."""
    weights = ImportanceWeights(_SHAPES, "channel", "group", still=still, bound=bound)
    biases = (weights.index >= 16) & (weights.index < 32)
    start = torch.randn(weights.index.numel(), generator=torch.Generator().manual_seed(0)).masked_fill(biases, 0.0)
    end = torch.full_like(start, 0.5).masked_fill(biases, 0.0)
    opt = torch.optim.SGD(weights.parameters(), lr=0.01, momentum=0.5)
    for _ in range(iterations):
        (grad,) = torch.autograd.grad(matching_loss(end, torch.zeros_like(start), start, weights()), [weights.rho])
        weights.rho.grad = weights.precondition(grad)
        opt.step()
        weights.project()
    return weights.group_weights().detach()


def test_parameters_nobody_moves_draw_all_weight_unless_held_or_bounded():
    """The collapse measured on ConvNet-3 (issue 30): groups with zero mismatch head for unbounded weight and
    starve the rest. Held (W = 1, outside the normalisation) they stay at 1 and the others keep mean 1; bounded,
    no weight passes b² times another."""
    loose = _zero_mismatch_run(None, None)
    assert loose[16:32].min() > 5 and loose[torch.arange(len(loose)) >= 32].max() < 0.5
    trajectory = torch.zeros(3, 16 * 27 + 16 + 640 + 10)
    trajectory[1:, :16 * 27] = 1.0
    trajectory[1:, 16 * 27 + 16:] = 1.0  # the conv biases (elements 432–447) never move
    still = still_elements(trajectory)
    assert still.sum() == 16 and still[16 * 27:16 * 27 + 16].all()
    held = _zero_mismatch_run(still, None)
    assert torch.equal(held[16:32], torch.ones(16))
    others = torch.cat([held[:16], held[32:]])
    assert torch.allclose(others, torch.ones_like(others), atol=0.05)  # every moving group matched alike
    bounded = _zero_mismatch_run(None, 10.0)
    assert float(bounded.max() / bounded.min()) <= 100 * (1 + 1e-5)


def test_a_bound_caps_how_far_a_mismatched_group_falls():
    weights = ImportanceWeights(_SHAPES, "channel", "group", bound=2.0)
    with torch.no_grad():
        weights.rho.fill_(5.0)
        weights.rho[3] = -5.0
    weights.project()
    assert float(weights.rho.detach().max()) == pytest.approx(math.log(2))
    assert float(weights.rho.detach().min()) == pytest.approx(-math.log(2))
    with pytest.raises(ValueError, match="bound"):
        ImportanceWeights(_SHAPES, "channel", "group", bound=1.0)
    with pytest.raises(ValueError, match="still"):
        ImportanceWeights(_SHAPES, "channel", "group", still=torch.zeros(5, dtype=torch.bool))


def test_mtt_normalises_each_data_set_as_its_code_does():
    """Issue 29: MTT's code normalises CIFAR-10 and CIFAR-100 with their own constants (ImageNet's elsewhere);
    experts, matching and evaluation follow the experts' choice, kept in each expert file."""
    from raydd.matching.match import expert_normalization
    from raydd.models.registry import IMAGENET_NORM, mtt_normalization

    name, norm = mtt_normalization("auto", 10, 32)
    assert name == "cifar10" and norm.mean == (0.4914, 0.4822, 0.4465) and norm.std == (0.2023, 0.1994, 0.2010)
    assert mtt_normalization("auto", 100, 32)[0] == "cifar100"
    assert mtt_normalization("auto", 10, 128) == ("imagenet", IMAGENET_NORM)
    with pytest.raises(ValueError, match="normalization"):
        mtt_normalization("svhn", 10, 32)
    assert expert_normalization({"normalization": {"name": "cifar10", "mean": list(norm.mean),
                                                   "std": list(norm.std)}}) == norm
    assert expert_normalization({}) == IMAGENET_NORM  # files written before it was kept


def test_experts_see_their_data_sets_normalisation():
    seen: list[torch.Tensor] = []
    model = get_model("convnet3", num_classes=2)
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    images = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    config = ExpertsConfig(data="d", out="o", epochs=1, batch_size=4, dsa=False)
    from raydd.models.registry import MTT_NORMS

    train_expert(model, images, torch.tensor([0, 1, 0, 1]), config, 0, normalization=MTT_NORMS["cifar10"])
    expected = (128 / 255 - torch.tensor([0.4914, 0.4822, 0.4465])) / torch.tensor([0.2023, 0.1994, 0.2010])
    assert torch.allclose(seen[0][0, :, 0, 0], expected, atol=1e-5)
