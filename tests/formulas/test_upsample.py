"""Upsample formulas against hand-computed cases and a nested interpolation that counts its work."""

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

import opscope.formulas.upsample  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.upsample import UpsampleConfig, interpolation_ops_per_output, upsample_ops
from helpers import profiled_ops


# Each case: module, input shape, count worked out by hand. A one-axis interpolation of T taps
# is T multiplications + (T - 1) additions; D axes nest 1 + T + ... + T^(D-1) of them.
HAND_COMPUTED = {
    # copies only
    "nearest scale": (nn.Upsample(scale_factor=2), (1, 3, 4, 4), 0),
    "nearest size": (nn.UpsamplingNearest2d(size=(7, 5)), (2, 3, 4, 4), 0),
    "nearest-exact": (nn.Upsample(scale_factor=3, mode="nearest-exact"), (1, 2, 5), 0),
    # linear 2x of (2, 3, 5) -> (2, 3, 10): 60 outputs, 2 mul + 1 add each
    "linear": (nn.Upsample(scale_factor=2, mode="linear"), (2, 3, 5), 2 * 3 * 10 * (2 + 1)),
    # bilinear to 6x10: two 2-tap sums along W, one along H: 3 * 3 ops per output
    "bilinear size": (
        nn.Upsample(size=(6, 10), mode="bilinear"), (1, 2, 3, 4), 1 * 2 * 6 * 10 * (3 * 3),
    ),
    # UpsamplingBilinear2d is bilinear with align_corners=True: same count, 3x3 -> 6x6
    "UpsamplingBilinear2d": (nn.UpsamplingBilinear2d(scale_factor=2), (1, 1, 3, 3), 36 * 9),
    # trilinear: 4 + 2 + 1 two-tap sums per output, 2x2x2 -> 4x4x4
    "trilinear": (
        nn.Upsample(scale_factor=2, mode="trilinear"), (1, 1, 2, 2, 2), 64 * (7 * 3),
    ),
    # bicubic: 4 + 1 four-tap sums (4 mul + 3 add) per output; 4 * 1.5 = 6
    "bicubic": (nn.Upsample(scale_factor=1.5, mode="bicubic"), (1, 1, 4, 4), 36 * (5 * 7)),
    # non-integer scale factor: floor(5 * 1.7) = 8 outputs
    "linear fractional scale": (
        nn.Upsample(scale_factor=1.7, mode="linear", align_corners=True), (1, 1, 5), 8 * 3,
    ),
    # downsampling is interpolated the same way: 8 -> 3
    "linear down": (nn.Upsample(size=3, mode="linear"), (1, 4, 8), 4 * 3 * 3),
    # area is adaptive average pooling: H 5 -> 2 windows [0,3), [2,5); W 7 -> 3 windows [0,3),
    # [2,5), [4,7); (3 + 3) * (3 + 3 + 3) elements = additions + divisions
    "area": (nn.Upsample(size=(2, 3), mode="area"), (1, 1, 5, 7), (3 + 3) * (3 + 3 + 3)),
    # area upsampling 2 -> 4: windows [0,1), [0,1), [1,2), [1,2): one element, one division each
    "area up": (nn.Upsample(scale_factor=2, mode="area"), (2, 3, 2), 2 * 3 * 4),
}  # fmt: skip


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, input_shape, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


@pytest.mark.parametrize(
    ("mode", "input_shape"),
    [("linear", (2, 3, 5)), ("bilinear", (2, 3, 5, 4)), ("bicubic", (1, 2, 4, 5)),
     ("trilinear", (1, 2, 3, 2, 4)), ("nearest", (2, 3, 5, 4)), ("area", (1, 2, 3, 2, 4))],
)  # fmt: skip
def test_scale_factor_and_size_agree(mode: str, input_shape: tuple[int, ...]) -> None:
    # Only the output shape matters, however it was asked for.
    x = torch.randn(input_shape)
    by_scale = nn.Upsample(scale_factor=2, mode=mode)
    by_size = nn.Upsample(size=tuple(2 * n for n in input_shape[2:]), mode=mode)
    assert profiled_ops(by_scale, x) == profiled_ops(by_size, x)


def test_per_output_counts() -> None:
    assert interpolation_ops_per_output(taps=2, spatial_dims=1) == 3  # linear
    assert interpolation_ops_per_output(taps=2, spatial_dims=2) == 3 * (1 + 2)  # bilinear
    assert interpolation_ops_per_output(taps=2, spatial_dims=3) == 3 * (1 + 2 + 4)  # trilinear
    assert interpolation_ops_per_output(taps=4, spatial_dims=2) == 7 * (1 + 4)  # bicubic


def test_align_corners_does_not_change_the_count() -> None:
    x = torch.randn(1, 2, 3, 5)
    counts = {
        profiled_ops(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=corners), x)
        for corners in (False, True)
    }
    assert counts == {2 * 6 * 10 * 9}


def test_config_in_records() -> None:
    module = nn.UpsamplingBilinear2d(scale_factor=2)
    with Profiler(module) as p:
        module(torch.randn(1, 1, 2, 2))
    assert p.records[0].config == UpsampleConfig(mode="bilinear", align_corners=True)
    assert UpsampleConfig.from_module(nn.Upsample(scale_factor=2)) == UpsampleConfig(
        mode="nearest", align_corners=False
    )


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown upsampling mode"):
        upsample_ops("spline", (1, 1, 4), (1, 1, 8))


def test_count_is_exact_beyond_float_precision() -> None:
    batch = 2**53 + 1  # not a float: any float in the arithmetic would round it
    assert upsample_ops("bilinear", (batch, 1, 1, 1), (batch, 1, 1, 1)) == 9 * batch


def test_flop_counter_mode_counts_nothing_here() -> None:
    # FlopCounterMode has no formula for upsampling: the docs' comparison rests on this.
    for mode in ("nearest", "bilinear", "bicubic"):
        with FlopCounterMode(display=False) as counter:
            nn.Upsample(scale_factor=2, mode=mode)(torch.randn(1, 2, 4, 4))
        assert counter.get_total_flops() == 0


# ---------------------------------------------------------------------------------------------
# Reference: interpolate as torch documents it (source coordinate, taps and weights per axis),
# evaluating each output as nested one-axis weighted sums; check the values against torch and
# count every multiplication and addition of the data.

CUBIC_A = -0.75  # torch's bicubic convolution coefficient

Taps = list[tuple[int, float]]  # (input index, weight) along one axis


def source_coordinate(index: int, in_size: int, out_size: int, align_corners: bool) -> float:
    if align_corners:
        return index * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return (index + 0.5) * in_size / out_size - 0.5


def linear_taps(index: int, in_size: int, out_size: int, align_corners: bool) -> Taps:
    source = max(source_coordinate(index, in_size, out_size, align_corners), 0.0)
    low = int(source)
    high = min(low + 1, in_size - 1)
    weight = source - low
    return [(low, 1.0 - weight), (high, weight)]


def cubic_taps(index: int, in_size: int, out_size: int, align_corners: bool) -> Taps:
    source = source_coordinate(index, in_size, out_size, align_corners)
    low = math.floor(source)
    t = source - low

    def near(x: float) -> float:  # |x| <= 1
        return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A

    weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
    # taps beyond the border read the border element
    return [(min(max(low - 1 + k, 0), in_size - 1), w) for k, w in enumerate(weights)]


def nested_interpolation(plane: np.ndarray, taps: Sequence[Taps]) -> tuple[float, int]:
    """One output: a weighted sum along the first axis of weighted sums along the next ...,
    with the number of multiplications and additions it took."""
    if not taps:
        return float(plane), 0
    total, ops = 0.0, 0
    for position, (index, weight) in enumerate(taps[0]):
        value, inner_ops = nested_interpolation(plane[index], taps[1:])
        term = value * weight
        total = term if position == 0 else total + term
        # the product, and from the second tap on the addition
        ops += inner_ops + (1 if position == 0 else 2)
    return total, ops


def reference_upsample(
    x: torch.Tensor, out_sizes: Sequence[int], mode: str, align_corners: bool
) -> tuple[torch.Tensor, int]:
    taps_of = cubic_taps if mode == "bicubic" else linear_taps
    in_sizes = x.shape[2:]
    axis_taps = [
        [taps_of(o, i, n, align_corners) for o in range(n)]
        for i, n in zip(in_sizes, out_sizes, strict=True)
    ]
    planes = x.reshape(-1, *in_sizes).numpy()
    out = np.zeros((len(planes), *out_sizes))
    ops = 0
    for position in itertools.product(*(range(n) for n in out_sizes)):
        taps = [axis_taps[d][o] for d, o in enumerate(position)]
        for plane, values in zip(planes, out, strict=True):
            values[position], plane_ops = nested_interpolation(plane, taps)
            ops += plane_ops
    return torch.from_numpy(out).reshape(*x.shape[:2], *out_sizes), ops


MODE_DIMS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


@st.composite
def interpolations(draw: st.DrawFn) -> tuple[nn.Upsample, torch.Tensor, tuple[int, ...]]:
    mode = draw(st.sampled_from(sorted(MODE_DIMS)))
    dims = MODE_DIMS[mode]
    largest = (8, 5, 3)[dims - 1]
    in_sizes = tuple(draw(st.integers(1, largest)) for _ in range(dims))
    out_sizes = tuple(draw(st.integers(1, 2 * largest)) for _ in range(dims))
    module = nn.Upsample(size=out_sizes, mode=mode, align_corners=draw(st.booleans()))
    leading = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return module, torch.randn(*leading, *in_sizes, dtype=torch.float64), out_sizes


@settings(max_examples=25)
@given(interpolations())
def test_ops_equal_a_counted_nested_interpolation(
    call: tuple[nn.Upsample, torch.Tensor, tuple[int, ...]],
) -> None:
    module, x, out_sizes = call
    expected, reference_ops = reference_upsample(x, out_sizes, module.mode, module.align_corners)
    # The reference is torch's interpolation: same values.
    torch.testing.assert_close(module(x), expected)
    assert profiled_ops(module, x) == reference_ops
