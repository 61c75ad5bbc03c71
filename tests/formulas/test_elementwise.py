"""Point-wise operators: each counted against its scalar definition evaluated at every output
element with counting scalars (broadcasting included), the values checked against torch's."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from formulas.op_harness import GRAD_MODES, count_ops
from formulas.scalar_oracle import evaluate, exp, floor, log, maximum, minimum, sqrt

from opscope.formulas.elementwise import OPS_PER_OUTPUT_ELEMENT

S = (2, 1, 3)  # broadcasts with T into (2, 4, 3)
T = (4, 3)

# name: (torch function, operand shapes, definition per element, operand transform)
CASES: dict[str, tuple[Callable[..., Any], tuple[tuple[int, ...], ...], Callable[..., Any]]] = {
    "add (broadcast)": (torch.add, (S, T), lambda a, b: a + b),
    "add alpha": (lambda a, b: torch.add(a, b, alpha=2), (S, T), lambda a, b: a + 2 * b),
    "add scalar": (lambda a: a + 1.5, (T,), lambda a: a + 1.5),
    "sub": (torch.sub, (S, T), lambda a, b: a - b),
    "rsub alpha": (lambda a, b: torch.rsub(a, b, alpha=3), (T, T), lambda a, b: b - 3 * a),
    "mul": (torch.mul, (S, T), lambda a, b: a * b),
    "div": (torch.div, (S, T), lambda a, b: a / b),
    "div floor": (lambda a, b: torch.div(a, b, rounding_mode="floor"), (T, T),
                  lambda a, b: floor(a / b)),
    "reciprocal": (torch.reciprocal, (T,), lambda a: 1 / a),
    "gt": (lambda a: a > 0, (T,), lambda a: a > 0),
    "maximum": (torch.maximum, (S, T), maximum),
    "max(other)": (torch.max, (S, T), maximum),
    # both comparisons for every element: counts never depend on values
    "clamp": (lambda a: a.clamp(-0.5, 0.5), (T,), lambda a: minimum(maximum(a, -0.5), 0.5)),
    "clamp_min": (lambda a: a.clamp_min(0.1), (T,), lambda a: maximum(a, 0.1)),
    "exp": (torch.exp, (T,), exp),
    "log": (lambda a: torch.log(a.abs()), (T,), lambda a: log(abs(a))),
    "sqrt": (lambda a: torch.sqrt(a.abs()), (T,), lambda a: sqrt(abs(a))),
    "rsqrt": (lambda a: torch.rsqrt(a.abs()), (T,), lambda a: 1 / sqrt(abs(a))),
    "pow 2": (lambda a: a.pow(2), (T,), lambda a: a.apply(lambda v: v**2)),
    "square": (torch.square, (T,), lambda a: a * a),
    "neg": (torch.neg, (T,), lambda a: -a),
    "abs": (torch.abs, (T,), abs),
    "addcmul": (lambda a, b, c: torch.addcmul(a, b, c, value=0.5), (T, S, T),
                lambda a, b, c: a + 0.5 * (b * c)),
    "addcdiv": (torch.addcdiv, (T, T, T), lambda a, b, c: a + b / c),
    "lerp": (lambda a, b: torch.lerp(a, b, 0.3), (T, T), lambda a, b: a + 0.3 * (b - a)),
    "where": (lambda a, b: torch.where(a > 0, a, b), (T, T), lambda a, b: a if a > 0 else b),
    "add_ (in place)": (lambda a, b: a.clone().add_(b), (T, T), lambda a, b: a + b),
}  # fmt: skip


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize("name", CASES)
def test_elementwise_counts_its_scalar_definition(name: str, grad_mode: str) -> None:
    function, shapes, definition = CASES[name]
    torch.manual_seed(0)
    operands = [torch.randn(shape) for shape in shapes]
    expected_value, expected_ops = evaluate(definition, operands)
    counts = count_ops(lambda: function(*operands), grad_mode)
    assert torch.allclose(function(*operands).double(), expected_value.double(), atol=1e-6)
    assert not counts.uncounted
    assert counts.ops == expected_ops, counts.by_op
    assert counts.macs == 0


def test_costs_table_is_documented_and_sane() -> None:
    assert OPS_PER_OUTPUT_ELEMENT["neg"] == OPS_PER_OUTPUT_ELEMENT["abs"] == 0
    assert all(0 <= cost <= 4 for cost in OPS_PER_OUTPUT_ELEMENT.values())


def test_empty_output_costs_nothing() -> None:
    assert count_ops(lambda: torch.randn(0, 3) + 1).ops == 0


def test_nonzero_compares_every_input_element() -> None:
    x = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    assert count_ops(lambda: torch.nonzero(x)).ops == math.prod(x.shape)
