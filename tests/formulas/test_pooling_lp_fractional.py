"""Power-average (LPPool) and fractional max pooling against hand-computed cases and
brute-force reimplementations of what torch computes, which count their own work."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
import torch
from formulas.scalar_oracle import Counted, Tally, largest, maximum, total
from helpers import profiled_ops
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import opscope.formulas.pooling  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.pooling import (
    FractionalMaxPoolConfig,
    LPPoolConfig,
    PoolConfig,
    fractional_max_pool_ops,
)

LP_POOLS = (nn.LPPool1d, nn.LPPool2d, nn.LPPool3d)
INF = math.inf

# Each case: module, input shape, count worked out by hand. Finite p: one power per input
# element, c per window of c elements (the average), 6 per output (sign 2, relu 1, the
# product 1, the kernel volume 1, the root 1). p = ±inf: c - 1 comparisons per window.
HAND_COMPUTED = {
    # 2x2/2 on 4x4, 3 planes: 48 powers, 12 windows of 4, 12 outputs
    "2d": (nn.LPPool2d(2, 2), (1, 3, 4, 4), 48 + 12 * 4 + 6 * 12),
    # k3 s2 on 7 with ceil_mode: windows [0,3), [2,5), [4,7): 3 full windows, no partial one
    "1d ceil, exact": (nn.LPPool1d(3, 3, stride=2, ceil_mode=True), (2, 7), 2 * (7 + 9 + 6 * 3)),
    # k2 s2 on 5 with ceil_mode: windows [0,2), [2,4), [4,5): 2 + 2 + 1 elements
    "1d ceil, partial": (nn.LPPool1d(2, 2, ceil_mode=True), (1, 1, 5), 5 + 5 + 6 * 3),
    # without ceil_mode the last element is in no window, and its power is still computed
    "1d floor": (nn.LPPool1d(2, 2), (1, 1, 5), 5 + 4 + 6 * 2),
    # p = 1 is not special-cased by torch: the powers and the root are still computed
    "1d p=1": (nn.LPPool1d(1, 3), (1, 1, 6), 6 + 6 + 6 * 2),
    # p = inf: max pooling of |x|, 2x2x2/2 on 4x4x4: 8 windows of 8
    "3d inf": (nn.LPPool3d(INF, 2), (1, 1, 4, 4, 4), 8 * 7),
    "2d -inf": (nn.LPPool2d(-INF, 2), (1, 1, 4, 4), 4 * 3),
    # fractional: every window holds exactly prod(kernel) elements
    "fractional 2d": (nn.FractionalMaxPool2d(3, output_size=(4, 5)), (2, 3, 9, 9), 2 * 3 * 20 * 8),
    "fractional 2d ratio": (
        nn.FractionalMaxPool2d((2, 3), output_ratio=0.5), (1, 2, 8, 10), 2 * 4 * 5 * 5,
    ),
    "fractional 2d unbatched": (nn.FractionalMaxPool2d(2, output_size=3), (4, 7, 7), 4 * 9 * 3),
    "fractional 3d": (nn.FractionalMaxPool3d(2, output_size=3), (1, 2, 6, 6, 6), 2 * 27 * 7),
    "fractional 3d indices": (
        nn.FractionalMaxPool3d((1, 2, 3), output_size=(2, 3, 3), return_indices=True),
        (2, 5, 6, 7), 2 * 18 * 5,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, input_shape, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


def test_configs_in_records() -> None:
    module = nn.LPPool2d(3, (2, 3), stride=(1, 2), ceil_mode=True)
    with Profiler(module) as p:
        module(torch.randn(1, 1, 6, 6))
    config = LPPoolConfig(norm_type=3.0, kernel_size=(2, 3), stride=(1, 2), ceil_mode=True)
    assert p.records[0].config == config
    assert config.pool() == PoolConfig("avg", (2, 3), (1, 2), (0, 0), (1, 1), ceil_mode=True)
    # stride defaults to the kernel; p = inf pools the maximum
    assert LPPoolConfig.from_module(nn.LPPool1d(INF, 3)).pool() == PoolConfig(
        "max", (3,), (3,), (0,), (1,), ceil_mode=False
    )
    assert FractionalMaxPoolConfig.from_module(
        nn.FractionalMaxPool3d(2, output_ratio=0.5)
    ) == FractionalMaxPoolConfig(kernel_size=(2, 2, 2))


def test_count_is_exact_beyond_float_precision() -> None:
    planes = 2**53 + 1
    ops = fractional_max_pool_ops((3, 3), (planes, 1, 1))
    assert ops == 8 * planes and isinstance(ops, int)


# ---------------------------------------------------------------------------------------------
# Brute force, LPPool: torch's evaluation, a = avg_pool(x ** p) over windows enumerated jointly
# over the axes, then (sign(a) * relu(|a|) * prod(kernel)) ** (1 / p), in counted scalars.


def lp_windows(
    position: Sequence[int], in_sizes: Sequence[int], config: LPPoolConfig
) -> list[tuple[int, ...]]:
    """The in-bounds input positions of the window at output ``position`` (no padding, no
    dilation: taps ``o * stride + j`` for ``j < kernel``)."""
    ranges = [
        range(o * s, min(o * s + k, n))
        for o, s, k, n in zip(position, config.stride, config.kernel_size, in_sizes, strict=True)
    ]
    return list(itertools.product(*ranges))


def sign(value: Counted) -> int:
    """torch.sign: two comparisons, both always made."""
    positive, negative = value > 0, value < 0
    return int(positive) - int(negative)


def brute_force_lp_pool(
    x: torch.Tensor, config: LPPoolConfig, out_sizes: Sequence[int]
) -> tuple[torch.Tensor, int]:
    dims = len(out_sizes)
    in_sizes = tuple(x.shape[-dims:])
    tally = Tally()
    p = config.norm_type
    volume = math.prod(config.kernel_size)
    values = []
    for plane in x.reshape(-1, *in_sizes):
        scalars = {}
        for index in itertools.product(*(range(n) for n in in_sizes)):
            scalar = Counted(float(plane[index]), tally)
            if math.isinf(p):  # max_pool(|x|), or -max_pool(-|x|): the flips are free
                scalars[index] = abs(scalar) if p > 0 else -abs(scalar)
            else:  # torch raises every input element to the power p, once
                scalars[index] = scalar.apply(lambda v: v**p)
        for position in itertools.product(*(range(n) for n in out_sizes)):
            window = [scalars[index] for index in lp_windows(position, in_sizes, config)]
            if math.isinf(p):
                result = largest(window).value
                values.append(result if p > 0 else -result)
                continue
            average = total(window) / len(window)  # torch's divisor: the clipped window
            rectified = maximum(abs(average), 0.0) * sign(average)
            values.append((rectified * volume).apply(lambda v: v ** (1 / p)).value)
    return torch.tensor(values, dtype=x.dtype).reshape(*x.shape[:-dims], *out_sizes), tally.ops


@st.composite
def lp_pool_calls(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor]:
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = draw(st.none() | st.tuples(*(st.integers(1, 3) for _ in range(dims))))
    largest = (8, 6, 4)[dims - 1]
    in_sizes = tuple(draw(st.integers(k, max(k, largest))) for k in kernel)
    norm_type = draw(st.sampled_from([1, 2, 3, 1.5, INF, -INF]))
    # LPPool1d multiplies by its kernel_size: it must be an int there
    module = LP_POOLS[dims - 1](
        norm_type, kernel[0] if dims == 1 else kernel, stride, ceil_mode=draw(st.booleans())
    )
    leading = draw(st.sampled_from([(1,), (2,), (2, 1), (1, 2)]))
    # positive inputs: a fractional power of a negative number is not a number
    return module, torch.rand(*leading, *in_sizes, dtype=torch.float64) + 0.5


@settings(max_examples=25)
@given(lp_pool_calls())
def test_lp_pool_equals_a_brute_force_count(call: tuple[nn.Module, torch.Tensor]) -> None:
    module, x = call
    config = LPPoolConfig.from_module(module)
    output = module(x)
    out_sizes = tuple(output.shape[x.dim() - len(config.kernel_size) :])
    expected, brute_ops = brute_force_lp_pool(x, config, out_sizes)
    torch.testing.assert_close(output, expected)
    assert profiled_ops(module, x) == brute_ops


def test_lp_pool_by_its_definition_would_count_less() -> None:
    """The documented comparison: ``(sum x^p)^(1/p)``, one power per input element, ``c - 1``
    additions per window and one root, costs 6 fewer per output than torch's evaluation
    (its division, sign 2, relu, two products) on full, non-overlapping windows."""
    module, x = nn.LPPool2d(2, 2), torch.rand(1, 3, 4, 4)
    definition = 48 + 12 * (4 - 1) + 12
    assert profiled_ops(module, x) == definition + 12 * 6


# ---------------------------------------------------------------------------------------------
# Brute force, fractional max pooling: torch's window placement from the samples, the maximum
# of each window by explicit comparisons; values and argmax indices must be torch's.


def fractional_starts(sample: float, in_size: int, out_size: int, kernel: int) -> list[int]:
    """torch's ``generate_intervals``: the window starts along one axis for one plane."""
    starts = [in_size - kernel] * out_size
    if out_size > 1:
        alpha = (in_size - kernel) / (out_size - 1)
        for index in range(out_size - 1):
            starts[index] = int((index + sample) * alpha) - int(sample * alpha)
    return starts


def brute_force_fractional(
    x: torch.Tensor, kernel: Sequence[int], out_sizes: Sequence[int], samples: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    dims = len(kernel)
    in_sizes = tuple(x.shape[-dims:])
    planes = x.reshape(-1, *in_sizes)
    # one sample per axis and plane; torch's 2d samples are (W, H), its 3d ones (T, H, W)
    axis_samples = samples.reshape(-1, dims)
    if dims == 2:
        axis_samples = axis_samples.flip(-1)
    values, indices, ops = [], [], 0
    for plane, plane_samples in zip(planes, axis_samples, strict=True):
        starts = [
            fractional_starts(float(u), n, o, k)
            for u, n, o, k in zip(plane_samples, in_sizes, out_sizes, kernel, strict=True)
        ]
        for position in itertools.product(*(range(o) for o in out_sizes)):
            taps = itertools.product(
                *(range(s[o], s[o] + k) for s, o, k in zip(starts, position, kernel, strict=True))
            )
            best, best_value = None, None
            for tap in taps:
                if best is not None:
                    ops += 1  # one comparison per element after the first
                if best is None or plane[tap] > best_value:
                    best, best_value = tap, plane[tap]
            values.append(best_value)
            flat = 0
            for i, n in zip(best, in_sizes, strict=True):
                flat = flat * n + i
            indices.append(flat)
    shape = (*x.shape[:-dims], *out_sizes)
    return torch.stack(values).reshape(shape), torch.tensor(indices).reshape(shape), ops


@pytest.mark.parametrize(
    "dims, kernel, in_sizes, out_sizes, leading",
    [
        (2, (2, 3), (7, 9), (4, 5), (2, 3)),
        (2, (3, 3), (5, 5), (1, 3), (1, 2)),
        (2, (1, 2), (4, 6), (4, 5), (3,)),
        (3, (2, 3, 2), (5, 6, 7), (3, 3, 4), (2, 2)),
        (3, (1, 1, 2), (3, 4, 5), (2, 3, 2), (2,)),
    ],
)
def test_fractional_max_pool_equals_a_brute_force_count(
    dims: int,
    kernel: tuple[int, ...],
    in_sizes: tuple[int, ...],
    out_sizes: tuple[int, ...],
    leading: tuple[int, ...],
) -> None:
    torch.manual_seed(0)
    x = torch.randn(*leading, *in_sizes, dtype=torch.float64)
    batch = leading[0] if len(leading) == 2 else 1
    samples = torch.rand(batch, leading[-1], dims, dtype=torch.float64)
    family = nn.FractionalMaxPool2d if dims == 2 else nn.FractionalMaxPool3d
    module = family(kernel, output_size=out_sizes, return_indices=True, _random_samples=samples)
    values, indices = module(x)
    expected_values, expected_indices, brute_ops = brute_force_fractional(
        x, kernel, out_sizes, samples
    )
    torch.testing.assert_close(values, expected_values)
    assert torch.equal(indices, expected_indices)
    assert profiled_ops(module, x) == brute_ops
