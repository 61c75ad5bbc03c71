"""Fold against hand-computed cases and a brute-force fold that adds block by block and counts
its additions; Unfold counts nothing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import profiled_ops
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import opscope.formulas.fold  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.fold import FoldConfig, fold_axis, fold_ops

# Each case: module, input shape, count worked out by hand: per plane, the block elements that
# land inside the output minus the output elements they land on.
HAND_COMPUTED = {
    # 2x2 blocks at stride 1 into 4x5: rows 0,1,1,2,2,3 (6 taps on 4 rows), columns 8 taps on
    # 5 columns: 48 - 20 per plane, 3 planes
    "overlapping": (nn.Fold((4, 5), 2), (1, 12, 12), 3 * (48 - 20)),
    # stride = kernel: the blocks tile the output, nothing overlaps
    "tiling": (nn.Fold((4, 6), 2, stride=2), (2, 4 * 4, 6), 0),
    # stride 3 > kernel 2 on 8: taps 0,1,3,4,6,7 per axis, gaps at 2 and 5: no overlap
    "gaps": (nn.Fold(8, 2, stride=3), (1, 4, 9), 0),
    # kernel 3 stride 2 padding 1 into 5x5: taps -1..1, 1..3, 3..5 per axis, 7 inside on 5
    "padded": (nn.Fold(5, 3, padding=1, stride=2), (1, 9, 9), 7 * 7 - 5 * 5),
    # dilation 2, kernel 2 into 1x5: columns 0,2 | 1,3 | 2,4 (3 blocks): 6 taps on 5 columns
    "dilated": (nn.Fold((1, 5), (1, 2), dilation=2), (2, 2, 3), 2 * (6 - 5)),
    # unbatched (C * 4, L) into (C, 3, 3): 4 blocks of 2x2, taps 0,1,1,2 per axis: 16 - 9
    "unbatched": (nn.Fold(3, 2), (2 * 4, 4), 2 * (16 - 9)),
}


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, input_shape, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


def test_config_in_records() -> None:
    module = nn.Fold((6, 5), (3, 2), dilation=(1, 2), padding=1, stride=(2, 1))
    with Profiler(module) as p:
        module(torch.randn(1, 6, 3 * 5))
    assert p.records[0].config == FoldConfig(
        kernel_size=(3, 2), dilation=(1, 2), padding=(1, 1), stride=(2, 1)
    )


def test_unfold_counts_nothing() -> None:
    module = nn.Unfold(3, padding=1, stride=2)
    x = torch.randn(2, 3, 7, 7)
    assert profiled_ops(module, x) == 0
    # folding the blocks back adds where they overlap: per axis taps -1..1, 1..3, 3..5, 5..7,
    # 10 inside on 7 positions
    assert profiled_ops(nn.Fold(7, 3, padding=1, stride=2), module(x)) == 2 * 3 * (10 * 10 - 49)


def test_count_is_exact_beyond_float_precision() -> None:
    planes = 2**53 + 1
    ops = fold_ops(planes, (3, 3), (2, 2), (1, 1), (0, 0), (1, 1))
    assert ops == 7 * planes and isinstance(ops, int)
    assert fold_axis(3, kernel=2, dilation=1, padding=0, stride=1) == (4, 3)


# ---------------------------------------------------------------------------------------------
# Brute force: place every block element at its position, adding it when the position already
# holds a value; the result must be torch's fold.


def brute_force_fold(
    x: torch.Tensor,
    output_size: tuple[int, int],
    kernel: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    stride: tuple[int, int],
) -> tuple[torch.Tensor, int]:
    """Fold ``x`` (``(N, C * kh * kw, L)`` or unbatched) block by block, counting additions."""
    batched = x.dim() == 3
    columns = x if batched else x.unsqueeze(0)
    kh, kw = kernel
    channels = columns.shape[1] // (kh * kw)
    # torch's documented number of blocks along each axis
    blocks = [
        (o + 2 * p - d * (k - 1) - 1) // s + 1
        for o, k, d, p, s in zip(output_size, kernel, dilation, padding, stride, strict=True)
    ]
    assert math.prod(blocks) == columns.shape[2]
    out = torch.zeros(columns.shape[0], channels, *output_size, dtype=x.dtype)
    ops = 0
    for n, c in itertools.product(range(columns.shape[0]), range(channels)):
        placed: set[tuple[int, int]] = set()
        for (bh, bw), (i, j) in itertools.product(
            itertools.product(range(blocks[0]), range(blocks[1])),
            itertools.product(range(kh), range(kw)),
        ):
            row = bh * stride[0] - padding[0] + i * dilation[0]
            col = bw * stride[1] - padding[1] + j * dilation[1]
            if not (0 <= row < output_size[0] and 0 <= col < output_size[1]):
                continue  # a tap in the padding is dropped
            value = columns[n, (c * kh + i) * kw + j, bh * blocks[1] + bw]
            if (row, col) in placed:
                out[n, c, row, col] += value
                ops += 1
            else:
                out[n, c, row, col] = value
                placed.add((row, col))
    return (out if batched else out[0]), ops


@st.composite
def fold_calls(draw: st.DrawFn) -> tuple[nn.Fold, torch.Tensor, dict[str, tuple[int, ...]]]:
    pairs = st.tuples(st.integers(1, 3), st.integers(1, 3))
    kernel, dilation, stride = draw(pairs), draw(pairs), draw(pairs)
    padding = tuple(draw(st.integers(0, k // 2 + 1)) for k in kernel)
    # at least one block along each axis
    output_size = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 7))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    )
    fold_settings = {
        "output_size": output_size,
        "kernel": kernel,
        "dilation": dilation,
        "padding": padding,
        "stride": stride,
    }
    blocks = math.prod(
        (o + 2 * p - d * (k - 1) - 1) // s + 1
        for o, k, d, p, s in zip(output_size, kernel, dilation, padding, stride, strict=True)
    )
    channels = draw(st.integers(1, 2))
    leading = (draw(st.integers(1, 2)),) if draw(st.booleans()) else ()
    x = torch.randn(*leading, channels * math.prod(kernel), blocks, dtype=torch.float64)
    module = nn.Fold(output_size, kernel, dilation=dilation, padding=padding, stride=stride)
    return module, x, fold_settings


@settings(max_examples=40)
@given(fold_calls())
def test_ops_equal_a_brute_force_count(
    call: tuple[nn.Fold, torch.Tensor, dict[str, tuple[int, ...]]],
) -> None:
    module, x, fold_settings = call
    expected, brute_ops = brute_force_fold(x, **fold_settings)
    torch.testing.assert_close(module(x), expected)
    assert profiled_ops(module, x) == brute_ops
