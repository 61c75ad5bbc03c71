"""An independent oracle: PyTorch's own FlopCounterMode.

torch.utils.flop_counter counts 2 * N*Cout*Hout*Wout * (Cin/g)*k0*k1 per convolution and
ignores bias; that is exactly our with-bias count, so for any model:

    total_ops == FlopCounterMode's convolution FLOPs - sum over bias-free calls of N*Cout*Hout*Wout
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from opscope import Profiler

MODELS = [
    "alexnet",
    "convnext_tiny",
    "densenet121",
    "efficientnet_b0",
    "googlenet",
    "mnasnet1_0",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "resnet50",
    "resnext50_32x4d",
    "shufflenet_v2_x1_0",
    "squeezenet1_0",
    "vgg11_bn",
    "inception_v3",
]


def profile_with_oracle(model: nn.Module, x: torch.Tensor) -> tuple[Profiler, int]:
    with Profiler(model, include=[nn.Conv2d]) as profiler, FlopCounterMode(display=False) as counter:
        model(x)
    conv_flops = sum(
        flops
        for op, flops in counter.get_flop_counts()["Global"].items()
        if "convolution" in str(op)
    )
    return profiler, conv_flops


def assert_identity(profiler: Profiler, conv_flops: int) -> None:
    bias_free_outputs = sum(math.prod(r.output_shape) for r in profiler.records if not r.bias)
    assert profiler.total_ops == conv_flops - bias_free_outputs


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_models_match_flop_counter(name: str) -> None:
    size = 299 if name == "inception_v3" else 224
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.empty(2, 3, size, size)
    profiler, conv_flops = profile_with_oracle(model, x)
    assert len(profiler.records) >= 5
    assert conv_flops > 0
    assert_identity(profiler, conv_flops)


@st.composite
def conv_configs(draw: st.DrawFn) -> tuple[nn.Conv2d, tuple[int, ...]]:
    groups = draw(st.sampled_from([1, 2, 4]))
    kernel = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.just("same"), st.tuples(st.integers(0, 4), st.integers(0, 4))))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    module = nn.Conv2d(
        groups * draw(st.integers(1, 16)), groups * draw(st.integers(1, 16)), kernel,
        stride=stride, padding=padding, dilation=dilation, groups=groups,
        bias=draw(st.booleans()), device="meta",
    )  # fmt: skip
    reach = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    spatial = tuple(draw(st.integers(r, r + 64)) for r in reach)
    batch = draw(st.sampled_from([(), (1,), (3,)]))
    return module, (*batch, module.in_channels, *spatial)


@settings(max_examples=60)
@given(conv_configs())
def test_random_configs_match_flop_counter(config: tuple[nn.Conv2d, tuple[int, ...]]) -> None:
    module, shape = config
    profiler, conv_flops = profile_with_oracle(module, torch.empty(shape, device="meta"))
    assert_identity(profiler, conv_flops)
