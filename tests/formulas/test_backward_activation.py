"""The activations' backward operators: each derivative written out as the kernel evaluates
it, with numbers that count their own arithmetic, checked against torch's gradients and
against the formulas; the softmax family's backward row by row; and what autograd runs for
every activation module."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from formulas.op_harness import count_ops
from formulas.scalar_oracle import (
    Counted,
    Tally,
    erf,
    evaluate_costliest,
    exp,
    log1p,
    tanh,
    total,
)
from formulas.step_harness import count_step
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from opscope.formulas import activation

aten = torch.ops.aten

SQRT1_2 = math.sqrt(0.5)
GELU_PDF = 1 / math.sqrt(2 * math.pi)  # the kernel's M_2_SQRTPI * M_SQRT1_2 * 0.5
TANH_BETA = math.sqrt(2 / math.pi)
TANH_KAPPA = 0.044715
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def sigmoid(x: Counted) -> Counted:
    return 1 / (1 + exp(-x))


def silu(g: Counted, x: Counted) -> Counted:
    s = sigmoid(x)
    return g * s * (1 + x * (1 - s))


def mish(g: Counted, x: Counted) -> Counted:
    s, t = sigmoid(x), tanh(log1p(exp(x)))
    return g * (t + x * s * (1 - t * t))


def softplus(g: Counted, x: Counted, beta: float = 2.0, threshold: float = 5.0) -> Counted:
    scaled = x * beta  # shared by the test and the exponential
    if scaled > threshold:
        return g
    z = exp(scaled)
    return g * z / (z + 1)


def gelu_tanh(g: Counted, x: Counted) -> Counted:
    x_sq = x * x
    t = tanh(TANH_BETA * (x + TANH_KAPPA * (x_sq * x)))
    left_derivative = 0.5 * (1 + t)
    inner_derivative = TANH_BETA * (1 + (3 * TANH_KAPPA) * x_sq)
    right_derivative = (0.5 * x) * (1 - t * t) * inner_derivative
    return g * (left_derivative + right_derivative)


def log_sigmoid(g: Counted, x: Counted, buffer: Counted) -> Counted:
    ratio = buffer / (1 + buffer)
    return ((1 - ratio) if x < 0 else (0 - -ratio)) * g


def elu(alpha: float, scale: float, input_scale: float, from_result: bool) -> Callable[..., Any]:
    """ELU's derivative times ``g``, from the input or (after an in-place ELU) from the output,
    a multiplication by ``input_scale`` written only when it is not 1."""

    def scaled(v: Counted) -> Counted:
        return v * input_scale if input_scale != 1 else v

    def derivative(g: Counted, v: Counted) -> Counted:
        if v <= 0:
            if from_result:
                return scaled(g) * (v + alpha * scale)
            return g * (alpha * scale * input_scale) * exp(scaled(v))
        return g * scale

    return derivative


# Each backward operator: its derivative times g as its kernel evaluates it, the operands it
# takes after the gradient, and its arguments; the per-element cost is written independently.
Case = tuple[Callable[..., Any], Callable[..., Any], Callable[[torch.Tensor], list[Any]], int]
GRID = torch.linspace(-6.0, 6.0, 49, dtype=torch.float64).reshape(7, 7)  # every piece
CASES: dict[str, Case] = {
    "threshold_backward": (
        aten.threshold_backward, lambda g, x: 0.0 if x <= 0.5 else g,
        lambda x: [x, 0.5], 1,
    ),
    "hardtanh_backward": (
        aten.hardtanh_backward, lambda g, x: 0.0 if x <= -1 or x >= 2 else g,
        lambda x: [x, -1.0, 2.0], 2,
    ),
    "hardshrink_backward": (
        aten.hardshrink_backward, lambda g, x: 0.0 if x >= -0.7 and x <= 0.7 else g,
        lambda x: [x, 0.7], 2,
    ),
    "softshrink_backward": (
        aten.softshrink_backward, lambda g, x: 0.0 if x >= -0.7 and x <= 0.7 else g,
        lambda x: [x, 0.7], 2,
    ),
    "leaky_relu_backward": (
        aten.leaky_relu_backward, lambda g, x: g if x > 0 else g * 0.2,
        lambda x: [x, 0.2, False], 2,
    ),
    "sigmoid_backward": (
        aten.sigmoid_backward, lambda g, y: g * (1 - y) * y, lambda x: [torch.sigmoid(x)], 3,
    ),
    "tanh_backward": (
        aten.tanh_backward, lambda g, y: g * (1 - y * y), lambda x: [torch.tanh(x)], 3,
    ),
    "silu_backward": (
        aten.silu_backward,
        silu,
        lambda x: [x], 8,
    ),
    "mish_backward": (
        aten.mish_backward,
        mish,
        lambda x: [x], 12,
    ),
    "hardsigmoid_backward": (
        aten.hardsigmoid_backward, lambda g, x: g * (1 / 6) if x > -3 and x < 3 else 0.0,
        lambda x: [x], 3,
    ),
    "hardswish_backward": (
        aten.hardswish_backward,
        lambda g, x: 0.0 if x <= -3 else (g * (x / 3 + 0.5) if x < 3 else g),
        lambda x: [x], 5,
    ),
    "softplus_backward": (
        aten.softplus_backward,
        softplus,
        lambda x: [x, 2.0, 5.0], 6,
    ),
    "log_sigmoid_backward": (
        aten.log_sigmoid_backward, log_sigmoid,
        lambda x: [x, torch.exp(-x.abs())], 5,
    ),
    "gelu_backward": (
        aten.gelu_backward,
        lambda g, x: g * (0.5 * (1 + erf(x * SQRT1_2)) + x * (GELU_PDF * exp(x * x * -0.5))),
        lambda x: [x], 11,
    ),
    "gelu_backward tanh": (
        lambda g, x: aten.gelu_backward(g, x, approximate="tanh"), gelu_tanh, lambda x: [x], 18,
    ),
    "elu_backward": (
        aten.elu_backward, elu(0.5, 1.0, 1.0, False),
        lambda x: [0.5, 1.0, 1.0, False, x], 4,
    ),
    "elu_backward selu": (
        aten.elu_backward, elu(SELU_ALPHA, SELU_SCALE, 1.0, False),
        lambda x: [SELU_ALPHA, SELU_SCALE, 1.0, False, x], 4,
    ),
    "elu_backward celu": (  # CELU(alpha=2): input_scale 1/2
        aten.elu_backward, elu(2.0, 1.0, 0.5, False),
        lambda x: [2.0, 1.0, 0.5, False, x], 5,
    ),
    "elu_backward from result": (
        aten.elu_backward, elu(0.5, 1.0, 1.0, True),
        lambda x: [0.5, 1.0, 1.0, True, torch.nn.functional.elu(x, 0.5)], 3,
    ),
    "elu_backward celu from result": (
        aten.elu_backward, elu(2.0, 1.0, 0.5, True),
        lambda x: [2.0, 1.0, 0.5, True, torch.nn.functional.celu(x, 2.0)], 4,
    ),
}  # fmt: skip


def tensors_of(arguments: list[Any]) -> list[torch.Tensor]:
    return [a for a in arguments if isinstance(a, torch.Tensor)]


@pytest.mark.parametrize("name", CASES)
def test_backward_operator_equals_its_counted_derivative(name: str) -> None:
    op, definition, arguments_of, per_element = CASES[name]
    torch.manual_seed(0)
    g = torch.randn_like(GRID)
    arguments = arguments_of(GRID)
    operands = [g, *tensors_of(arguments)]
    expected, costliest = evaluate_costliest(definition, operands)
    torch.testing.assert_close(op(g, *arguments), expected)
    counts = count_ops(lambda: op(g, *arguments), "no_grad")
    assert not counts.uncounted
    assert counts.ops == costliest == per_element * GRID.numel()


def test_every_backward_operator_in_the_table_is_tested() -> None:
    tested = {name.split()[0] for name in CASES}
    assert set(activation.BACKWARD_OPS_PER_ELEMENT) <= tested


def test_rrelu_backward_multiplies_by_the_drawn_slopes_in_training() -> None:
    x, g, noise = torch.randn(4, 5), torch.randn(4, 5), torch.rand(4, 5)
    training = count_ops(lambda: aten.rrelu_with_noise_backward(g, x, noise, 0.1, 0.3, True, False))
    evaluation = count_ops(
        lambda: aten.rrelu_with_noise_backward(g, x, noise, 0.1, 0.3, False, False)
    )
    assert (training.ops, evaluation.ops) == (20 * 1, 20 * 2)


def test_prelu_backward_one_comparison_picks_both_gradients() -> None:
    x = GRID.reshape(1, 7, 7)
    weight, g = torch.rand(7, 1, dtype=torch.float64), torch.randn_like(x)
    tally = Tally()
    expected_input, expected_weight = [], []
    for value, slope, grad in zip(
        x.flatten().tolist(), weight.expand_as(x).flatten().tolist(), g.flatten().tolist()
    ):
        v, s, d = (Counted(number, tally) for number in (value, slope, grad))
        positive = v > 0
        expected_input.append(d.value if positive else (s * d).value)
        expected_weight.append(0.0 if positive else (v * d).value)
        if positive:  # the costliest piece is charged: the two products
            tally.ops += 2
    grad_input, grad_weight = aten._prelu_kernel_backward(g, x, weight)
    torch.testing.assert_close(grad_input.flatten(), torch.tensor(expected_input, dtype=x.dtype))
    torch.testing.assert_close(grad_weight.flatten(), torch.tensor(expected_weight, dtype=x.dtype))
    counts = count_ops(lambda: aten._prelu_kernel_backward(g, x, weight))
    assert counts.ops == tally.ops == 3 * 49


def test_glu_backward() -> None:
    """Per output element: ``s = sigmoid(b)`` (3), ``g * s`` (1), ``(1 - s) * s * a * g`` (4)."""
    x, g = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    a, b = x.chunk(2, dim=1)
    tally = Tally()
    first, second = [], []
    for left, right, grad in zip(*(t.flatten().tolist() for t in (a, b, g))):
        av, bv, gv = (Counted(number, tally) for number in (left, right, grad))
        s = sigmoid(bv)
        first.append((gv * s).value)
        second.append(((1 - s) * s * av * gv).value)
    expected = torch.cat(
        [torch.tensor(part, dtype=x.dtype).reshape(3, 4) for part in (first, second)], 1
    )
    torch.testing.assert_close(aten.glu_backward(g, x, 1), expected)
    assert count_ops(lambda: aten.glu_backward(g, x, 1)).ops == tally.ops == 12 * 8


def brute_force_softmax_backward(
    g: torch.Tensor, y: torch.Tensor, dim: int, log: bool
) -> tuple[torch.Tensor, int]:
    """Row by row: ``y * (g - sum(g * y))``, or ``g - exp(y) * sum(g)`` for the log-softmax."""
    tally = Tally()
    rows_g, rows_y = (t.movedim(dim, -1) for t in (g, y))
    out = []
    for row_g, row_y in zip(
        rows_g.reshape(-1, g.shape[dim]).tolist(), rows_y.reshape(-1, g.shape[dim]).tolist()
    ):
        gs, ys = [Counted(v, tally) for v in row_g], [Counted(v, tally) for v in row_y]
        if log:
            sum_g = total(gs)
            out.append([(gi - exp(yi) * sum_g).value for gi, yi in zip(gs, ys)])
        else:
            dot = total([gi * yi for gi, yi in zip(gs, ys)])
            out.append([(yi * (gi - dot)).value for gi, yi in zip(gs, ys)])
    result = torch.tensor(out, dtype=g.dtype).reshape(rows_g.shape).movedim(-1, dim)
    return result, tally.ops


@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    axis=st.integers(0, 3),
    log=st.booleans(),
)
@settings(max_examples=30, deadline=None)
def test_softmax_backward_equals_a_brute_force_count(
    shape: list[int], axis: int, log: bool
) -> None:
    dim = axis % len(shape)
    x = torch.randn(shape, dtype=torch.float64)
    y = torch.log_softmax(x, dim) if log else torch.softmax(x, dim)
    g = torch.randn_like(x)
    op = aten._log_softmax_backward_data if log else aten._softmax_backward_data
    expected, ops = brute_force_softmax_backward(g, y, dim, log)
    torch.testing.assert_close(op(g, y, dim, x.dtype), expected)
    counts = count_ops(lambda: op(g, y, dim, x.dtype))
    assert counts.ops == ops == activation.softmax_backward_ops(tuple(shape), dim)


class OnACopy(nn.Module):
    """Runs an in-place activation on a copy of the input (a leaf cannot be overwritten)."""

    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x.clone())


# Every activation module's backward: the operators autograd runs, counted (no uncounted one),
# against the per-element cost of the backward operator it runs (element-wise modules) or the
# softmax's backward.
MODULES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "ReLU": (nn.ReLU, 1),
    "ReLU6": (nn.ReLU6, 2),
    "Hardtanh": (nn.Hardtanh, 2),
    "Threshold": (lambda: nn.Threshold(0.1, 20.0), 1),
    "Hardshrink": (nn.Hardshrink, 2),
    "Softshrink": (nn.Softshrink, 2),
    "LeakyReLU": (nn.LeakyReLU, 2),
    "RReLU": (nn.RReLU, 1),  # training: g * the drawn slopes
    "ELU": (nn.ELU, 4),
    "ELU inplace": (lambda: OnACopy(nn.ELU(inplace=True)), 3),  # from the output
    "CELU": (lambda: nn.CELU(2.0), 5),
    "SELU": (nn.SELU, 4),
    "GELU": (nn.GELU, 11),
    "GELU tanh": (lambda: nn.GELU(approximate="tanh"), 18),
    "SiLU": (nn.SiLU, 8),
    "Mish": (nn.Mish, 12),
    "Hardswish": (nn.Hardswish, 5),
    "Hardsigmoid": (nn.Hardsigmoid, 3),
    "Sigmoid": (nn.Sigmoid, 3),
    "Tanh": (nn.Tanh, 3),
    "Softplus": (nn.Softplus, 6),
    "LogSigmoid": (nn.LogSigmoid, 5),
}


@pytest.mark.parametrize("name", MODULES)
def test_activation_module_backward(name: str) -> None:
    factory, per_element = MODULES[name]
    x = torch.randn(2, 3, 4, requires_grad=True)
    counts = count_step(factory().train(), x, loss=lambda out: (out * 1.0).sum())
    backward = counts["backward"]
    assert not backward.uncounted
    # the loss's own backward: mul by 1.0 (24 ops); then the activation's operator
    assert backward.ops == 24 + per_element * 24


@pytest.mark.parametrize("module", [nn.Softmax(dim=1), nn.LogSoftmax(dim=-1), nn.Softmin(dim=1)])
def test_softmax_module_backward(module: nn.Module) -> None:
    x = torch.randn(2, 3, 4, requires_grad=True)
    backward = count_step(module, x, loss=lambda out: (out * 1.0).sum())["backward"]
    assert not backward.uncounted
    dim = module.dim
    assert backward.ops == 24 + activation.softmax_backward_ops((2, 3, 4), dim)
