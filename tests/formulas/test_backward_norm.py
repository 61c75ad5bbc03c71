"""The normalisations' backward operators against brute-force gradients: each gradient
written out set by set with numbers that count their own arithmetic (every tensor input a
counted number, shared sub-expressions computed once), checked against torch's gradients,
for the batch norms (training and eval), layer norm and group norm, with and without
affine parameters, for every output mask; and what autograd runs for each module."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from formulas.op_harness import count_ops
from formulas.scalar_oracle import Counted, Tally, sqrt, total
from formulas.step_harness import count_step
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from opscope.formulas.norm import normalization_backward_ops

aten = torch.ops.aten
EPS = 1e-5
MASKS = [m for m in ((a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)) if any(m)]


class Brute:
    """Gradients built from lists of counted numbers, with one tally for the whole call."""

    def __init__(self) -> None:
        self.tally = Tally()

    def numbers(self, tensor: torch.Tensor) -> list[Counted]:
        return [Counted(v, self.tally) for v in tensor.flatten().tolist()]


def sets_of(x: torch.Tensor, set_axes: Sequence[int]) -> torch.Tensor:
    """``x`` as ``(sets, M)``: the elements of each statistics set on a row, ``set_axes`` the
    axes that tell the sets apart (the others are reduced)."""
    reduced = [axis for axis in range(x.dim()) if axis not in set_axes]
    return x.permute(*set_axes, *reduced).reshape(math.prod(x.shape[a] for a in set_axes), -1)


def unset(rows: list[list[float]], like: torch.Tensor, set_axes: Sequence[int]) -> torch.Tensor:
    """Rows of :func:`sets_of` back to ``like``'s layout."""
    reduced = [axis for axis in range(like.dim()) if axis not in set_axes]
    order = [*set_axes, *reduced]
    permuted = torch.tensor(rows, dtype=like.dtype).reshape([like.shape[a] for a in order])
    return permuted.permute(*[order.index(axis) for axis in range(like.dim())])


def brute_force(
    g: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    r: torch.Tensor | None,
    var: torch.Tensor | None,
    weight: torch.Tensor | None,
    set_axes: Sequence[int],
    parameter_of: torch.Tensor,
    batch_stats: bool,
    wanted: Sequence[bool],
    weight_per_set: bool,
) -> tuple[list[torch.Tensor | None], int]:
    """The gradients (input, weight, bias) of a normalisation whose statistics sets are told
    apart by ``set_axes``, ``parameter_of`` giving each element's parameter index, and the
    operations they took, as ``normalization_backward_ops`` defines them: a batch norm
    (``weight_per_set``: one parameter per set) factors its weight out of the sums."""  # fmt: skip
    brute = Brute()
    gs, xs = sets_of(g, set_axes).tolist(), sets_of(x, set_axes).tolist()
    params = sets_of(parameter_of, set_axes).tolist()
    weights = brute.numbers(weight) if weight is not None else None
    means = brute.numbers(mean)
    if batch_stats:
        rs = brute.numbers(r)
    else:  # 1 / sqrt(var + eps), from the running variance, when a gradient needs it
        rs = [1 / sqrt(v + EPS) for v in brute.numbers(var)] if wanted[0] or wanted[1] else []
    grad_input: list[list[float]] = []
    weight_terms: dict[int, list[Counted]] = defaultdict(list)
    bias_terms: dict[int, list[Counted]] = defaultdict(list)
    sums: dict[int, Counted] = {}
    dots: dict[int, Counted] = {}
    for index, (g_row, x_row, p_row) in enumerate(zip(gs, xs, params, strict=True)):
        count = len(g_row)
        g_set = [Counted(v, brute.tally) for v in g_row]
        x_set = [Counted(v, brute.tally) for v in x_row]
        mean_value = means[index]
        # the centred input, once, for whichever gradient needs it
        needs_centring = wanted[1] or (batch_stats and wanted[0])
        centred = [value - mean_value for value in x_set] if needs_centring else []

        if batch_stats and weight_per_set:  # a batch norm: the weight factors out of the sums
            if wanted[0] or wanted[2]:
                sums[index] = total(g_set)
            if wanted[0] or wanted[1]:
                dots[index] = total([c * v for c, v in zip(centred, g_set)])
            if wanted[0]:
                r = rs[index]
                k = dots[index] * r * r / count
                m = sums[index] / count
                scale = r * weights[p_row[0]] if weights is not None else r
                grad_input.append([((v - m - c * k) * scale).value for v, c in zip(g_set, centred)])
        elif batch_stats:  # a layer or group norm
            r = rs[index]
            if wanted[0]:
                scaled = (
                    [v * weights[p] for v, p in zip(g_set, p_row)] if weights is not None else g_set
                )
                sum_g = total(scaled)
                dot = total([c * v for c, v in zip(centred, scaled)])
                k = dot * r * r / count
                m = sum_g / count
                grad_input.append([((v - m - c * k) * r).value for v, c in zip(scaled, centred)])
            if wanted[1]:
                for c, v, p in zip(centred, g_set, p_row):
                    weight_terms[p].append(v * (c * r))
        else:  # running statistics
            if wanted[0]:
                r = rs[index]
                scale = r * weights[p_row[0]] if weights is not None else r
                grad_input.append([(v * scale).value for v in g_set])
            if wanted[1]:
                dots[index] = total([c * v for c, v in zip(centred, g_set)])
            if wanted[2]:
                sums[index] = total(g_set)
        for v, p in zip(g_set, p_row):
            bias_terms[p].append(v)
    results: list[torch.Tensor | None] = [None, None, None]
    if wanted[0]:
        results[0] = unset(grad_input, x, set_axes)
    parameters = int(parameter_of.max()) + 1
    if wanted[1]:
        if dots:  # one set per parameter
            values = [(dots[p] * rs[p]).value for p in range(parameters)]
        else:
            values = [total(weight_terms[p]).value for p in range(parameters)]
        results[1] = torch.tensor(values, dtype=x.dtype)
    if wanted[2]:
        if sums:
            values = [sums[p].value for p in range(parameters)]
        else:
            values = [total(bias_terms[p]).value for p in range(parameters)]
        results[2] = torch.tensor(values, dtype=x.dtype)
    return results, brute.tally.ops


def check(outputs: Sequence[Any], expected: Sequence[Any], wanted: Sequence[bool]) -> None:
    for flag, output, value in zip(wanted, outputs, expected, strict=True):
        if flag:
            torch.testing.assert_close(output.reshape(value.shape), value)


@given(
    shape=st.lists(st.integers(1, 3), min_size=2, max_size=4),
    train=st.booleans(), affine=st.booleans(), mask=st.sampled_from(MASKS),
)  # fmt: skip
@settings(max_examples=40, deadline=None)
def test_batch_norm_backward(shape: list[int], train: bool, affine: bool, mask: tuple) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    channels = shape[1]
    weight = torch.rand(channels, dtype=x.dtype) + 0.5 if affine else None
    bias = torch.randn(channels, dtype=x.dtype) if affine else None
    running_mean = torch.randn(channels, dtype=x.dtype)
    running_var = torch.rand(channels, dtype=x.dtype) + 0.5
    assume(not train or x.numel() // channels > 1)  # no batch statistics of one value
    _, save_mean, save_invstd = aten.native_batch_norm(
        x, weight, bias, running_mean.clone(), running_var.clone(), train, 0.1, EPS
    )
    wanted = (bool(mask[0]), bool(mask[1]) and affine, bool(mask[2]) and affine)
    g = torch.randn_like(x)
    arguments = (g, x, weight, running_mean, running_var, save_mean, save_invstd, train, EPS,
                 list(wanted))  # fmt: skip
    parameter_of = torch.arange(channels).reshape(1, -1, *[1] * (len(shape) - 2)).expand(shape)
    mean, r = (save_mean, save_invstd) if train else (running_mean, None)
    expected, ops = brute_force(
        g, x, mean, r, running_var, weight, [1], parameter_of, train, wanted, True
    )
    check(aten.native_batch_norm_backward(*arguments), expected, wanted)
    counts = count_ops(lambda: aten.native_batch_norm_backward(*arguments))
    assert counts.ops == ops


@given(
    leading=st.lists(st.integers(1, 3), min_size=1, max_size=2),
    normalized=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    weight=st.booleans(), bias=st.booleans(), mask=st.sampled_from(MASKS),
)  # fmt: skip
@settings(max_examples=40, deadline=None)
def test_layer_norm_backward(
    leading: list[int], normalized: list[int], weight: bool, bias: bool, mask: tuple
) -> None:
    torch.manual_seed(0)
    shape = [*leading, *normalized]
    x = torch.randn(shape, dtype=torch.float64)
    w = torch.rand(normalized, dtype=x.dtype) + 0.5 if weight else None
    b = torch.randn(normalized, dtype=x.dtype) if bias else None
    _, mean, rstd = aten.native_layer_norm(x, normalized, w, b, EPS)
    wanted = (bool(mask[0]), bool(mask[1]) and weight, bool(mask[2]) and bias)
    g = torch.randn_like(x)
    arguments = (g, x, normalized, mean, rstd, w, b, list(wanted))
    set_axes = list(range(len(leading)))
    parameter_of = torch.arange(math.prod(normalized)).reshape(normalized).expand(shape)
    expected, ops = brute_force(
        g, x, mean.flatten(), rstd.flatten(), None, w, set_axes, parameter_of, True, wanted, False
    )
    check(aten.native_layer_norm_backward(*arguments), expected, wanted)
    counts = count_ops(lambda: aten.native_layer_norm_backward(*arguments))
    assert counts.ops == ops


@given(
    batch=st.integers(1, 2), groups=st.integers(1, 3), per_group=st.integers(1, 2),
    spatial=st.lists(st.integers(1, 3), min_size=0, max_size=2), affine=st.booleans(),
    mask=st.sampled_from(MASKS),
)  # fmt: skip
@settings(max_examples=40, deadline=None)
def test_group_norm_backward(
    batch: int, groups: int, per_group: int, spatial: list[int], affine: bool, mask: tuple
) -> None:
    torch.manual_seed(0)
    channels = groups * per_group
    hw = math.prod(spatial)
    x = torch.randn(batch, channels, *spatial, dtype=torch.float64)
    w = torch.rand(channels, dtype=x.dtype) + 0.5 if affine else None
    b = torch.randn(channels, dtype=x.dtype) if affine else None
    _, mean, rstd = aten.native_group_norm(x, w, b, batch, channels, hw, groups, EPS)
    wanted = (bool(mask[0]), bool(mask[1]) and affine, bool(mask[2]) and affine)
    g = torch.randn_like(x)
    arguments = (g, x, mean, rstd, w, batch, channels, hw, groups, list(wanted))
    # sets: (n, group); view x as (N, G, C/G * HW)
    grouped = x.reshape(batch, groups, -1)
    parameter_of = (
        torch.arange(channels).reshape(1, groups, per_group, 1).expand(batch, groups, per_group, hw)
    ).reshape(batch, groups, -1)
    expected, ops = brute_force(
        g.reshape(batch, groups, -1), grouped, mean.flatten(), rstd.flatten(), None, w,
        [0, 1], parameter_of, True, wanted, False,
    )  # fmt: skip
    outputs = aten.native_group_norm_backward(*arguments)
    check(outputs, expected, wanted)
    counts = count_ops(lambda: aten.native_group_norm_backward(*arguments))
    assert counts.ops == ops


def test_hand_computed_batch_norm() -> None:
    """BatchNorm2d(3) on (2, 3, 4, 4), training, every gradient: T = 96, C = 3.
    sum(g): 93; sum(xc * g): 96 + 96 + 93; per channel 3 + 1 + 1; per element 4; weight: 3."""
    expected = 93 + (96 + 96 + 93) + 3 * 5 + 4 * 96 + 3
    assert expected == normalization_backward_ops(
        elements=96, stat_sets=3, parameters=3, batch_stats=True, weight=True,
        weight_per_set=True, wanted=(True, True, True),
    )  # fmt: skip
    # eval: 1 / sqrt(var + eps) 3 per channel; g * (r * w): 3 + 96; the weight 285 + 3; bias 93
    assert 9 + 3 + 96 + 285 + 3 + 93 == normalization_backward_ops(
        elements=96, stat_sets=3, parameters=3, batch_stats=False, weight=True,
        weight_per_set=True, wanted=(True, True, True),
    )  # fmt: skip


MODULES = {
    "BatchNorm2d train": (lambda: nn.BatchNorm2d(3).train(), (2, 3, 4, 4)),
    "BatchNorm2d eval": (lambda: nn.BatchNorm2d(3).eval(), (2, 3, 4, 4)),
    "BatchNorm1d no affine": (lambda: nn.BatchNorm1d(3, affine=False).train(), (4, 3)),
    "InstanceNorm2d affine": (lambda: nn.InstanceNorm2d(3, affine=True), (2, 3, 4, 4)),
    "LayerNorm": (lambda: nn.LayerNorm([4, 4]), (2, 3, 4, 4)),
    "LayerNorm no bias": (lambda: nn.LayerNorm(4, bias=False), (2, 3, 4)),
    "LayerNorm no affine": (lambda: nn.LayerNorm(4, elementwise_affine=False), (2, 3, 4)),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), (2, 4, 3, 3)),
}


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_module_backward_is_counted(name: str, frozen: bool) -> None:
    """Every normalisation module's backward runs operators that all have formulas, with the
    output mask of what needs a gradient (a frozen module: the input's gradient only)."""
    factory, shape = MODULES[name]
    module = factory().requires_grad_(not frozen)
    x = torch.randn(shape, requires_grad=True)
    backward = count_step(module, x)["backward"]
    assert not backward.uncounted
    assert backward.by_family["norm"] > 0
