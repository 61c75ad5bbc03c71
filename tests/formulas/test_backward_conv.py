"""``convolution_backward``: its operations against a brute-force evaluation of the three
gradients (which also checks their values against torch's), its MACs against
``FlopCounterMode``, on random plain and transposed convolutions, and what autograd runs for a
convolution module."""

from __future__ import annotations

import itertools
import math
from functools import reduce
from operator import getitem
from typing import Any

import hypothesis
import pytest
import torch
import torch.nn.functional as F
from formulas.op_harness import count_ops
from formulas.step_harness import count_step, flop_counter_flops_of
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from opscope.formulas.conv_transpose import ConvBackwardSizes, convolution_backward_ops

aten = torch.ops.aten


def at(nested: Any, index: tuple[int, ...]) -> Any:
    return reduce(getitem, index, nested)


def add_at(nested: Any, index: tuple[int, ...], value: float) -> None:
    at(nested, index[:-1])[index[-1]] += value


class Gradient:
    """One gradient tensor built by accumulating products, and how many products reach each
    of its elements."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.values = torch.zeros(shape, dtype=torch.float64).tolist()
        self.products = torch.zeros(shape, dtype=torch.int64).tolist()

    def add(self, index: tuple[int, ...], product: float) -> None:
        add_at(self.values, index, product)
        add_at(self.products, index, 1)

    def ops(self) -> int:
        """``p`` multiplications and ``p - 1`` additions for an element that ``p`` products
        reach (none for an element that none reaches)."""
        counts = torch.tensor(self.products).flatten().tolist()
        return sum(2 * count - 1 for count in counts if count)


def brute_force(
    grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, settings: dict[str, Any]
) -> tuple[list[torch.Tensor], list[int]]:
    """The three gradients of a (plain or transposed) convolution, evaluated product by
    product, and the operations of each: the products of ``grad_input`` that land outside the
    input of a plain convolution are not computed, every other product is (a padded one
    multiplies a zero, as in the forward convolution)."""
    stride, padding, dilation = settings["stride"], settings["padding"], settings["dilation"]
    transposed, groups = settings["transposed"], settings["groups"]
    gy, xs, ws = grad_output.tolist(), x.tolist(), weight.tolist()
    batch, gy_channels, *gy_size = grad_output.shape
    _, x_channels, *x_size = x.shape
    kernel = weight.shape[2:]
    grad_input, grad_weight = Gradient(tuple(x.shape)), Gradient(tuple(weight.shape))
    # Plain: output o, tap t read input o*s + t*d - p. Transposed: input i, tap t write output
    # i*s + t*d - p. "Small" is the side that is indexed by o (plain) or i (transposed).
    small_size, small_channels = (x_size, x_channels) if transposed else (gy_size, gy_channels)
    big_size = gy_size if transposed else x_size
    per_group_small = small_channels // groups
    per_group_big = (gy_channels if transposed else x_channels) // groups
    for n, c_small, position in itertools.product(
        range(batch), range(small_channels), itertools.product(*map(range, small_size))
    ):
        group = c_small // per_group_small
        for c_local, tap in itertools.product(
            range(per_group_big), itertools.product(*map(range, kernel))
        ):
            c_big = group * per_group_big + c_local
            big = tuple(
                p * s + t * d - pad
                for p, t, s, d, pad in zip(position, tap, stride, dilation, padding, strict=True)
            )
            inside = all(0 <= b < size for b, size in zip(big, big_size, strict=True))
            if transposed:  # x small (c_small = ci), grad_output big (c_big = co)
                w_index = (c_small, c_local, *tap)
                g = at(gy, (n, c_big, *big)) if inside else 0.0
                grad_input.add((n, c_small, *position), g * at(ws, w_index))
                grad_weight.add(w_index, at(xs, (n, c_small, *position)) * g)
            else:  # grad_output small (c_small = co), x big (c_big = ci)
                w_index = (c_small, c_local, *tap)
                g = at(gy, (n, c_small, *position))
                if inside:
                    grad_input.add((n, c_big, *big), g * at(ws, w_index))
                value = at(xs, (n, c_big, *big)) if inside else 0.0
                grad_weight.add(w_index, g * value)
    grad_bias = grad_output.sum(dim=[0, *range(2, grad_output.dim())])
    bias_ops = gy_channels * (grad_output.numel() // gy_channels - 1)
    values = [torch.tensor(g.values, dtype=torch.float64) for g in (grad_input, grad_weight)]
    values.append(grad_bias)
    return values, [grad_input.ops(), grad_weight.ops(), bias_ops]


def backward_call(
    settings: dict[str, Any], mask: tuple[bool, bool, bool], seed: int = 0
) -> tuple[Any, ...]:
    """The tensors and arguments of the ``convolution_backward`` of a random convolution."""
    torch.manual_seed(seed)
    dims, transposed, groups = settings["dims"], settings["transposed"], settings["groups"]
    x = torch.randn(settings["batch"], settings["in_channels"], *settings["size"])
    out_channels, kernel = settings["out_channels"], settings["kernel"]
    if transposed:
        weight = torch.randn(settings["in_channels"], out_channels // groups, *kernel)
        forward = getattr(F, f"conv_transpose{dims}d")
        y = forward(x, weight, None, settings["stride"], settings["padding"],
                    settings["output_padding"], groups, settings["dilation"])  # fmt: skip
    else:
        weight = torch.randn(out_channels, settings["in_channels"] // groups, *kernel)
        forward = getattr(F, f"conv{dims}d")
        y = forward(x, weight, None, settings["stride"], settings["padding"],
                    settings["dilation"], groups)  # fmt: skip
    grad_output = torch.randn_like(y)
    return (grad_output, x, weight, [out_channels], settings["stride"], settings["padding"],
            settings["dilation"], transposed, settings["output_padding"], groups, list(mask))  # fmt: skip


@st.composite
def convolutions(draw: st.DrawFn) -> dict[str, Any]:
    dims = draw(st.integers(1, 2))
    transposed = draw(st.booleans())
    groups = draw(st.integers(1, 2))
    axis = st.integers(1, 3)
    settings = {
        "dims": dims,
        "transposed": transposed,
        "groups": groups,
        "batch": draw(st.integers(1, 2)),
        "in_channels": groups * draw(st.integers(1, 2)),
        "out_channels": groups * draw(st.integers(1, 2)),
        "size": draw(st.lists(st.integers(1, 5), min_size=dims, max_size=dims)),
        "kernel": draw(st.lists(axis, min_size=dims, max_size=dims)),
        "stride": draw(st.lists(axis, min_size=dims, max_size=dims)),
        "padding": draw(st.lists(st.integers(0, 2), min_size=dims, max_size=dims)),
        "dilation": draw(st.lists(st.integers(1, 2), min_size=dims, max_size=dims)),
    }
    settings["output_padding"] = [
        draw(st.integers(0, max(s, d) - 1)) if transposed else 0
        for s, d in zip(settings["stride"], settings["dilation"], strict=True)
    ]
    return settings


def valid(settings: dict[str, Any]) -> bool:
    """Whether torch accepts the convolution (a positive output size on every axis)."""
    for size, kernel, stride, pad, dilation, extra in zip(
        settings["size"], settings["kernel"], settings["stride"], settings["padding"],
        settings["dilation"], settings["output_padding"], strict=True,
    ):  # fmt: skip
        span = dilation * (kernel - 1) + 1
        if settings["transposed"]:
            out = (size - 1) * stride - 2 * pad + span + extra
        else:
            out = (size + 2 * pad - span) // stride + 1
        if out < 1:
            return False
    return True


masks = st.tuples(st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=60, deadline=None)
@given(settings=convolutions(), mask=masks)
def test_convolution_backward_counts_the_brute_force_gradients(
    settings: dict[str, Any], mask: tuple[bool, bool, bool]
) -> None:
    hypothesis.assume(valid(settings))
    arguments = backward_call(settings, mask)
    grad_output, x, weight = (t.double() for t in arguments[:3])
    expected, ops = brute_force(grad_output, x, weight, settings)
    outputs = aten.convolution_backward(grad_output, x, weight, *arguments[3:])
    for wanted, output, value in zip(mask, outputs, expected, strict=True):
        if wanted:
            torch.testing.assert_close(output, value)
    counts = count_ops(lambda: aten.convolution_backward(*arguments), "no_grad")
    assert not counts.uncounted
    assert counts.ops == sum(op for wanted, op in zip(mask, ops, strict=True) if wanted)
    assert counts.by_family["conv"] == counts.ops


def flop_counter_excess(arguments: tuple[Any, ...]) -> int:
    """The products ``FlopCounterMode`` counts in a grouped weight gradient beyond those
    computed: it counts ``groups`` times ``N * P * numel(weight)``, ``P`` the positions of the
    side that is not upsampled (the output of a plain convolution, the input of a transposed
    one)."""
    grad_output, x, weight, *_, transposed, _, groups, mask = arguments
    if not mask[1]:
        return 0
    small = x if transposed else grad_output
    return (groups - 1) * grad_output.shape[0] * math.prod(small.shape[2:]) * weight.numel()


@settings(max_examples=80, deadline=None)
@given(settings=convolutions(), mask=masks, dims=st.integers(1, 3))
def test_convolution_backward_macs_are_flop_counter_flops_halved_less_its_grouped_excess(
    settings: dict[str, Any], mask: tuple[bool, bool, bool], dims: int
) -> None:
    """Every rank, groups, stride, padding, dilation, transposed and output mask: the MACs
    are ``FlopCounterMode``'s FLOPs / 2, but for grouped weight gradients, which it counts
    as ungrouped."""
    settings = {**settings, "dims": dims}
    for key in ("size", "kernel", "stride", "padding", "dilation", "output_padding"):
        settings[key] = (settings[key] * 3)[:dims]
    hypothesis.assume(valid(settings))
    arguments = backward_call(settings, mask)
    counts = count_ops(lambda: aten.convolution_backward(*arguments), "no_grad")
    flops = flop_counter_flops_of(lambda: aten.convolution_backward(*arguments))
    assert 2 * counts.macs == flops - 2 * flop_counter_excess(arguments)
    if settings["groups"] == 1:
        assert 2 * counts.macs == flops


def test_depthwise_weight_gradient_macs_are_the_products_computed() -> None:
    """A depthwise convolution's weight gradient computes ``N * P * numel(weight)`` products,
    found by evaluating it product by product; ``FlopCounterMode`` counts ``groups`` times as
    many."""
    x = torch.randn(2, 8, 5, 5)
    weight = torch.randn(8, 1, 3, 3)
    grad_output = torch.randn(2, 8, 5, 5)
    arguments = (grad_output, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 8,
                 [False, True, False])  # fmt: skip
    padded = F.pad(x, (1, 1, 1, 1))
    products, grad_weight = 0, torch.zeros_like(weight)
    for n, c, i, j, u, v in itertools.product(range(2), range(8), range(5), range(5), range(3), range(3)):
        grad_weight[c, 0, u, v] += grad_output[n, c, i, j] * padded[n, c, i + u, j + v]
        products += 1
    torch.testing.assert_close(aten.convolution_backward(*arguments)[1], grad_weight)
    counts = count_ops(lambda: aten.convolution_backward(*arguments), "no_grad")
    assert products == 2 * 25 * weight.numel()
    assert counts.ops == weight.numel() * (2 * 2 * 25 - 1)
    assert counts.macs == products
    assert 2 * counts.macs * 8 == flop_counter_flops_of(lambda: aten.convolution_backward(*arguments))


def test_hand_computed_plain_convolution() -> None:
    """Conv2d(3, 8, 3, padding=1) on (1, 3, 4, 4), every gradient: per axis 10 of the 4 * 3
    (output position, tap) pairs land inside the input, so each of the 3 input planes receives
    8 * 100 products on its 16 elements; 216 weight gradients of 16 products; 8 sums of 16."""
    sizes = ConvBackwardSizes((1, 8, 4, 4), (1, 3, 4, 4), (8, 3, 3, 3), (1, 1), (1, 1), (1, 1),
                              False, 1, (True, True, True))  # fmt: skip
    grad_input = 3 * (2 * 800 - 16)
    assert convolution_backward_ops(sizes) == grad_input + 216 * (2 * 16 - 1) + 8 * 15


def test_stride_leaves_input_elements_without_gradient() -> None:
    """Conv1d(1, 1, 1, stride=2) on length 5: outputs read positions 0, 2, 4; positions 1 and
    3 receive no product (no operation), the others one (a product, no addition)."""
    sizes = ConvBackwardSizes((1, 1, 3), (1, 1, 5), (1, 1, 1), (2,), (0,), (1,), False, 1,
                              (True, False, False))  # fmt: skip
    assert convolution_backward_ops(sizes) == 3


@pytest.mark.parametrize("frozen", ["none", "input", "weight", "bias", "input and weight"])
def test_module_backward_is_one_convolution_backward(frozen: str) -> None:
    """What autograd runs for a Conv2d: one ``convolution_backward`` whose output mask leaves
    out the gradients nobody needs (an input that needs none, a frozen weight or bias)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 4, 7, 7, requires_grad="input" not in frozen)
    conv.weight.requires_grad_("weight" not in frozen)
    conv.bias.requires_grad_("bias" not in frozen)
    if frozen == "input and weight":
        conv.bias.requires_grad_(True)
    backward = count_step(conv, x)["backward"]
    mask = (x.requires_grad, conv.weight.requires_grad, conv.bias.requires_grad)
    grad_output = torch.empty(2, 6, 4, 4)
    sizes = ConvBackwardSizes(tuple(grad_output.shape), tuple(x.shape), tuple(conv.weight.shape),
                              (2, 2), (1, 1), (1, 1), False, 2, mask)  # fmt: skip
    assert backward.by_op["aten.convolution_backward.default"] == convolution_backward_ops(sizes)
    assert backward.ops == convolution_backward_ops(sizes)  # the loss's gradient: ones, free
    assert not backward.uncounted
    assert math.prod(grad_output.shape) == 2 * 6 * 16
