"""The convolution formula on Conv1d and Conv3d: hand cases and the FlopCounterMode identity.

Per call, ops = N * Cout * prod(out) * (2K [- 1 without bias]), K = (Cin/g) * prod(kernel_size).
FlopCounterMode counts 2 * N * Cout * prod(out) * K and no bias, so per call
ops == FLOPs with a bias and FLOPs - N * Cout * prod(out) without.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import opscope.formulas.conv  # noqa: F401  (registers the family)
from opscope import Profiler
from helpers import profiled_ops

Conv = nn.Conv1d | nn.Conv3d


# Each case: the module, its input shape, and N * Cout * prod(out) * (2K [- 1]) by hand, the
# output sizes from floor((L + 2p - d(k - 1) - 1) / s) + 1.
HAND_COMPUTED = {
    # kernel 3, pad 1: 10 -> 10; K = 4 * 3
    "1d bias": (nn.Conv1d(4, 6, 3, padding=1), (2, 4, 10), 2 * 6 * 10 * (2 * 4 * 3)),
    "1d no bias": (
        nn.Conv1d(4, 6, 3, padding=1, bias=False),
        (2, 4, 10),
        2 * 6 * 10 * (2 * 4 * 3 - 1),
    ),
    # stride 2, dilation 2: (11 - 4 - 1) // 2 + 1 = 4
    "1d stride dilation": (
        nn.Conv1d(2, 3, 3, stride=2, dilation=2, bias=False),
        (1, 2, 11),
        3 * 4 * (2 * 2 * 3 - 1),
    ),
    # depthwise, 'same': 7 -> 7, K = 1 * 5
    "1d depthwise same": (nn.Conv1d(4, 4, 5, groups=4, padding="same"), (1, 4, 7), 4 * 7 * (2 * 5)),
    # unbatched (C, L): N = 1; 5 - 2 + 1 = 4
    "1d unbatched": (nn.Conv1d(3, 2, 2), (3, 5), 2 * 4 * (2 * 3 * 2)),
    # circular padding changes values, not the count: 6 + 2 - 3 + 1 = 6
    "1d circular": (nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular"), (1, 1, 6), 6 * (2 * 3)),
    # kernel 3, pad 1: 4^3 -> 4^3, K = 2 * 27
    "3d bias": (nn.Conv3d(2, 4, 3, padding=1), (1, 2, 4, 4, 4), 4 * 64 * (2 * 2 * 27)),
    # (1, 3, 3) kernel, stride (1, 2, 2): (4, 7, 7) -> (4, 3, 3); K = 3 * 9
    "3d stride no bias": (
        nn.Conv3d(3, 2, (1, 3, 3), stride=(1, 2, 2), bias=False),
        (2, 3, 4, 7, 7),
        2 * 2 * (4 * 3 * 3) * (2 * 3 * 9 - 1),
    ),
    # groups 2 (2 input channels per output), dilation 2 on a 2^3 kernel: 5 - 2 - 1 + 1 = 3
    "3d groups dilation": (
        nn.Conv3d(4, 2, 2, groups=2, dilation=2),
        (1, 4, 5, 5, 5),
        2 * 27 * (2 * 2 * 8),
    ),
    # unbatched (C, D, H, W), a single product per output and no addition
    "3d unbatched": (nn.Conv3d(1, 1, 1, bias=False), (1, 2, 2, 2), 8 * 1),
    # replicate padding: (3 + 2 - 3) // 1 + 1 = 3 per axis
    "3d replicate": (
        nn.Conv3d(1, 2, 3, padding=1, padding_mode="replicate"),
        (1, 1, 3, 3, 3),
        2 * 27 * (2 * 27),
    ),
}


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, input_shape, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


@pytest.mark.parametrize(
    ("lazy", "shape", "expected"),
    [
        (nn.LazyConv1d(3, 2), (1, 2, 5), 3 * 4 * (2 * 2 * 2)),  # 5 -> 4, K = 2 * 2
        (nn.LazyConv3d(2, 2, bias=False), (1, 1, 3, 3, 3), 2 * 8 * (2 * 8 - 1)),  # 3^3 -> 2^3
    ],
    ids=["1d", "3d"],
)
def test_lazy_modules_use_the_same_formula(
    lazy: nn.Module, shape: tuple[int, ...], expected: int
) -> None:
    model = nn.Sequential(lazy)
    with Profiler(model) as p:
        model(torch.randn(shape))
    assert p.records[0].ops == expected


@st.composite
def conv_calls(draw: st.DrawFn) -> tuple[Conv, tuple[int, ...]]:
    dims = draw(st.sampled_from([1, 3]))
    groups = draw(st.sampled_from([1, 2, 4]))
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    padding = draw(st.one_of(
        st.just("same"), st.tuples(*[st.integers(0, 3)] * dims), st.just("valid")
    ))  # fmt: skip
    # torch refuses 'same' padding with a stride
    strides = st.just(1) if padding == "same" else st.integers(1, 3)
    stride = tuple(draw(strides) for _ in range(dims))
    module = (nn.Conv1d if dims == 1 else nn.Conv3d)(
        groups * draw(st.integers(1, 8)), groups * draw(st.integers(1, 8)), kernel,
        stride=stride, padding=padding, dilation=dilation, groups=groups,
        bias=draw(st.booleans()), device="meta",
    )  # fmt: skip
    reach = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    spatial = tuple(draw(st.integers(r, r + (40 if dims == 1 else 6))) for r in reach)
    batch = draw(st.sampled_from([(), (1,), (3,)]))
    return module, (*batch, module.in_channels, *spatial)


@settings(max_examples=30)
@given(conv_calls())
def test_random_configs_match_flop_counter(call: tuple[Conv, tuple[int, ...]]) -> None:
    module, shape = call
    with Profiler(module) as p, FlopCounterMode(display=False) as counter:
        module(torch.empty(shape, device="meta"))
    conv_flops = sum(
        flops for op, flops in counter.get_flop_counts()["Global"].items()
        if "convolution" in str(op)
    )  # fmt: skip
    (record,) = p.records
    assert conv_flops > 0
    bias_free_outputs = 0 if module.bias is not None else math.prod(record.output_shape)
    assert record.ops == conv_flops - bias_free_outputs
