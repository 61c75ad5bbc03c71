"""The Conv2d formula against hand-computed cases from the spec and a brute-force count."""

from __future__ import annotations

import hypothesis
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from opscope import Profiler, conv_ops
from helpers import profiled_ops


# Each case: the module, its input, and the count worked out by hand from the spec,
# N * Cout * Hout * Wout * (2 * (Cin/g) * k0 * k1 [- 1 without bias]), with Hout and Wout
# worked out by hand from the output-size formula.
HAND_COMPUTED = {
    # 3x3, pad 1: 8x8 -> 8x8
    "bias": (nn.Conv2d(4, 6, 3, padding=1), (2, 4, 8, 8), 2 * 6 * 8 * 8 * (2 * 4 * 9)),
    "no bias": (
        nn.Conv2d(4, 6, 3, padding=1, bias=False),
        (2, 4, 8, 8),
        2 * 6 * 8 * 8 * (2 * 4 * 9 - 1),
    ),
    # groups=2: each output sees 4/2 = 2 input channels; 3x3 no pad: 8x8 -> 6x6
    "groups 2": (nn.Conv2d(4, 6, 3, groups=2), (1, 4, 8, 8), 1 * 6 * 6 * 6 * (2 * 2 * 9)),
    # depthwise: one input channel per output; no bias
    "depthwise": (
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        (1, 8, 10, 10),
        1 * 8 * 10 * 10 * (2 * 1 * 9 - 1),
    ),
    # stride 2, pad 3, 7x7: floor((32 + 6 - 6 - 1) / 2) + 1 = 16
    "stride": (nn.Conv2d(3, 16, 7, stride=2, padding=3), (1, 3, 32, 32), 16 * 16 * 16 * (2 * 3 * 49)),
    # padding 2 on a 3x3: 5 + 4 - 2 = 7
    "padding": (nn.Conv2d(2, 3, 3, padding=2), (1, 2, 5, 5), 3 * 7 * 7 * (2 * 2 * 9)),
    # dilation 2: effective kernel 5, 9 - 5 + 1 = 5
    "dilation": (nn.Conv2d(2, 3, 3, dilation=2, bias=False), (1, 2, 9, 9), 3 * 5 * 5 * (2 * 2 * 9 - 1)),
    # 'same': output 9x11 = input
    "same": (nn.Conv2d(2, 4, (3, 5), padding="same"), (1, 2, 9, 11), 4 * 9 * 11 * (2 * 2 * 15)),
    # 'valid' is no padding: 9 - 3 + 1 = 7, 11 - 5 + 1 = 7
    "valid": (nn.Conv2d(2, 4, (3, 5), padding="valid"), (1, 2, 9, 11), 4 * 7 * 7 * (2 * 2 * 15)),
    # non-square kernel and stride: (12 - 1)/1 + 1 = 12 by (12 - 5)//2 + 1 = 4
    "non-square": (
        nn.Conv2d(3, 5, (1, 5), stride=(1, 2), bias=False),
        (1, 3, 12, 12),
        5 * 12 * 4 * (2 * 3 * 5 - 1),
    ),
    # unbatched (C, H, W): N = 1
    "unbatched": (nn.Conv2d(3, 4, 3), (3, 6, 6), 1 * 4 * 4 * 4 * (2 * 3 * 9)),
    # reflect padding changes values, not the count
    "reflect": (
        nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
        (1, 2, 4, 4),
        2 * 4 * 4 * (2 * 2 * 9),
    ),
    # a 1x1 bias-free conv over one channel: one multiplication, no addition
    "single product": (nn.Conv2d(1, 1, 1, bias=False), (1, 1, 3, 3), 9 * 1),
}


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, input_shape, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


def test_spec_example_resnet_stem() -> None:
    # The first conv of a ResNet: 3 -> 64, 7x7/2, 224 -> 112, no bias.
    assert conv_ops(
        batch=1, in_channels=3, out_channels=64, output_size=(112, 112),
        kernel_size=(7, 7), groups=1, bias=False,
    ) == 64 * 112 * 112 * (2 * 3 * 7 * 7 - 1)  # fmt: skip


def test_count_is_exact_beyond_float_precision() -> None:
    # 2**53 + 1 is not a float: any float in the arithmetic would round it.
    huge = conv_ops(
        batch=2**53 + 1, in_channels=1, out_channels=1, output_size=(1, 1),
        kernel_size=(1, 1), groups=1, bias=True,
    )  # fmt: skip
    assert huge == 2 * (2**53 + 1)
    assert isinstance(huge, int)


def test_groups_must_divide_channels() -> None:
    with pytest.raises(ValueError, match="divisible"):
        conv_ops(
            batch=1, in_channels=3, out_channels=4, output_size=(2, 2),
            kernel_size=(3, 3), groups=2, bias=True,
        )  # fmt: skip


def brute_force_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> tuple[torch.Tensor, int]:
    """A naive cross-correlation that counts every multiplication and addition it does."""
    n_batch, c_in, height, width = x.shape
    c_out, c_in_per_group, k0, k1 = weight.shape
    padded = nn.functional.pad(x, (padding[1], padding[1], padding[0], padding[0])).tolist()
    w = weight.tolist()
    b = bias.tolist() if bias is not None else None
    h_out = (height + 2 * padding[0] - dilation[0] * (k0 - 1) - 1) // stride[0] + 1
    w_out = (width + 2 * padding[1] - dilation[1] * (k1 - 1) - 1) // stride[1] + 1
    out_per_group = c_out // groups
    out = [[[[0.0] * w_out for _ in range(h_out)] for _ in range(c_out)] for _ in range(n_batch)]
    ops = 0
    for n in range(n_batch):
        for co in range(c_out):
            first_channel = (co // out_per_group) * c_in_per_group
            for i in range(h_out):
                for j in range(w_out):
                    acc = None
                    for ci in range(c_in_per_group):
                        for u in range(k0):
                            for v in range(k1):
                                value = padded[n][first_channel + ci][i * stride[0] + u * dilation[0]][
                                    j * stride[1] + v * dilation[1]
                                ]
                                product = value * w[co][ci][u][v]
                                ops += 1  # the multiplication
                                if acc is None:
                                    acc = product
                                else:
                                    acc += product
                                    ops += 1  # the addition
                    if b is not None:
                        acc += b[co]
                        ops += 1
                    out[n][co][i][j] = acc
    return torch.tensor(out, dtype=x.dtype), ops


@st.composite
def small_conv_calls(draw: st.DrawFn) -> tuple[nn.Conv2d, torch.Tensor]:
    groups = draw(st.integers(1, 3))
    in_channels = groups * draw(st.integers(1, 3))
    out_channels = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # The input must hold at least one dilated kernel window.
    height = draw(st.integers(max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]), 7))
    width = draw(st.integers(max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]), 7))
    padding_mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "circular"]))
    # reflect and circular padding must be smaller than the input
    hypothesis.assume(padding_mode == "zeros" or (height > padding[0] and width > padding[1]))
    module = nn.Conv2d(
        in_channels, out_channels, kernel, stride=stride, padding=padding, dilation=dilation,
        groups=groups, bias=draw(st.booleans()), padding_mode=padding_mode,
    ).double()  # fmt: skip
    batch = draw(st.integers(1, 2))
    shape = (batch, in_channels, height, width) if draw(st.booleans()) else (in_channels, height, width)
    return module, torch.randn(shape, dtype=torch.float64)


@given(small_conv_calls())
def test_ops_equal_a_brute_force_count(call: tuple[nn.Conv2d, torch.Tensor]) -> None:
    module, x = call
    batched = x if x.dim() == 4 else x.unsqueeze(0)
    expected_out, brute_ops = brute_force_conv2d(
        batched, module.weight.detach(), None if module.bias is None else module.bias.detach(),
        module.stride, module.padding, module.dilation, module.groups,
    )  # fmt: skip
    if module.padding_mode == "zeros":
        # The brute force is a real convolution, not just a counter: it agrees with torch.
        torch.testing.assert_close(module(batched).detach(), expected_out)
    assert profiled_ops(module, x) == brute_ops
