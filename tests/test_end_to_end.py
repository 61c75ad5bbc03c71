"""Whole torchvision models counted with every family, coverage reported."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from opscope import Profiler
from opscope.compare import profile_model
from opscope.zoo import ZooModel


def profiled(name: str, functional: bool = True) -> Profiler:
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None).eval()
    with torch.inference_mode(), Profiler(model, coverage=True, functional=functional) as p:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    return p


def test_convnext_tiny_conv_and_linear_equal_flop_counter() -> None:
    p = profiled("convnext_tiny")
    report = p.report
    assert report.coverage.share == 1.0
    assert report.uncounted_modules == ()  # Permute, StochasticDepth: registered, zero ops
    # Every Conv2d and Linear of ConvNeXt has a bias, so their ops are exactly FlopCounterMode's
    # 2 * MACs, and those are all the FLOPs it sees.
    assert report.ops_of("Conv2d") + report.ops_of("Linear") == report.coverage.total_flops
    calls = {s.module_type: s.calls for s in report.by_type()}
    assert calls["Linear"] == 2 * 18 + 1 and calls["Conv2d"] == 1 + 18 + 3  # stem, depthwise, downsampling
    # Linear, not Conv2d, holds most of the work (the brief's 0.59 G of about 8.9 G).
    assert report.ops_of("Linear") > 10 * report.ops_of("Conv2d")
    assert report.total_ops > report.coverage.total_flops  # norms, GELU, ... on top
    assert report.total_ops == sum(r.ops for r in report.records)


def test_vit_b_16_attention_is_counted_as_a_whole() -> None:
    report = profiled("vit_b_16").report
    assert report.coverage.share == 1.0
    calls = {s.module_type: s.calls for s in report.by_type()}
    assert calls["MultiheadAttention"] == 12
    assert calls["LayerNorm"] == 2 * 12 + 1
    # out_proj is used through its weights, never called: counted inside the attention, once.
    assert not any(r.name.endswith("out_proj") for r in report.records)
    assert calls["Linear"] == 2 * 12 + 1  # the MLPs and the head
    assert report.uncounted_modules == ()


def test_functional_attention_is_counted_and_coverage_says_so() -> None:
    # Swin's attention calls F.linear on its qkv/proj weights: invisible to hooks alone.
    assert 0.5 < profiled("swin_t", functional=False).report.coverage.share < 0.9
    report = profiled("swin_t").report
    assert report.coverage.share == 1.0
    assert 2 * report.total_macs == report.coverage.total_flops  # 4.49 published GFLOPS
    attention = [r for r in report.records if r.name == "features.1.0.attn"]
    assert [(r.module_type, r.family) for r in attention] == [("ShiftedWindowAttention", "functional")]
    assert {"linear", "bmm", "softmax"} <= {name for name, _ in attention[0].config.ops}


def test_compare_has_total_beside_conv() -> None:
    report, *_ = profile_model(ZooModel("convnext_tiny", "classification"))
    assert 0.5e9 < report.ops_of("Conv2d") < 0.7e9
    assert 8.5e9 < report.total_ops < 9.5e9


@pytest.mark.parametrize("container", [nn.Sequential, nn.ModuleList, nn.ModuleDict])
def test_empty_containers_are_not_uncounted(container: type[nn.Module]) -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.empty = container()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    model = Model()
    with Profiler(model) as p:
        model(torch.randn(1, 1, 2, 2))
    assert p.report.uncounted_modules == ()
