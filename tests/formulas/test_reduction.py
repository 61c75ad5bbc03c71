"""Reductions: each counted against its definition evaluated group by group with counting
scalars, the values checked against torch's."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from formulas.op_harness import GRAD_MODES, count_ops
from formulas.scalar_oracle import Counted, evaluate_groups, exp, log, maximum, sqrt, total

from opscope.formulas.reduction import reduction_ops, vector_norm_per_group


def mean(values: list[Counted]) -> Counted:
    return total(values) / len(values)


def variance(values: list[Counted], correction: int = 1) -> Counted:
    centre = mean(values)
    centred = [value - centre for value in values]
    return total([c * c for c in centred]) / (len(values) - correction)


def squares(values: list[Counted]) -> Counted:
    return total([value * value for value in values])


def largest(values: list[Counted]) -> Counted:
    result = values[0]
    for value in values[1:]:
        result = maximum(value, result)
    return result


def running(values: list[Counted]) -> list[Counted]:
    return list(itertools.accumulate(values, lambda a, b: a + b))


# name: (torch function of (x, dim), definition of one group)
CASES: dict[str, tuple[Callable[[torch.Tensor, int], Any], Callable[[list[Counted]], Any]]] = {
    "sum": (lambda x, d: x.sum(d), total),
    "mean": (lambda x, d: x.mean(d, keepdim=True), mean),
    "amax": (lambda x, d: x.amax(d), largest),
    "max(dim)": (lambda x, d: x.max(d).values, largest),
    "var": (lambda x, d: x.var(d), variance),
    "var(biased)": (lambda x, d: x.var(d, correction=0), lambda v: variance(v, 0)),
    "std": (lambda x, d: x.std(d), lambda v: sqrt(variance(v))),
    "logsumexp": (lambda x, d: x.logsumexp(d), lambda v: log(total([exp(e) for e in v]))),
    "norm 2": (lambda x, d: torch.linalg.vector_norm(x, dim=d), lambda v: sqrt(squares(v))),
    "norm 1": (lambda x, d: torch.linalg.vector_norm(x, 1, dim=d),
               lambda v: total([abs(e) for e in v])),
    "norm inf": (lambda x, d: torch.linalg.vector_norm(x, math.inf, dim=d),
                 lambda v: largest([abs(e) for e in v])),
    "Tensor.norm": (lambda x, d: x.norm(dim=d), lambda v: sqrt(squares(v))),
    "cumsum": (lambda x, d: x.cumsum(d).movedim(d, -1), running),
}  # fmt: skip


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("name", CASES)
def test_reduction_counts_its_definition(name: str, dim: int, grad_mode: str) -> None:
    function, definition = CASES[name]
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5)
    values, expected_ops = evaluate_groups(definition, x, dim)
    result = function(x, dim)
    assert torch.allclose(result.reshape(values.shape), values.to(result.dtype), atol=1e-5)
    counts = count_ops(lambda: function(x, dim), grad_mode)
    assert not counts.uncounted
    assert counts.ops == expected_ops, counts.by_op


def test_full_reductions_and_empty_groups() -> None:
    x = torch.randn(3, 4)
    assert count_ops(lambda: x.sum()).ops == 11
    assert count_ops(lambda: x.mean()).ops == 12
    assert count_ops(lambda: torch.randn(3, 0).sum(1)).ops == 0
    assert reduction_ops(12, 0, lambda r: r) == 0


def test_vector_norm_orders() -> None:
    assert [vector_norm_per_group(p)(4) for p in (0, 1, 2, 0.5, -math.inf)] == [7, 3, 8, 8, 3]
