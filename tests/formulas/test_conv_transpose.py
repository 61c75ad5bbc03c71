"""The ConvTranspose1d/2d/3d formula: hand cases, a brute-force scatter, and FlopCounterMode."""

from __future__ import annotations

import itertools
import math
from functools import reduce
from operator import getitem

import hypothesis
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import opscope.formulas.conv_transpose  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.conv_transpose import (
    ConvTransposeConfig,
    axis_scatter_counts,
    conv_transpose_ops,
)
from helpers import profiled_ops

ConvTranspose = nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d
TRANSPOSED = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
FUNCTIONAL = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


# Each case: the module, its input shape, and the count worked out by hand. Per axis, input i and
# tap t land on o = i*stride + t*dilation - padding; "landing" counts the (i, t) pairs with
# 0 <= o < Lout and "receiving" the positions o hit at least once. With C = N * Cout planes:
#   ops = C*(Cin/g)*landing  [multiplications]  + C*(Cin/g)*landing - C*receiving  [accumulation]
#         + C*prod(out) if bias
HAND_COMPUTED = {
    # moduleprofiler's example: Lin 2, kernel 3 -> Lout 4, positions receive 1, 2, 2, 1 products:
    # 6 multiplications, 6 - 4 = 2 additions
    "1d no bias": (nn.ConvTranspose1d(1, 1, 3, bias=False), (1, 1, 2), 6 + 2),
    "1d bias": (nn.ConvTranspose1d(1, 1, 3), (1, 1, 2), 6 + 2 + 4),
    # padding 1 crops: Lout = 3 - 2 + 2 + 1 = 4; tap offsets -1, 0, 1 land 3 + 4 + 3 = 10 of 12
    # products, on all 4 positions; C = 3 planes, Cin = 2
    "1d padding crops": (
        nn.ConvTranspose1d(2, 3, 3, padding=1),
        (1, 2, 4),
        3 * 2 * 10 + (3 * 2 * 10 - 3 * 4) + 3 * 4,
    ),
    # kernel 1, stride 2: Lout = 2*2 + 1 = 5, positions 0, 2, 4 receive one product each and
    # 1, 3 none; the bias is still added to all 5
    "1d gaps bias": (nn.ConvTranspose1d(1, 1, 1, stride=2), (1, 1, 3), 3 + 0 + 5),
    "1d gaps no bias": (nn.ConvTranspose1d(1, 1, 1, stride=2, bias=False), (1, 1, 3), 3 + 0),
    # output_padding 1 without padding: Lout = 4 + 1 + 1 + 1 = 7, the 6 products land once each
    # on positions 0..5, position 6 gets only the bias
    "1d output_padding": (
        nn.ConvTranspose1d(1, 1, 2, stride=2, output_padding=1),
        (1, 1, 3),
        6 + 0 + 7,
    ),
    # dilation 3: Lout = 1 + 3 + 1 = 5, positions {0, 1} + {3, 4}; position 2 receives nothing
    "1d dilation": (nn.ConvTranspose1d(1, 1, 2, dilation=3, bias=False), (1, 1, 2), 4 + 0),
    # the doctest's DCGAN layer: per axis 7 + 8 + 8 + 7 = 30 landing pairs on all 16 positions
    "2d dcgan": (
        nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
        (1, 16, 8, 8),
        8 * 16 * 30 * 30 + (8 * 16 * 30 * 30 - 8 * 16 * 16) + 8 * 16 * 16,
    ),
    # kernel 2 stride 2: a 3x3 input tiles a 6x6 output, one product per position and channel;
    # groups 2 gives each output 4/2 = 2 input channels
    "2d groups": (
        nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2),
        (1, 4, 3, 3),
        6 * 2 * 36 + (6 * 2 * 36 - 6 * 36) + 6 * 36,
    ),
    # unbatched (C, H, W): N = 1; 3x3 input, kernel 2 -> 4x4; per axis 6 pairs on 4 positions
    "2d unbatched": (
        nn.ConvTranspose2d(3, 2, 2, bias=False),
        (3, 3, 3),
        2 * 3 * 6 * 6 + (2 * 3 * 6 * 6 - 2 * 4 * 4),
    ),
    # 3d tiling: 2^3 -> 4^3, N = 2, 2 -> 2 channels
    "3d": (
        nn.ConvTranspose3d(2, 2, 2, stride=2, bias=False),
        (2, 2, 2, 2, 2),
        2 * 2 * 2 * 64 + (2 * 2 * 2 * 64 - 2 * 2 * 64),
    ),
    # non-cubic: (Lin, k, s, p) = (2, 3, 1, 0) -> 4 with (6, 4); (3, 1, 2, 0) -> 5 with (3, 3);
    # (2, 2, 1, 1) -> 1 with (2, 1): only taps 1 of input 0 and 0 of input 1 land
    "3d mixed axes": (
        nn.ConvTranspose3d(1, 1, (3, 1, 2), stride=(1, 2, 1), padding=(0, 0, 1)),
        (1, 1, 2, 3, 2),
        (6 * 3 * 2) + (6 * 3 * 2 - 4 * 3 * 1) + 4 * 5 * 1,
    ),
}


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, input_shape, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


def test_output_size_argument_is_read_from_the_real_output() -> None:
    # Lin 3, kernel 3, stride 2: positions 2i + t cover 0..6 with 9 products (7 by default);
    # output_size=[8] adds position 7, which receives nothing but its bias.
    module = nn.ConvTranspose1d(1, 1, 3, stride=2)
    x = torch.randn(1, 1, 3)
    assert profiled_ops(module, x) == 9 + (9 - 7) + 7
    assert profiled_ops(module, x, output_size=[8]) == 9 + (9 - 7) + 8


def test_config_records_output_padding() -> None:
    module = nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=(1, 0), groups=2)
    assert ConvTransposeConfig.from_module(module) == ConvTransposeConfig(
        kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=2,
        bias=True, padding_mode="zeros", output_padding=(1, 0),
    )  # fmt: skip
    with Profiler(module) as p:
        module(torch.randn(1, 2, 4, 4))
    record = p.records[0]
    assert record.family == "ConvTranspose2d"
    assert record.to_dict()["output_padding"] == [1, 0]


@pytest.mark.parametrize(
    ("lazy", "shape", "expected"),
    [
        # 1 -> 2 channels, Lin 3, kernel 2: Lout 4, 6 pairs on 4 positions
        (nn.LazyConvTranspose1d(2, 2), (1, 1, 3), 2 * 6 + (2 * 6 - 2 * 4) + 2 * 4),
        (nn.LazyConvTranspose2d(2, 2, bias=False), (1, 1, 3, 3), 2 * 36 + (2 * 36 - 2 * 16)),
        (nn.LazyConvTranspose3d(1, 1, stride=2, bias=False), (1, 1, 2, 2, 2), 8 + 0),
    ],
    ids=["1d", "2d", "3d"],
)
def test_lazy_modules_use_the_same_formula(
    lazy: nn.Module, shape: tuple[int, ...], expected: int
) -> None:
    model = nn.Sequential(lazy)
    with Profiler(model) as p:
        model(torch.randn(shape))
    assert p.records[0].ops == expected


def test_count_is_exact_beyond_float_precision() -> None:
    huge = conv_transpose_ops(
        batch=2**53 + 1, in_channels=1, out_channels=1, input_size=(1,), output_size=(1,),
        kernel_size=(1,), stride=(1,), padding=(0,), dilation=(1,), groups=1, bias=True,
    )  # fmt: skip
    assert huge == 2 * (2**53 + 1)
    assert isinstance(huge, int)


def test_invalid_arguments_are_refused() -> None:
    settings_1d = dict(kernel_size=(3,), stride=(1,), padding=(0,), dilation=(1,), bias=True)
    with pytest.raises(ValueError, match="divisible"):
        conv_transpose_ops(
            batch=1, in_channels=3, out_channels=4, input_size=(2,), output_size=(4,),
            groups=2, **settings_1d,
        )  # fmt: skip
    with pytest.raises(ValueError, match="spatial axes"):
        conv_transpose_ops(
            batch=1, in_channels=1, out_channels=1, input_size=(2, 2), output_size=(4, 4),
            groups=1, **settings_1d,
        )  # fmt: skip


# -- one axis against a direct enumeration -----------------------------------------------------


def enumerate_axis(
    in_len: int, out_len: int, kernel: int, stride: int, padding: int, dilation: int
) -> tuple[int, int]:
    hits = [
        i * stride + t * dilation - padding for i in range(in_len) for t in range(kernel)
    ]
    landed = [o for o in hits if 0 <= o < out_len]
    return len(landed), len(set(landed))


@settings(max_examples=100)  # pure integer arithmetic: milliseconds
@given(
    st.integers(1, 9), st.integers(1, 30), st.integers(1, 6), st.integers(1, 5),
    st.integers(0, 6), st.integers(1, 4),
)  # fmt: skip
def test_axis_counts_match_an_enumeration(
    in_len: int, out_len: int, kernel: int, stride: int, padding: int, dilation: int
) -> None:
    # Any output length, not only those torch would produce: the runs must be clipped right.
    assert axis_scatter_counts(
        input_size=in_len, output_size=out_len, kernel_size=kernel, stride=stride,
        padding=padding, dilation=dilation,
    ) == enumerate_axis(in_len, out_len, kernel, stride, padding, dilation)  # fmt: skip


# -- brute force: a real scatter that counts what it computes ----------------------------------


def brute_force_conv_transpose(
    module: ConvTranspose, x: torch.Tensor, output_size: tuple[int, ...]
) -> tuple[torch.Tensor, int]:
    """Scatter every (input element, kernel weight) product that lands inside the output,
    accumulate, add the bias; count each multiplication and addition done."""
    n_batch, c_in, *in_spatial = x.shape
    weight = module.weight.detach()
    out_per_group = weight.shape[1]
    in_per_group = c_in // module.groups
    values, w = x.tolist(), weight.tolist()
    sums: dict[tuple[int, ...], float] = {}
    ops = 0
    for n, ci in itertools.product(range(n_batch), range(c_in)):
        first_out = (ci // in_per_group) * out_per_group
        for position in itertools.product(*map(range, in_spatial)):
            value = reduce(getitem, position, values[n][ci])
            for co, taps in itertools.product(
                range(out_per_group), itertools.product(*map(range, module.kernel_size))
            ):
                target = tuple(
                    i * s + t * d - p
                    for i, t, s, d, p in zip(
                        position, taps, module.stride, module.dilation, module.padding
                    )
                )
                if not all(0 <= o < size for o, size in zip(target, output_size)):
                    continue  # cropped: an efficient scatter never computes it
                product = value * reduce(getitem, taps, w[ci][co])
                ops += 1
                key = (n, first_out + co, *target)
                if key in sums:
                    sums[key] += product
                    ops += 1
                else:
                    sums[key] = product
    out = torch.zeros(n_batch, module.out_channels, *output_size, dtype=torch.float64)
    for key, total in sums.items():
        out[key] = total
    if module.bias is not None:
        out += module.bias.detach().view(-1, *[1] * len(output_size))
        ops += out.numel()  # one bias addition per output element
    return out, ops


@st.composite
def transposed_calls(
    draw: st.DrawFn,
) -> tuple[ConvTranspose, torch.Tensor, list[int] | None]:
    dims = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    use_output_size = draw(st.booleans())
    kernel, stride, padding, dilation, extra, in_sizes = [], [], [], [], [], []
    for _ in range(dims):
        kernel.append(draw(st.integers(1, 3 if dims < 3 else 2)))
        stride.append(draw(st.integers(1, 3)))
        padding.append(draw(st.integers(0, 2)))
        dilation.append(draw(st.integers(1, 2)))
        # torch takes output_padding below max(stride, dilation), output_size up to
        # stride - 1 beyond the default length
        limit = stride[-1] if use_output_size else max(stride[-1], dilation[-1])
        extra.append(draw(st.integers(0, limit - 1)))
        in_sizes.append(draw(st.integers(1, 4 if dims < 3 else 2)))
    default = [
        (n - 1) * s - 2 * p + d * (k - 1) + 1
        for n, s, p, d, k in zip(in_sizes, stride, padding, dilation, kernel)
    ]
    hypothesis.assume(min(default) >= 1)
    module = TRANSPOSED[dims](
        groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), tuple(kernel),
        stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
        output_padding=0 if use_output_size else tuple(extra), groups=groups,
        bias=draw(st.booleans()),
    ).double()  # fmt: skip
    batch = draw(st.sampled_from([(), (1,), (2,)]))
    x = torch.randn(*batch, module.in_channels, *in_sizes, dtype=torch.float64)
    output_size = [size + e for size, e in zip(default, extra)] if use_output_size else None
    return module, x, output_size


@settings(max_examples=40)
@given(transposed_calls())
def test_ops_equal_a_brute_force_scatter(
    call: tuple[ConvTranspose, torch.Tensor, list[int] | None],
) -> None:
    module, x, output_size = call
    kwargs = {} if output_size is None else {"output_size": output_size}
    expected = module(x, **kwargs).detach()
    batched = x if x.dim() == module.weight.dim() else x.unsqueeze(0)
    spatial = tuple(expected.shape[-len(module.kernel_size) :])
    brute_out, brute_ops = brute_force_conv_transpose(module, batched, spatial)
    # The brute force is a real transposed convolution, not just a counter: it agrees with torch.
    torch.testing.assert_close(brute_out.reshape(expected.shape), expected)
    assert profiled_ops(module, x, **kwargs) == brute_ops


# -- FlopCounterMode: 2 * every product, cropped ones included, bias ignored -------------------


def flop_counter_ops(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(opscope's ops, FlopCounterMode's convolution FLOPs) of one call."""
    with Profiler(module) as p, FlopCounterMode(display=False) as counter:
        module(x)
    flops = sum(
        count for op, count in counter.get_flop_counts()["Global"].items()
        if "convolution" in str(op)
    )  # fmt: skip
    return p.records[0].ops, flops


def ones_scatter(module: ConvTranspose, in_spatial: tuple[int, ...]) -> tuple[int, int]:
    """An independent measurement by torch of (landing pairs, receiving positions) per channel
    pair: transpose-convolve ones with a kernel of ones; each output then holds the number of
    products landing on it."""
    landed = FUNCTIONAL[len(in_spatial)](
        torch.ones(1, 1, *in_spatial, dtype=torch.float64),
        torch.ones(1, 1, *module.kernel_size, dtype=torch.float64),
        stride=module.stride, padding=module.padding, output_padding=module.output_padding,
        dilation=module.dilation,
    )  # fmt: skip
    return int(landed.sum().item()), int(torch.count_nonzero(landed).item())


@st.composite
def flop_counter_calls(
    draw: st.DrawFn, *, cropping: bool
) -> tuple[ConvTranspose, torch.Tensor]:
    """A call on random settings; with ``cropping=False``, no padding, dilation or
    output_padding and a stride no longer than the kernel: no product is cropped and every
    output position receives one."""
    dims = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 4]))
    axes = range(dims)
    kernel = tuple(draw(st.integers(1, 5)) for _ in axes)
    if cropping:
        stride = tuple(draw(st.integers(1, 4)) for _ in axes)
        dilation = tuple(draw(st.integers(1, 3)) for _ in axes)
        padding = tuple(draw(st.integers(0, 3)) for _ in axes)
        # torch takes output_padding below max(stride, dilation)
        limits = [max(s, d) - 1 for s, d in zip(stride, dilation)]
        output_padding = tuple(draw(st.integers(0, limit)) for limit in limits)
    else:
        stride = tuple(draw(st.integers(1, k)) for k in kernel)
        dilation, padding, output_padding = (1,) * dims, (0,) * dims, (0,) * dims
    module = TRANSPOSED[dims](
        groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 4)), kernel,
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
        groups=groups, bias=draw(st.booleans()),
    )  # fmt: skip
    in_spatial = tuple(draw(st.integers(1, 6 if dims < 3 else 3)) for _ in axes)
    hypothesis.assume(all(
        (n - 1) * s - 2 * p + d * (k - 1) + o + 1 >= 1
        for n, s, p, d, k, o in zip(in_spatial, stride, padding, dilation, kernel, output_padding)
    ))  # fmt: skip
    batch = draw(st.sampled_from([(), (1,), (3,)]))
    return module, torch.randn(*batch, module.in_channels, *in_spatial)


@settings(max_examples=30)
@given(flop_counter_calls(cropping=True))
def test_flop_counter_relation(call: tuple[ConvTranspose, torch.Tensor]) -> None:
    # FlopCounterMode counts 2 * N * Cin * (Cout/g) * prod(in) * prod(k): every product, also
    # those padding crops, and no bias. With landing/receiving measured by torch (ones_scatter):
    #   ops = flops - 2 * C * (Cin/g) * (prod(in) * prod(k) - landing) - C * receiving
    #         + C * prod(out) if bias,       C = N * Cout
    module, x = call
    dims = len(module.kernel_size)
    in_spatial = tuple(x.shape[-dims:])
    ops, flops = flop_counter_ops(module, x)
    out_spatial = tuple(module(x).shape[-dims:])
    landing, receiving = ones_scatter(module, in_spatial)
    planes = math.prod(x.shape[: -dims - 1]) * module.out_channels
    per_plane = module.in_channels // module.groups
    cropped = math.prod(in_spatial) * math.prod(module.kernel_size) - landing
    bias = planes * math.prod(out_spatial) if module.bias is not None else 0
    assert ops == flops - 2 * planes * per_plane * cropped - planes * receiving + bias


@settings(max_examples=25)
@given(flop_counter_calls(cropping=False))
def test_flop_counter_identity_without_cropping(call: tuple[ConvTranspose, torch.Tensor]) -> None:
    # Nothing cropped and every output position reached: the convolution's own identity holds,
    # ops == FLOPs with a bias and FLOPs - N * Cout * prod(out) without.
    module, x = call
    ops, flops = flop_counter_ops(module, x)
    outputs = math.prod(module(x).shape)
    assert ops == (flops if module.bias is not None else flops - outputs)
