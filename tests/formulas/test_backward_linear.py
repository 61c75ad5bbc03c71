"""The matrix products in the backward pass: ``nn.Linear`` and the products of ``matmul``,
``bmm`` and ``einsum`` run their gradients as ``mm``/``bmm`` (already counted) and a ``sum`` for
the bias; their counts against closed forms and their MACs against ``FlopCounterMode``."""

from __future__ import annotations

import pytest
import torch
from formulas.step_harness import count_step, flop_counter_phases
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from opscope.formulas.linear import matmul_ops


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", [(5,), (2, 5)], ids=["2-d", "3-d"])
@pytest.mark.parametrize("frozen", ["none", "input", "weight"])
def test_linear_backward(bias: bool, leading: tuple[int, ...], frozen: str) -> None:
    """``grad_input = g @ W`` (N rows of ``in`` dot products of ``out`` pairs), ``grad_weight
    = g^T @ x`` (``out * in`` dot products of ``N`` pairs), ``grad_bias = sum(g)`` (``out``
    sums of ``N``): each only when something needs it."""
    linear = nn.Linear(4, 3, bias=bias)
    linear.weight.requires_grad_(frozen != "weight")
    x = torch.randn(*leading, 4, requires_grad=frozen != "input")
    rows = x.numel() // 4
    backward = count_step(linear, x)["backward"]
    expected = (matmul_ops(rows, 3, 4) if x.requires_grad else 0) + (
        matmul_ops(3, rows, 4) if frozen != "weight" else 0
    ) + (3 * (rows - 1) if bias else 0)  # fmt: skip
    assert not backward.uncounted
    assert backward.ops == expected
    flops = flop_counter_phases(linear, x)["backward"]
    assert 2 * backward.macs == flops


@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    m=st.integers(1, 4), k=st.integers(1, 4), n=st.integers(1, 4),
    how=st.sampled_from(["matmul", "bmm", "einsum"]),
)  # fmt: skip
@settings(max_examples=30, deadline=None)
def test_product_backward_macs(batch: list[int], m: int, k: int, n: int, how: str) -> None:
    a = torch.randn(*batch, m, k, requires_grad=True)
    b = torch.randn(*batch, k, n, requires_grad=True)
    if how == "bmm":
        a, b = (t.detach().reshape(-1, *t.shape[-2:]).requires_grad_() for t in (a, b))

    class Product(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            if how == "einsum":
                return torch.einsum("...ij,...jk->...ik", a, b)
            return torch.bmm(a, b) if how == "bmm" else a @ b

    backward = count_step(Product(), a, b)["backward"]
    assert not backward.uncounted
    assert 2 * backward.macs == flop_counter_phases(Product(), a, b)["backward"]


def test_bilinear_backward_runs_trilinear_with_the_gradient() -> None:
    """``nn.Bilinear(3, 5, 7)`` on ``N = 2``: its backward runs ``_trilinear`` once per
    gradient, the gradient in place of that operand, each evaluated as torch's ``_trilinear``
    does (per output feature ``o`` of the 7, then, where the feature is summed over, the 7
    partial results added):

    * ``x1``: ``g * W_o`` (30 products), summed with ``x2`` over ``in2`` (6 dot products of 5:
      54), for every ``o``; the 7 partial ``(2, 3)`` results added: ``7 * 84 + 6 * 6``;
    * ``W``: ``g * x1`` (6), then summed with ``x2`` over the batch (15 dot products of 2: 45),
      for every ``o``: ``7 * 51``;
    * ``x2``: ``x1`` with ``W_o`` over ``in1`` (10 dot products of 3: 50), times ``g`` (10),
      for every ``o``; the 7 partial ``(2, 5)`` results added: ``7 * 60 + 6 * 10``;
    * the bias: 7 sums of 2."""

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bilinear = nn.Bilinear(3, 5, 7)

        def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
            return self.bilinear(x1, x2)

    x1, x2 = torch.randn(2, 3, requires_grad=True), torch.randn(2, 5, requires_grad=True)
    backward = count_step(Pair(), x1, x2)["backward"]
    assert not backward.uncounted
    assert backward.ops == (7 * 84 + 36) + 7 * 51 + (7 * 60 + 60) + 7
