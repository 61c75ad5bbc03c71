"""Linear and Bilinear formulas: hand-computed cases, a brute-force count and FlopCounterMode."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear
from torch.utils.flop_counter import FlopCounterMode

import opscope.formulas.linear  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.linear import BilinearConfig, LinearConfig, bilinear_ops, linear_ops
from helpers import profiled_ops


def flop_counter_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


# Each case: the module, its input shape, and N * out * (2 * in [- 1 without bias]) by hand.
LINEAR_CASES = {
    "bias": (nn.Linear(4, 3), (6, 4), 6 * 3 * (2 * 4)),
    "no bias": (nn.Linear(4, 3, bias=False), (6, 4), 6 * 3 * (2 * 4 - 1)),
    # unbatched (in,): N = 1
    "unbatched": (nn.Linear(5, 2), (5,), 1 * 2 * (2 * 5)),
    # 3-D: N = 2 * 7, only the last dim is features
    "3-D": (nn.Linear(3, 4, bias=False), (2, 7, 3), 2 * 7 * 4 * (2 * 3 - 1)),
    "4-D": (nn.Linear(2, 2), (2, 3, 5, 2), 2 * 3 * 5 * 2 * (2 * 2)),
    # one feature in, no bias: one multiplication per output, no addition
    "single product": (nn.Linear(1, 3, bias=False), (4, 1), 4 * 3 * 1),
    # the subclass MultiheadAttention uses for out_proj resolves to Linear
    "NonDynamicallyQuantizableLinear": (
        NonDynamicallyQuantizableLinear(4, 4),
        (3, 4),
        3 * 4 * (2 * 4),
    ),
}


@pytest.mark.parametrize("case", LINEAR_CASES, ids=list(LINEAR_CASES))
def test_linear_hand_computed(case: str) -> None:
    module, input_shape, expected = LINEAR_CASES[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


def test_lazy_linear_is_counted_on_its_first_call() -> None:
    module = nn.LazyLinear(3)
    with Profiler(module) as p:
        module(torch.randn(2, 5, 4))
    (record,) = p.records
    assert record.family == "Linear"
    assert record.ops == 2 * 5 * 3 * (2 * 4)
    # described again once materialised
    assert record.config == LinearConfig(in_features=4, out_features=3, bias=True)


def test_linear_config() -> None:
    assert LinearConfig.from_module(nn.Linear(7, 2, bias=False)) == LinearConfig(7, 2, False)


def test_linear_every_call_is_a_record() -> None:
    module = nn.Linear(3, 2)
    with Profiler(module) as p:
        module(torch.randn(1, 3))
        module(torch.randn(4, 3))
    assert [r.ops for r in p.records] == [1 * 2 * 6, 4 * 2 * 6]


@settings(max_examples=25)
@given(
    st.lists(st.integers(1, 4), min_size=0, max_size=3),
    st.integers(1, 6),
    st.integers(1, 6),
    st.booleans(),
)
def test_linear_equals_flop_counter_minus_missing_bias(
    leading: list[int], in_features: int, out_features: int, bias: bool
) -> None:
    # FlopCounterMode counts 2 * N * in * out for mm/addmm and ignores the bias: that is the
    # count with a bias; without one, each output's dot product has one addition fewer.
    module = nn.Linear(in_features, out_features, bias=bias)
    x = torch.randn(*leading, in_features)
    outputs = math.prod(leading) * out_features
    expected = flop_counter_flops(module, x) - (0 if bias else outputs)
    assert profiled_ops(module, x) == expected


# Bilinear: N * out * (in2 * (2 * in1 - 1) + (2 * in2 - 1) [+ 1 bias]), by hand.
BILINEAR_CASES = {
    "bias": (nn.Bilinear(3, 5, 7), ((2, 3), (2, 5)), 2 * 7 * (5 * (2 * 3 - 1) + (2 * 5 - 1) + 1)),
    "no bias": (
        nn.Bilinear(3, 5, 7, bias=False),
        ((2, 3), (2, 5)),
        2 * 7 * (5 * (2 * 3 - 1) + (2 * 5 - 1)),
    ),
    # unbatched 1-D inputs: N = 1
    "unbatched": (nn.Bilinear(2, 4, 3), ((2,), (4,)), 1 * 3 * (4 * (2 * 2 - 1) + (2 * 4 - 1) + 1)),
    # 3-D: N = 2 * 4
    "3-D": (
        nn.Bilinear(3, 2, 5, bias=False),
        ((2, 4, 3), (2, 4, 2)),
        2 * 4 * 5 * (2 * (2 * 3 - 1) + (2 * 2 - 1)),
    ),
    # 1x1 features, no bias: x1 * a * x2 is two multiplications per output
    "scalar": (nn.Bilinear(1, 1, 3, bias=False), ((4, 1), (4, 1)), 4 * 3 * 2),
}


@pytest.mark.parametrize("case", BILINEAR_CASES, ids=list(BILINEAR_CASES))
def test_bilinear_hand_computed(case: str) -> None:
    module, (shape1, shape2), expected = BILINEAR_CASES[case]
    assert profiled_ops(module, torch.randn(shape1), torch.randn(shape2)) == expected


def test_bilinear_config() -> None:
    assert BilinearConfig.from_module(nn.Bilinear(2, 3, 4)) == BilinearConfig(2, 3, 4, True)


def brute_force_bilinear(
    x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """``x1^T A_k x2 + b_k`` by loops, ``x1`` contracted first, counting every operation."""
    w, b = weight.tolist(), None if bias is None else bias.tolist()
    ops = 0
    out = []
    for u, v in zip(x1.tolist(), x2.tolist()):
        row = []
        for k, a in enumerate(w):
            total = None
            for j in range(len(v)):
                # t_j = sum_i u_i * a_ij
                t = u[0] * a[0][j]
                ops += 1
                for i in range(1, len(u)):
                    t += u[i] * a[i][j]
                    ops += 2
                # total = sum_j t_j * v_j
                product = t * v[j]
                ops += 1
                if total is None:
                    total = product
                else:
                    total += product
                    ops += 1
            if b is not None:
                total += b[k]
                ops += 1
            row.append(total)
        out.append(row)
    return torch.tensor(out, dtype=x1.dtype), ops


@settings(max_examples=25)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.booleans(),
)
def test_bilinear_equals_a_brute_force_count(
    batch: int, in1: int, in2: int, out: int, bias: bool
) -> None:
    module = nn.Bilinear(in1, in2, out, bias=bias).double()
    x1 = torch.randn(batch, in1, dtype=torch.float64)
    x2 = torch.randn(batch, in2, dtype=torch.float64)
    expected_out, brute_ops = brute_force_bilinear(
        x1, x2, module.weight.detach(), None if module.bias is None else module.bias.detach()
    )
    # The brute force is a real bilinear map, not just a counter: it agrees with torch.
    torch.testing.assert_close(module(x1, x2).detach(), expected_out)
    assert profiled_ops(module, x1, x2) == brute_ops


def test_bilinear_equals_flop_counter_of_the_same_contraction() -> None:
    # FlopCounterMode does not count aten._trilinear, so run the same two contractions as
    # matmuls: (N, in1) @ (in1, out * in2), then a batched (N * out, 1, in2) @ (in2, 1).
    batch, in1, in2, out = 3, 4, 5, 6
    module = nn.Bilinear(in1, in2, out)
    x1, x2 = torch.randn(batch, in1), torch.randn(batch, in2)
    weight = module.weight.detach()

    def contracted() -> torch.Tensor:
        t = (x1 @ weight.permute(1, 0, 2).reshape(in1, out * in2)).reshape(batch * out, 1, in2)
        x2_per_output = x2.repeat_interleave(out, dim=0).unsqueeze(-1)
        return torch.bmm(t, x2_per_output).reshape(batch, out) + module.bias.detach()

    with FlopCounterMode(display=False) as counter:
        result = contracted()
    torch.testing.assert_close(result, module(x1, x2).detach())
    # FlopCounterMode counts 2 per pair of each dot product; a dot product has one addition
    # fewer than it has pairs: N * out * in2 of the first kind, N * out of the second.
    dot_products = batch * out * in2 + batch * out
    bias_additions = batch * out
    expected = counter.get_total_flops() - dot_products + bias_additions
    assert profiled_ops(module, x1, x2) == expected


def test_counts_are_exact_beyond_float_precision() -> None:
    huge = 2**53 + 1  # not a float: any float in the arithmetic would round it
    assert linear_ops(batch=huge, in_features=1, out_features=1, bias=True) == 2 * huge
    bilinear = bilinear_ops(batch=huge, in1_features=1, in2_features=1, out_features=1, bias=False)
    assert bilinear == 2 * huge
    assert isinstance(bilinear, int)


def test_zero_features_cost_nothing() -> None:
    # Linear(0, k) returns its bias: an empty sum is not -1 operations.
    assert linear_ops(batch=2, in_features=0, out_features=3, bias=True) == 2 * 3
    assert linear_ops(batch=2, in_features=0, out_features=3, bias=False) == 0
