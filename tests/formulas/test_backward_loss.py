"""The losses' backward operators: each gradient written out as its CPU kernel evaluates it,
with numbers that count their own arithmetic, checked against torch's backward operator and
against the formulas, for every reduction (and weight); then what autograd runs for each loss
module, and a CrossEntropyLoss training step, with no uncounted operator."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from formulas.op_harness import count_ops
from formulas.scalar_oracle import Counted, Tally, evaluate_costliest, exp, maximum, total
from formulas.step_harness import count_step
from torch import nn

from opscope.formulas.activation import softmax_backward_ops
from opscope.formulas.loss import (
    BACKWARD_OPS_PER_ELEMENT,
    binary_cross_entropy_backward_ops,
    multi_margin_backward_ops,
    nll_loss_backward_ops,
)

aten = torch.ops.aten

pytestmark = pytest.mark.filterwarnings("ignore:`NLLLoss2d` has been deprecated")

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
N, C = 4, 5
EPSILON = 1e-12  # binary_cross_entropy_backward's clamp of x * (1 - x)


def float64(*shape: int, seed: int = 0, low: float = -3.0, high: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low


def grad_of(reduction: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The incoming gradient: one per element for ``'none'``, else one scalar."""
    return (
        float64(*shape, seed=7) if reduction == "none" else torch.tensor(0.7, dtype=torch.float64)
    )


# -- element-wise losses: the operator against its counted derivative ------------------------


def norm_of(reduction: str, elements: int, scale: float = 1.0) -> float:
    """The kernel's per-call constant: ``scale / n`` for ``'mean'``, else ``scale``."""
    return scale / elements if reduction == "mean" else scale


def mse(norm: float) -> Callable[..., Counted]:
    return lambda x, y, g: norm * (x - y) * g


def smooth_l1(norm: float, beta: float) -> Callable[..., Counted]:
    def derivative(x: Counted, y: Counted, g: Counted) -> Counted:
        z = x - y
        if z <= -beta:
            return -norm * g
        if z >= beta:
            return norm * g
        return norm * z * g / beta

    return derivative


def huber(norm: float, delta: float) -> Callable[..., Counted]:
    def derivative(x: Counted, y: Counted, g: Counted) -> Counted:
        z = x - y
        if z <= -delta:
            return -norm * g * delta
        if z >= delta:
            return norm * g * delta
        return norm * z * g

    return derivative


def soft_margin(norm: float) -> Callable[..., Counted]:
    def derivative(x: Counted, y: Counted, g: Counted) -> Counted:
        z = exp(-y * x)
        return (y * z) * -norm / (z + 1) * g

    return derivative


def binary_cross_entropy(elements: int, reduction: str) -> Callable[..., Counted]:
    def derivative(x: Counted, y: Counted, g: Counted, *weight: Counted) -> Counted:
        grad = g * (x - y) / maximum((1 - x) * x, EPSILON)
        if weight:
            grad = grad * weight[0]
        return grad / elements if reduction == "mean" else grad

    return derivative


SHAPE = (7, 7)
ELEMENTS = math.prod(SHAPE)
X = float64(*SHAPE)  # crosses every piece of smooth_l1 and huber (|x - y| up to 6)
Y = float64(*SHAPE, seed=1)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "name, op, derivative, extra, per_element",
    [
        ("mse", aten.mse_loss_backward, lambda r: mse(norm_of(r, ELEMENTS, 2.0)), [], 3),
        ("smooth_l1", aten.smooth_l1_loss_backward,
         lambda r: smooth_l1(norm_of(r, ELEMENTS), 0.8), [0.8], 6),
        ("huber", aten.huber_loss_backward, lambda r: huber(norm_of(r, ELEMENTS), 1.3), [1.3], 5),
    ],
)  # fmt: skip
def test_pointwise_backward(
    name: str, op: Any, derivative: Any, extra: list[Any], per_element: int, reduction: str
) -> None:
    g = grad_of(reduction, SHAPE)
    run = lambda: op(g, X, Y, REDUCTIONS[reduction], *extra)
    expected, costliest = evaluate_costliest(derivative(reduction), [X, Y, g])
    torch.testing.assert_close(run(), expected)
    counts = count_ops(run, "no_grad")
    assert not counts.uncounted
    assert counts.ops == costliest == per_element * ELEMENTS
    assert BACKWARD_OPS_PER_ELEMENT[f"{name}_loss_backward"] == per_element


def test_smooth_l1_backward_with_beta_zero_runs_the_same_kernel() -> None:
    """``beta = 0``: the kernel's ``z <= -0`` gives ``-norm * g`` at ``z = 0`` (no ``sign``)."""
    x = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    y, g = torch.zeros_like(x), torch.tensor(2.0, dtype=torch.float64)
    run = lambda: aten.smooth_l1_loss_backward(g, x, y, 2, 0.0)
    torch.testing.assert_close(run(), torch.tensor([2.0, -2.0, -2.0], dtype=torch.float64))
    assert count_ops(run, "no_grad").ops == 6 * 3


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_backward(reduction: str) -> None:
    y = torch.sign(Y)
    g = grad_of(reduction, SHAPE)
    run = lambda: aten.soft_margin_loss_backward(g, X, y, REDUCTIONS[reduction])
    expected, costliest = evaluate_costliest(soft_margin(norm_of(reduction, ELEMENTS)), [X, y, g])
    torch.testing.assert_close(run(), expected)
    assert count_ops(run, "no_grad").ops == costliest == 7 * ELEMENTS


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_backward_equals_its_kernels_operators(reduction: str) -> None:
    """The kernel is a chain of ATen operators: run one by one, the registry's element-wise
    formulas count what the backward operator's formula counts."""
    y, g = torch.sign(Y), grad_of(reduction, SHAPE)
    norm = norm_of(reduction, ELEMENTS)

    def kernel() -> torch.Tensor:
        z = torch.exp(-y * X)
        grad = torch.mul(y, z).mul_(-norm)
        return grad.div_(z.add_(1)).mul_(g)

    expected = aten.soft_margin_loss_backward(g, X, y, REDUCTIONS[reduction])
    torch.testing.assert_close(kernel(), expected)
    counts = count_ops(kernel, "no_grad")
    assert (
        counts.ops
        == count_ops(
            lambda: aten.soft_margin_loss_backward(g, X, y, REDUCTIONS[reduction]), "no_grad"
        ).ops
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_backward(reduction: str, weighted: bool) -> None:
    x, y = float64(*SHAPE, low=0.02, high=0.98), float64(*SHAPE, seed=1, low=0.0, high=1.0)
    weight = float64(*SHAPE, seed=2, low=0.5, high=1.5) if weighted else None
    g = grad_of(reduction, SHAPE)
    run = lambda: aten.binary_cross_entropy_backward(g, x, y, weight, REDUCTIONS[reduction])
    operands = [x, y, g] + ([weight] if weighted else [])
    expected, costliest = evaluate_costliest(binary_cross_entropy(ELEMENTS, reduction), operands)
    torch.testing.assert_close(run(), expected)
    counts = count_ops(run, "no_grad")
    assert not counts.uncounted
    assert counts.ops == costliest == (6 + weighted + (reduction == "mean")) * ELEMENTS
    assert counts.ops == binary_cross_entropy_backward_ops(
        ELEMENTS, weight=weighted, reduction=reduction
    )


# -- NLLLoss: the gradient at each target class ----------------------------------------------


def brute_force_nll_backward(
    g: torch.Tensor,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: str,
    total_weight: float,
) -> tuple[torch.Tensor, int]:
    """The kernel's gradient, zero but at each sample's target class: ``-w * g_i`` for
    ``'none'`` (``-g_i`` without a weight, a sign flip), else ``w * grad`` with
    ``grad = -(g / total_weight)`` (``'mean'``) or ``-g`` (``'sum'``) worked out once."""
    tally = Tally()
    axis = 0 if x.dim() == 1 else 1
    moved = x.movedim(axis, -1)
    result = torch.zeros_like(moved).reshape(-1, x.shape[axis])
    targets = target.reshape(-1).tolist()
    weights = None if weight is None else [Counted(v, tally) for v in weight.tolist()]
    if reduction == "none" and x.dim() > 1:
        grads = g.reshape(-1).tolist()
        for i, t in enumerate(targets):
            gi = Counted(grads[i], tally)
            result[i, t] = (-gi if weights is None else -weights[t] * gi).value
    else:
        incoming = Counted(float(g), tally)
        grad = -(incoming / total_weight) if reduction == "mean" else -incoming
        for i, t in enumerate(targets):
            result[i, t] = (grad if weights is None else weights[t] * grad).value
    return result.reshape(moved.shape).movedim(-1, axis), tally.ops


NLL_SHAPES = {
    "(N, C)": ((N, C), (N,), aten.nll_loss_forward, aten.nll_loss_backward),
    "(C,)": ((C,), (), aten.nll_loss_forward, aten.nll_loss_backward),
    "(N, C, H, W)": ((2, C, 3, 2), (2, 3, 2), aten.nll_loss2d_forward, aten.nll_loss2d_backward),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", NLL_SHAPES)
def test_nll_loss_backward(shape: str, weighted: bool, reduction: str) -> None:
    input_shape, target_shape, forward, backward = NLL_SHAPES[shape]
    x = torch.log_softmax(float64(*input_shape), dim=0 if len(input_shape) == 1 else 1)
    target = torch.randint(0, C, target_shape, generator=torch.Generator().manual_seed(3))
    weight = float64(C, seed=4, low=0.5, high=1.5) if weighted else None
    code = REDUCTIONS[reduction]
    _, total_weight = forward(x, target, weight, code, -100)
    g = grad_of(reduction, target_shape if len(input_shape) > 1 else ())
    run = lambda: backward(g, x, target, weight, code, -100, total_weight)
    expected, ops = brute_force_nll_backward(g, x, target, weight, reduction, float(total_weight))
    torch.testing.assert_close(run(), expected)
    counts = count_ops(run, "no_grad")
    assert not counts.uncounted
    samples = math.prod(target_shape)
    assert counts.ops == ops == nll_loss_backward_ops(samples, weight=weighted, reduction=reduction)


def test_nll_loss_backward_counts_ignored_samples_as_an_upper_bound() -> None:
    x = torch.log_softmax(float64(N, C), 1)
    target = torch.tensor([0, -100, 2, -100])
    weight = float64(C, seed=4, low=0.5, high=1.5)
    _, total_weight = aten.nll_loss_forward(x, target, weight, 2, -100)
    g = torch.tensor(1.0, dtype=torch.float64)
    grad = aten.nll_loss_backward(g, x, target, weight, 2, -100, total_weight)
    assert int((grad != 0).sum()) == 2  # two samples written, both counted as written
    run = lambda: aten.nll_loss_backward(g, x, target, weight, 2, -100, total_weight)
    assert count_ops(run, "no_grad").ops == nll_loss_backward_ops(4, weight=True, reduction="sum")


# -- MultiMarginLoss --------------------------------------------------------------------------


def brute_force_multi_margin_backward(
    g: torch.Tensor,
    x: torch.Tensor,
    target: torch.Tensor,
    p: int,
    margin: float,
    weight: torch.Tensor | None,
    reduction: str,
) -> tuple[torch.Tensor, int]:
    """The kernel's loops: per other class ``j`` of a sample of target ``y``,
    ``z = margin - x_y + x_j`` and, where ``z > 0``, ``h = c`` (``2 * c * z`` for ``p = 2``),
    times ``w_y``; ``d x_y = -sum h``; then every element times the incoming gradient."""
    tally = Tally()
    rows = x.reshape(-1, x.shape[-1]).tolist()
    samples, classes = len(rows), x.shape[-1]
    c = 1 / (samples * classes) if reduction == "mean" else 1 / classes
    grads = g.reshape(-1).tolist() if g.numel() > 1 else [float(g)] * samples
    weights = None if weight is None else weight.tolist()
    out = []
    for row, t, gi in zip(rows, target.reshape(-1).tolist(), grads):
        values = [Counted(v, tally) for v in row]
        contributions, terms = [Counted(0.0, tally)] * classes, []
        for j in range(classes):
            if j == t:
                continue
            z = margin - values[t] + values[j]
            if z > 0:
                h = Counted(c, tally) if p == 1 else 2 * c * z
                if weights is not None:
                    h = h * weights[t]
                contributions[j] = h
                terms.append(h)
        if terms:
            contributions[t] = -total(terms)
        out.append([(value * gi).value for value in contributions])
    return torch.tensor(out, dtype=x.dtype).reshape(x.shape), tally.ops


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("shape", [(N, C), (C,)])
def test_multi_margin_loss_backward(
    shape: tuple[int, ...], p: int, weighted: bool, reduction: str
) -> None:
    """With a margin that makes every ``z`` positive, the costliest path is the one taken:
    the brute force counts exactly what the formula does."""
    x = float64(*shape)
    target = torch.randint(0, C, shape[:-1], generator=torch.Generator().manual_seed(5))
    weight = float64(C, seed=4, low=0.5, high=1.5) if weighted else None
    g = grad_of(reduction, shape[:-1])
    for margin, exact in ((10.0, True), (0.5, False)):

        def run(margin: float = margin) -> torch.Tensor:
            return aten.multi_margin_loss_backward(
                g, x, target, p, margin, weight, REDUCTIONS[reduction]
            )

        expected, ops = brute_force_multi_margin_backward(
            g, x, target, p, margin, weight, reduction
        )
        torch.testing.assert_close(run(), expected)
        counts = count_ops(run, "no_grad")
        assert not counts.uncounted
        formula = multi_margin_backward_ops(shape, p=p, weight=weighted)
        assert counts.ops == formula
        assert ops == formula if exact else ops < formula  # an upper bound otherwise


# -- what autograd runs for each loss module --------------------------------------------------


class Loss(nn.Module):
    """A loss module called on the model's inputs (count_step calls ``model(*inputs)``)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.loss(*inputs)


def summed(output: torch.Tensor) -> torch.Tensor:
    """A scalar to call ``backward()`` on: the sum's gradient is an expansion, 0 operations."""
    return output.sum() if output.dim() else output


def leaf(*shape: int, low: float = -3.0, high: float = 3.0) -> torch.Tensor:
    return float64(*shape, low=low, high=high).requires_grad_()


def classes(*shape: int) -> torch.Tensor:
    return torch.randint(0, C, shape, generator=torch.Generator().manual_seed(3))


WEIGHT = float64(C, seed=4, low=0.5, high=1.5)

# name: (the loss from its reduction, its inputs, the expected backward count by reduction)
MODULES: dict[str, tuple[Callable[[str], nn.Module], Callable[[], tuple[Any, ...]], Any]] = {
    "MSELoss": (
        lambda r: nn.MSELoss(reduction=r), lambda: (leaf(N, C), float64(N, C, seed=1)),
        lambda r: 3 * N * C,
    ),
    "SmoothL1Loss": (
        lambda r: nn.SmoothL1Loss(reduction=r, beta=0.5),
        lambda: (leaf(N, C), float64(N, C, seed=1)), lambda r: 6 * N * C,
    ),
    "HuberLoss": (
        lambda r: nn.HuberLoss(reduction=r, delta=0.5),
        lambda: (leaf(N, C), float64(N, C, seed=1)), lambda r: 5 * N * C,
    ),
    "SoftMarginLoss": (
        lambda r: nn.SoftMarginLoss(reduction=r),
        lambda: (leaf(N, C), torch.sign(float64(N, C, seed=1))), lambda r: 7 * N * C,
    ),
    "BCELoss": (
        lambda r: nn.BCELoss(reduction=r),
        lambda: (leaf(N, C, low=0.05, high=0.95), float64(N, C, seed=1, low=0, high=1)),
        lambda r: binary_cross_entropy_backward_ops(N * C, weight=False, reduction=r),
    ),
    "BCELoss weight": (
        lambda r: nn.BCELoss(reduction=r, weight=WEIGHT),
        lambda: (leaf(N, C, low=0.05, high=0.95), float64(N, C, seed=1, low=0, high=1)),
        lambda r: binary_cross_entropy_backward_ops(N * C, weight=True, reduction=r),
    ),
    "NLLLoss": (
        lambda r: nn.NLLLoss(reduction=r), lambda: (leaf(N, C), classes(N)),
        lambda r: nll_loss_backward_ops(N, weight=False, reduction=r),
    ),
    "NLLLoss weight": (
        lambda r: nn.NLLLoss(reduction=r, weight=WEIGHT), lambda: (leaf(N, C), classes(N)),
        lambda r: nll_loss_backward_ops(N, weight=True, reduction=r),
    ),
    "NLLLoss unbatched": (
        lambda r: nn.NLLLoss(reduction=r, weight=WEIGHT), lambda: (leaf(C), classes()),
        lambda r: nll_loss_backward_ops(1, weight=True, reduction=r),
    ),
    "NLLLoss 2d": (  # nll_loss2d_backward
        lambda r: nn.NLLLoss(reduction=r, weight=WEIGHT),
        lambda: (leaf(2, C, 3, 2), classes(2, 3, 2)),
        lambda r: nll_loss_backward_ops(12, weight=True, reduction=r),
    ),
    "NLLLoss 1d": (  # (N, C, L): viewed as (N, C, 1, L), nll_loss2d_backward
        lambda r: nn.NLLLoss(reduction=r), lambda: (leaf(2, C, 3), classes(2, 3)),
        lambda r: nll_loss_backward_ops(6, weight=False, reduction=r),
    ),
    "CrossEntropyLoss": (
        lambda r: nn.CrossEntropyLoss(reduction=r), lambda: (leaf(N, C), classes(N)),
        lambda r: nll_loss_backward_ops(N, weight=False, reduction=r)
        + softmax_backward_ops((N, C), 1),
    ),
    "CrossEntropyLoss weight": (
        lambda r: nn.CrossEntropyLoss(reduction=r, weight=WEIGHT),
        lambda: (leaf(N, C), classes(N)),
        lambda r: nll_loss_backward_ops(N, weight=True, reduction=r)
        + softmax_backward_ops((N, C), 1),
    ),
    "CrossEntropyLoss 2d": (
        lambda r: nn.CrossEntropyLoss(reduction=r, weight=WEIGHT),
        lambda: (leaf(2, C, 3, 2), classes(2, 3, 2)),
        lambda r: nll_loss_backward_ops(12, weight=True, reduction=r)
        + softmax_backward_ops((2, C, 3, 2), 1),
    ),
    "MultiMarginLoss": (
        lambda r: nn.MultiMarginLoss(reduction=r), lambda: (leaf(N, C), classes(N)),
        lambda r: multi_margin_backward_ops((N, C), p=1, weight=False),
    ),
    "MultiMarginLoss p=2 weight": (
        lambda r: nn.MultiMarginLoss(p=2, weight=WEIGHT, reduction=r),
        lambda: (leaf(N, C), classes(N)),
        lambda r: multi_margin_backward_ops((N, C), p=2, weight=True),
    ),
}  # fmt: skip


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", MODULES)
def test_loss_module_backward(name: str, reduction: str) -> None:
    factory, inputs, expected = MODULES[name]
    backward = count_step(Loss(factory(reduction)), *inputs(), loss=summed)["backward"]
    assert not backward.uncounted
    assert backward.ops == expected(reduction)


def test_cross_entropy_training_step_leaves_nothing_uncounted() -> None:
    torch.manual_seed(0)
    model = nn.Linear(8, C)
    x, target = torch.randn(N, 8), classes(N)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    phases = count_step(
        model, x, loss=lambda logits: criterion(logits, target), optimizer=optimizer
    )
    for phase in ("forward", "backward", "optimizer"):
        assert not phases[phase].uncounted, phase
    backward = phases["backward"]
    assert backward.by_op["aten.nll_loss_backward.default"] == nll_loss_backward_ops(
        N, weight=False, reduction="mean"
    )
    assert backward.by_family["loss"] == 1
