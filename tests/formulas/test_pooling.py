"""Pooling formulas against hand-computed cases and a brute-force pooling that counts its work."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import opscope.formulas.pooling  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.pooling import (
    AdaptivePoolConfig,
    PoolConfig,
    adaptive_window_sizes,
    avg_pool_ops,
    max_pool_ops,
    sliding_window_sizes,
)
from helpers import profiled_ops

MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
ADAPTIVE_MAX_POOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
ADAPTIVE_AVG_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


# Each case: module, input shape, count worked out by hand. Max pooling: (c - 1) comparisons per
# window of c real elements; average pooling: (c - 1) additions + 1 division = c per window.
HAND_COMPUTED = {
    # 2x2/2 on 4x4: 4 full windows of 4 per plane, 3 planes
    "max 2d": (nn.MaxPool2d(2), (1, 3, 4, 4), 3 * 4 * (4 - 1)),
    # 3x3/2 pad 1 on 5x5: windows along each axis cover [0,1], [1,3], [3,4]: 2, 3, 2 elements;
    # the 9 windows hold 7 * 7 = 49 elements: 49 - 9 comparisons per plane, 2 * 4 planes
    "max 2d padded": (nn.MaxPool2d(3, stride=2, padding=1), (2, 4, 5, 5), 2 * 4 * (49 - 9)),
    # unbatched (C, L) = (2, 5), k3 s1 p1: windows of 2, 3, 3, 3, 2 elements
    "max 1d unbatched": (
        nn.MaxPool1d(3, stride=1, padding=1), (2, 5), 2 * ((2 + 3 + 3 + 3 + 2) - 5),
    ),
    # dilation 2, k3 on 7: taps o, o+2, o+4 for o = 0, 1, 2: three full windows of 3
    "max 1d dilated": (nn.MaxPool1d(3, stride=1, dilation=2), (1, 1, 7), 3 * (3 - 1)),
    # k2 p1 d3 on 2: the only window's taps -1 and 2 both fall outside: empty, output -inf
    "max 1d empty window": (nn.MaxPool1d(2, stride=1, padding=1, dilation=3), (1, 1, 2), 0),
    # 2x2/2 on 5x5 with ceil_mode: 3 windows per axis covering 2, 2, 1 elements
    "max 2d ceil_mode": (nn.MaxPool2d(2, ceil_mode=True), (1, 1, 5, 5), (2 + 2 + 1) ** 2 - 3 * 3),
    # without ceil_mode the last column and row are dropped: 2 x 2 full windows
    "max 2d floor_mode": (nn.MaxPool2d(2), (1, 1, 5, 5), 2 * 2 * (4 - 1)),
    # an empty stride means stride = kernel, as in torch: 2x2/2 on 4x4
    "max 2d empty stride": (nn.MaxPool2d(2, stride=()), (1, 1, 4, 4), 4 * (4 - 1)),
    "max 2d indices": (nn.MaxPool2d(2, return_indices=True), (1, 3, 4, 4), 3 * 4 * (4 - 1)),
    # 2x2x2/2 on 4x4x4: 8 full windows of 8
    "max 3d": (nn.MaxPool3d(2), (1, 1, 4, 4, 4), 8 * (8 - 1)),
    # unbatched 3d: (C, D, H, W) = (2, 3, 3, 3), k3 s1 p1: 2, 3, 2 per axis
    "max 3d unbatched": (nn.MaxPool3d(3, stride=1, padding=1), (2, 3, 3, 3), 2 * (7**3 - 3**3)),
    # non-square: k(1, 3) s(1, 2) on 3x7: 3 rows of 1, columns [0,3), [2,5), [4,7)
    "max 2d non-square": (nn.MaxPool2d((1, 3), stride=(1, 2)), (1, 1, 3, 7), 3 * 3 * (3 - 1)),
    "avg 2d": (nn.AvgPool2d(2), (1, 3, 4, 4), 3 * 4 * ((4 - 1) + 1)),
    # padded zeros are not added: the divisor is 9 for every window (count_include_pad), but
    # the windows hold 2, 3, 2 real elements per axis
    "avg 2d padded": (nn.AvgPool2d(3, stride=2, padding=1), (1, 1, 5, 5), 7 * 7),
    "avg 2d exclude pad": (
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 1, 5, 5), 7 * 7,
    ),
    "avg 2d divisor_override": (
        nn.AvgPool2d(3, stride=2, padding=1, divisor_override=2), (1, 1, 5, 5), 7 * 7,
    ),
    # ceil_mode: windows [0,2), [2,4), [4,5): (1 + 1) + (1 + 1) + (0 + 1)
    "avg 1d ceil_mode": (nn.AvgPool1d(2, ceil_mode=True), (1, 1, 5), 5),
    "avg 1d unbatched": (nn.AvgPool1d(2), (3, 4), 3 * 2 * 2),
    # 3d, k2/2 on 2x4x4 with 2 channels and 2 batch items: 1 * 2 * 2 windows of 8 per plane
    "avg 3d": (nn.AvgPool3d(2), (2, 2, 2, 4, 4), 2 * 2 * 4 * 8),
    # global average pooling of 7x7: 48 additions + 1 division per plane
    "adaptive avg 2d global": (nn.AdaptiveAvgPool2d(1), (2, 8, 7, 7), 2 * 8 * (48 + 1)),
    # 5 -> 3: windows [0,2), [1,4), [3,5) of 2, 3, 2
    "adaptive avg 1d": (nn.AdaptiveAvgPool1d(3), (1, 1, 5), 2 + 3 + 2),
    "adaptive max 1d": (nn.AdaptiveMaxPool1d(3), (1, 1, 5), (2 + 3 + 2) - 3),
    # H kept (None): 3 windows of 1; W 5 -> 2: [0,3), [2,5) of 3 each; 2 planes
    "adaptive max 2d None": (nn.AdaptiveMaxPool2d((None, 2)), (1, 2, 3, 5), 2 * (3 * 6 - 3 * 2)),
    "adaptive max 2d indices": (
        nn.AdaptiveMaxPool2d(1, return_indices=True), (1, 2, 3, 3), 2 * (9 - 1),
    ),
    # unbatched (C, D, H, W) = (3, 2, 3, 4) -> 1 x 2 x 2: D one window of 2, H [0,2) [1,3),
    # W [0,2) [2,4)
    "adaptive avg 3d unbatched": (
        nn.AdaptiveAvgPool3d((1, 2, 2)), (3, 2, 3, 4), 3 * 2 * (2 + 2) * (2 + 2),
    ),
    # upsampling adaptively (2 -> 3): windows [0,1), [0,2), [1,2) overlap
    "adaptive max 3d upsampling": (
        nn.AdaptiveMaxPool3d(3), (1, 1, 2, 2, 2), (1 + 2 + 1) ** 3 - 3**3,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, input_shape, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


def test_every_family_registered() -> None:
    shapes = {1: (1, 2, 6), 2: (1, 2, 6, 6), 3: (1, 2, 6, 6, 6)}
    for dims, (max_pool, avg_pool, adaptive_max, adaptive_avg) in enumerate(
        zip(MAX_POOLS, AVG_POOLS, ADAPTIVE_MAX_POOLS, ADAPTIVE_AVG_POOLS, strict=True), start=1
    ):
        x = torch.randn(shapes[dims])
        # 2/2 over 6 along each axis: 3 full windows of 2 per axis, 2 planes
        windows, size = 3**dims, 2**dims
        assert profiled_ops(max_pool(2), x) == 2 * windows * (size - 1)
        assert profiled_ops(avg_pool(2), x) == 2 * windows * size
        assert profiled_ops(adaptive_max(3), x) == 2 * windows * (size - 1)
        assert profiled_ops(adaptive_avg(3), x) == 2 * windows * size


def test_batched_is_batch_times_unbatched() -> None:
    module = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    x = torch.randn(4, 3, 9, 7)
    assert profiled_ops(module, x) == 4 * profiled_ops(module, x[0])


def test_subclass_counted_as_its_base() -> None:
    class MyPool(nn.AvgPool2d):
        pass

    assert profiled_ops(MyPool(2), torch.randn(1, 3, 4, 4)) == 3 * 4 * 4


def test_configs_in_records() -> None:
    module = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    with Profiler(module) as p:
        module(torch.randn(1, 1, 8, 8))
    assert p.records[0].config == PoolConfig(
        kind="max", kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1),
        ceil_mode=True,
    )  # fmt: skip
    # stride defaults to the kernel; average pooling has no dilation
    assert PoolConfig.from_module(nn.AvgPool1d(3)) == PoolConfig(
        kind="avg", kernel_size=(3,), stride=(3,), padding=(0,), dilation=(1,), ceil_mode=False
    )
    assert AdaptivePoolConfig.from_module(nn.AdaptiveMaxPool3d(2)) == AdaptivePoolConfig(
        kind="max", spatial_dims=3
    )


def test_window_sizes_by_hand() -> None:
    # k3 s2 p1 over 7: taps -1..1, 1..3, 3..5, 5..7
    assert sliding_window_sizes(7, 4, kernel=3, stride=2, padding=1, dilation=1) == [2, 3, 3, 2]
    # k2 d3 p1 over 4: taps {-1, 2}, {0, 3}, {1, 4}
    assert sliding_window_sizes(4, 3, kernel=2, stride=1, padding=1, dilation=3) == [1, 2, 1]
    # 10 -> 4: [0,3), [2,5), [5,8), [7,10)
    assert adaptive_window_sizes(10, 4) == [3, 3, 3, 3]
    # 7 -> 3: [0,3), [2,5), [4,7)
    assert adaptive_window_sizes(7, 3) == [3, 3, 3]


def test_count_is_exact_beyond_float_precision() -> None:
    planes = 2**53 + 1  # not a float: any float in the arithmetic would round it
    assert avg_pool_ops(planes, [[3]]) == 3 * planes
    assert max_pool_ops(planes, [[3]]) == 2 * planes
    assert isinstance(max_pool_ops(planes, [[3]]), int)


def test_flop_counter_mode_counts_nothing_here() -> None:
    # FlopCounterMode has no formula for pooling: the docs' comparison rests on this.
    for module in (nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)):
        with FlopCounterMode(display=False) as counter:
            module(torch.randn(1, 2, 4, 4))
        assert counter.get_total_flops() == 0


# ---------------------------------------------------------------------------------------------
# Brute force: pool by explicit loops over the output positions, enumerating every tap of each
# window jointly over the axes (no factorisation), with torch's window placement; check the
# values against torch so the enumeration is the real one, and count the work it does.

Window = tuple[list[tuple[int, ...]], int]  # in-bounds input positions, divisor


def sliding_window(position: Sequence[int], in_sizes: Sequence[int], module: nn.Module) -> Window:
    # pool_calls builds every module from per-axis tuples, so they are read as they are
    dims = len(in_sizes)
    kernel, stride, padding = module.kernel_size, module.stride, module.padding
    dilation = getattr(module, "dilation", (1,) * dims)  # average pooling has none
    starts = [position[d] * stride[d] - padding[d] for d in range(dims)]
    elements = []
    for taps in itertools.product(*(range(k) for k in kernel)):
        index = tuple(starts[d] + taps[d] * dilation[d] for d in range(dims))
        if all(0 <= index[d] < in_sizes[d] for d in range(dims)):
            elements.append(index)
    if isinstance(module, MAX_POOLS):
        return elements, 1  # max pooling divides by nothing
    # torch's average divisor: the window clipped to the padded input, or the real elements
    padded_size = math.prod(
        min(starts[d] + kernel[d], in_sizes[d] + padding[d]) - starts[d] for d in range(dims)
    )
    override = getattr(module, "divisor_override", None)
    if override:
        return elements, override
    return elements, padded_size if module.count_include_pad else len(elements)


def adaptive_window(
    position: Sequence[int], in_sizes: Sequence[int], out_sizes: Sequence[int]
) -> Window:
    # torch's documented [floor(o * in / out), ceil((o + 1) * in / out)), in floats (exact at
    # these tiny sizes), independently of the formula's integer arithmetic
    ranges = [
        range(math.floor(o * i / n), math.ceil((o + 1) * i / n))
        for o, i, n in zip(position, in_sizes, out_sizes, strict=True)
    ]
    elements = list(itertools.product(*ranges))
    return elements, len(elements)


def brute_force_pool(
    x: torch.Tensor, module: nn.Module, dims: int, out_sizes: Sequence[int]
) -> tuple[torch.Tensor, int]:
    """Pool ``x`` as ``module`` does, counting each comparison, addition and division."""
    in_sizes = tuple(x.shape[-dims:])
    planes = x.reshape(-1, *in_sizes).numpy()
    is_max = isinstance(module, MAX_POOLS + ADAPTIVE_MAX_POOLS)
    adaptive = isinstance(module, ADAPTIVE_MAX_POOLS + ADAPTIVE_AVG_POOLS)
    out = np.zeros((len(planes), *out_sizes))
    ops = 0
    for position in itertools.product(*(range(n) for n in out_sizes)):
        if adaptive:
            elements, divisor = adaptive_window(position, in_sizes, out_sizes)
        else:
            elements, divisor = sliding_window(position, in_sizes, module)
        for plane, values in zip(planes, out, strict=True):
            if not elements:  # torch's empty max window is -inf, an empty average 0
                values[position] = -math.inf if is_max else 0.0
                continue
            result = plane[elements[0]]
            for element in elements[1:]:
                ops += 1  # a comparison or an addition
                result = max(result, plane[element]) if is_max else result + plane[element]
            if not is_max:
                result /= divisor
                ops += 1  # the division
            values[position] = result
    return torch.from_numpy(out), ops


def expected_out_size(
    in_size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int:
    """torch's documented output size, with its rule that a ceil_mode window may not start in
    the right padding."""
    span = in_size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= in_size + padding:
        out -= 1
    return out


@st.composite
def pool_calls(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor, tuple[int, ...]]:
    """A random pooling module of any registered type, its input, and the output size the
    documentation predicts for it."""
    dims = draw(st.integers(1, 3))
    largest = (9, 6, 4)[dims - 1]
    kind = draw(st.sampled_from(["max", "avg", "adaptive max", "adaptive avg"]))
    if kind.startswith("adaptive"):
        in_sizes = tuple(draw(st.integers(1, largest)) for _ in range(dims))
        targets = tuple(
            draw(st.integers(1, largest) if dims == 1 else st.none() | st.integers(1, largest))
            for _ in range(dims)
        )
        family = ADAPTIVE_MAX_POOLS if kind == "adaptive max" else ADAPTIVE_AVG_POOLS
        module: nn.Module = family[dims - 1](targets if dims > 1 else targets[0])
        out_sizes = tuple(i if t is None else t for i, t in zip(in_sizes, targets, strict=True))
    else:
        kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
        dilation = (1,) * dims
        if kind == "max":
            dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
        # the input must hold at least one (dilated) window; avg_pool3d insists on a whole
        # kernel even when padded
        whole_kernel = kind == "avg" and dims == 3
        smallest = [
            max(1, k if whole_kernel else d * (k - 1) + 1 - 2 * p)
            for k, p, d in zip(kernel, padding, dilation, strict=True)
        ]
        in_sizes = tuple(draw(st.integers(low, max(low, largest))) for low in smallest)
        ceil_mode = draw(st.booleans())
        if kind == "max":
            module = MAX_POOLS[dims - 1](
                kernel, stride, padding, dilation, ceil_mode=ceil_mode,
                return_indices=draw(st.booleans()),
            )  # fmt: skip
        else:
            extra = {} if dims == 1 else {"divisor_override": draw(st.none() | st.integers(1, 3))}
            module = AVG_POOLS[dims - 1](
                kernel, stride, padding, ceil_mode=ceil_mode,
                count_include_pad=draw(st.booleans()), **extra,
            )  # fmt: skip
        out_sizes = tuple(
            expected_out_size(*axis, ceil_mode)
            for axis in zip(in_sizes, kernel, stride, padding, dilation, strict=True)
        )
    channels = draw(st.integers(1, 2))
    leading = (draw(st.integers(1, 2)), channels) if draw(st.booleans()) else (channels,)
    return module, torch.randn(*leading, *in_sizes, dtype=torch.float64), out_sizes


@settings(max_examples=25)
@given(pool_calls())
def test_ops_equal_a_brute_force_count(
    call: tuple[nn.Module, torch.Tensor, tuple[int, ...]],
) -> None:
    module, x, out_sizes = call
    dims = len(out_sizes)
    output = module(x)
    values = output[0] if isinstance(output, tuple) else output  # return_indices
    # The brute force windows are torch's: same output shape and the same values.
    assert tuple(values.shape) == (*x.shape[:-dims], *out_sizes)
    expected, brute_ops = brute_force_pool(x, module, dims, out_sizes)
    torch.testing.assert_close(values.reshape(-1, *out_sizes), expected)
    assert profiled_ops(module, x) == brute_ops
