"""The backward operators of pooling, upsampling and embeddings, the scatters of the output's
gradient back to the input's: against scatters replayed element by element (whose values
match torch's gradients), contributions measured by torch itself, and hand-computed cases."""

from __future__ import annotations

import math
from typing import Any

import hypothesis
import pytest
import torch
import torch.nn.functional as F
from formulas.op_harness import count_ops
from formulas.step_harness import count_step
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from opscope.formulas.upsample import upsample_backward_ops

aten = torch.ops.aten


@st.composite
def avg_pools(draw: st.DrawFn) -> dict[str, Any]:
    dims = draw(st.integers(1, 2))
    kernel = draw(st.lists(st.integers(1, 4), min_size=dims, max_size=dims))
    return {
        "size": draw(st.lists(st.integers(1, 8), min_size=dims, max_size=dims)),
        "kernel": kernel,
        "stride": draw(st.lists(st.integers(1, 3), min_size=dims, max_size=dims)),
        "padding": [draw(st.integers(0, k // 2)) for k in kernel],
        "ceil_mode": draw(st.booleans()),
        "count_include_pad": draw(st.booleans()),
    }


def as_2d(pool: dict[str, Any]) -> list[list[int]]:
    """The kernel, stride and padding of the pooling as a 2-d one over a height of 1."""
    extra = 2 - len(pool["size"])
    return [
        [fill] * extra + pool[key] for key, fill in (("kernel", 1), ("stride", 1), ("padding", 0))
    ]


def pooled(pool: dict[str, Any], divisor_override: int | None = None) -> tuple[Any, ...]:
    """An input, the gradient of its average pooling and the backward operator's arguments
    (a 1-d pooling as torch runs it: a 2-d one over a height of 1)."""
    size = pool["size"]
    two_d = [1] * (2 - len(size))
    x = torch.randn(2, 3, *two_d, *size, dtype=torch.float64)
    settings_2d = as_2d(pool)
    y = F.avg_pool2d(x, *settings_2d, pool["ceil_mode"], pool["count_include_pad"],
                     divisor_override)  # fmt: skip
    g = torch.randn_like(y)
    return x, g, (g, x, *settings_2d, pool["ceil_mode"], pool["count_include_pad"],
                  divisor_override)  # fmt: skip


def valid(pool: dict[str, Any]) -> bool:
    for size, kernel, stride, pad in zip(
        pool["size"], pool["kernel"], pool["stride"], pool["padding"], strict=True
    ):
        if size + 2 * pad < kernel:
            return False
    return True


@given(pool=avg_pools(), divisor=st.integers(1, 5))
@settings(max_examples=50, deadline=None)
def test_avg_pool_backward_equals_the_replayed_scatter(pool: dict[str, Any], divisor: int) -> None:
    """Each output's gradient divided once, then added to every input element of its window:
    the scatter replayed window by window (the windows written out here, torch's placement)
    gives torch's gradient and the count."""
    hypothesis.assume(valid(pool))
    x, g, arguments = pooled(pool, divisor)
    expected = torch.zeros_like(x)
    ops = 0
    out_size = g.shape[2:]
    kernel, stride, padding = as_2d(pool)
    for oh in range(out_size[0]):
        for ow in range(out_size[1]):
            delta = g[:, :, oh, ow] / divisor
            ops += g.shape[0] * g.shape[1]  # the division
            for kh in range(kernel[0]):
                for kw in range(kernel[1]):
                    ih, iw = oh * stride[0] - padding[0] + kh, ow * stride[1] - padding[1] + kw
                    if 0 <= ih < x.shape[2] and 0 <= iw < x.shape[3]:
                        expected[:, :, ih, iw] += delta
                        ops += g.shape[0] * g.shape[1]  # the addition
    torch.testing.assert_close(aten.avg_pool2d_backward(*arguments), expected)
    assert count_ops(lambda: aten.avg_pool2d_backward(*arguments)).ops == ops


@given(pool=avg_pools(), divisor=st.none() | st.integers(1, 5))
@settings(max_examples=50, deadline=None)
def test_avg_pool_backward_contributions_measured_by_torch(
    pool: dict[str, Any], divisor: int | None
) -> None:
    """Whatever the divisor (``count_include_pad``, ``divisor_override``): one division per
    output and one addition per contribution, the contributions counted by torch itself (the
    backward of a gradient of ones with a divisor of 1 puts at each input the number of
    windows holding it)."""
    hypothesis.assume(valid(pool))
    _, g, arguments = pooled(pool, divisor)
    ones = (torch.ones_like(g), *arguments[1:-1], 1)
    contributions = int(aten.avg_pool2d_backward(*ones).sum().item())
    assert count_ops(lambda: aten.avg_pool2d_backward(*arguments)).ops == g.numel() + contributions


@given(
    size=st.lists(st.integers(1, 9), min_size=2, max_size=2),
    out=st.lists(st.integers(1, 5), min_size=2, max_size=2),
)
@settings(max_examples=30, deadline=None)
def test_adaptive_avg_pool_backward_equals_the_replayed_scatter(
    size: list[int], out: list[int]
) -> None:
    """Window ``o`` of an axis is ``[floor(o * In / Out), ceil((o + 1) * In / Out))``."""
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    g = torch.randn(2, 3, *out, dtype=torch.float64)
    expected, ops = torch.zeros_like(x), 0
    windows = [[(o * i // n, -(-(o + 1) * i // n)) for o in range(n)] for i, n in zip(size, out)]
    for oh, (h0, h1) in enumerate(windows[0]):
        for ow, (w0, w1) in enumerate(windows[1]):
            delta = g[:, :, oh, ow] / ((h1 - h0) * (w1 - w0))
            expected[:, :, h0:h1, w0:w1] += delta[:, :, None, None]
            ops += 6 * (1 + (h1 - h0) * (w1 - w0))
    torch.testing.assert_close(aten._adaptive_avg_pool2d_backward(g, x), expected)
    assert count_ops(lambda: aten._adaptive_avg_pool2d_backward(g, x)).ops == ops


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.MaxPool2d(3, 2, 1), (2, 3, 9, 9)),  # resnet's stem: overlapping windows
        (nn.MaxPool2d(2), (2, 3, 8, 8)),
        (nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), (1, 2, 9, 9)),
        (nn.MaxPool1d(3, 2, 1), (2, 3, 9)),
        (nn.MaxPool3d(2), (1, 2, 4, 4, 4)),
        (nn.AdaptiveMaxPool2d(3), (2, 3, 7, 7)),
        (nn.AdaptiveMaxPool3d(2), (1, 2, 5, 5, 5)),
        (nn.FractionalMaxPool2d(2, output_size=3), (1, 2, 7, 7)),
    ],
)
def test_max_pool_backward_adds_each_output_gradient_once(
    module: nn.Module, shape: tuple[int, ...]
) -> None:
    """The gradient of each output goes to its saved argmax: one addition per output."""
    x = torch.randn(shape, requires_grad=True)
    out = module(x)
    backward = count_step(module, x)["backward"]
    assert not backward.uncounted
    assert backward.ops == out.numel()


@pytest.mark.parametrize(
    "mode, dims, per_output",
    [
        ("nearest", 1, 1), ("nearest", 2, 1), ("nearest", 3, 1), ("nearest-exact", 2, 1),
        ("linear", 1, 4), ("bilinear", 2, 8), ("trilinear", 3, 16), ("bicubic", 2, 32),
    ],
)  # fmt: skip
def test_upsample_backward(mode: str, dims: int, per_output: int) -> None:
    """Each output gradient goes back to its ``T^D`` taps: times the tap's weight (a product
    of one-axis weights that depends on the sizes only) and added, 2 per tap; nearest adds
    each output gradient to its source."""
    module = nn.Upsample(scale_factor=2, mode=mode)
    x = torch.randn(2, 3, *[3] * dims, requires_grad=True)
    out_numel = 2 * 3 * 6**dims
    backward = count_step(module, x)["backward"]
    assert not backward.uncounted
    assert (
        backward.ops == per_output * out_numel == upsample_backward_ops(mode, (2, 3, *[6] * dims))
    )


def test_upsample_area_backward_is_adaptive_average_pooling_backward() -> None:
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    backward = count_step(nn.Upsample(size=5, mode="area"), x)["backward"]
    # 25 outputs per plane, windows of 2 x 2 (1d windows of 5 over 3: [0,1), [0,2), [1,2),
    # [1,3), [2,3) -> 1, 2, 1, 2, 1 elements): 1 division + the window's additions each
    per_plane = 25 + sum([1, 2, 1, 2, 1]) ** 2
    assert backward.ops == 2 * per_plane


@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_embedding_backward(scale_grad_by_freq: bool) -> None:
    """Each looked-up row's gradient (D values) added into the weight's gradient at its row,
    scaled first by 1 / frequency when asked."""
    embedding = nn.Embedding(10, 4, scale_grad_by_freq=scale_grad_by_freq)
    indices = torch.tensor([[1, 2, 3], [1, 1, 4]])
    backward = count_step(embedding, indices)["backward"]
    assert not backward.uncounted
    assert backward.ops == 6 * 4 * (2 if scale_grad_by_freq else 1)


def test_lp_pool_backward_is_counted_through_its_parts() -> None:
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    backward = count_step(nn.LPPool2d(2, 2), x)["backward"]
    assert not backward.uncounted
    assert backward.by_op["aten.avg_pool2d_backward.default"] == 8 + 32  # 8 outputs, windows of 4
    assert math.prod(x.shape) == 32


@pytest.mark.parametrize(
    "module, added",
    [
        (nn.ReflectionPad2d(1), 2 * 6 * 6),  # every output gradient added into its source
        (nn.ReplicationPad1d(2), 2 * 4 * 8),
        (nn.ConstantPad2d(1, 0.5), 0),  # a slice of the gradient
        (nn.ZeroPad2d((1, 0, 2, 0)), 0),
    ],
)
def test_padding_backward(module: nn.Module, added: int) -> None:
    x = (
        torch.randn(2, 4, 4, requires_grad=True)
        if isinstance(module, nn.ReplicationPad1d)
        else (torch.randn(1, 2, 4, 4, requires_grad=True))
    )
    backward = count_step(module, x)["backward"]
    assert not backward.uncounted
    assert backward.ops == added


@pytest.mark.parametrize(
    "mode, weighted, expected",
    [
        # 6 lookups in 2 bags, D = 4
        ("sum", False, 6 * 4),  # each lookup's bag gradient added at its row
        ("sum", True, 6 * 4 * 2 + 6 * 7),  # times its weight; the weights' gradient: 6 dots of 4
        ("mean", False, 6 * 4 * 2),  # divided by the bag's size first
        ("max", False, 2 * 4),  # each bag's gradient at its maximal rows, per column
    ],
)
def test_embedding_bag_backward(mode: str, weighted: bool, expected: int) -> None:
    bag = nn.EmbeddingBag(10, 4, mode=mode)
    offsets = torch.tensor([0, 2])
    weights = torch.rand(6, requires_grad=True) if weighted else None

    class Bags(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = bag

        def forward(self, indices: torch.Tensor) -> torch.Tensor:
            return self.bag(indices, offsets, per_sample_weights=weights)

    backward = count_step(Bags(), torch.tensor([1, 2, 3, 4, 4, 1]))["backward"]
    assert not backward.uncounted
    assert backward.ops == expected
