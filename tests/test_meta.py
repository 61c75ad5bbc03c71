"""The meta shortcuts give the shapes torch itself gives, and touch nothing off meta."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from opscope.meta import MetaShortcuts

NORMS = [
    (nn.BatchNorm2d(4), (2, 4, 5, 5)),
    (nn.LayerNorm(5), (2, 3, 5)),
    (nn.GroupNorm(2, 4), (2, 4, 3, 3)),
    (nn.InstanceNorm2d(4, affine=True), (2, 4, 3, 3)),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("norm", "shape"), NORMS, ids=[type(n).__name__ for n, _ in NORMS])
def test_norm_outputs_match_torch(norm: nn.Module, shape: tuple[int, ...], channels_last: bool) -> None:
    norm = norm.to("meta").eval()
    x = torch.empty(shape, device="meta")
    if channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    expected = norm(x)
    with torch.inference_mode(), MetaShortcuts():
        got = norm(x)
    assert (got.shape, got.dtype, got.stride()) == (expected.shape, expected.dtype, expected.stride())


def test_real_tensors_are_left_to_torch() -> None:
    x = torch.zeros(3)
    with MetaShortcuts():
        x.normal_()
        y = nn.BatchNorm1d(3).eval()(torch.ones(2, 3))
    assert x.abs().sum() > 0  # really initialised
    assert torch.allclose(y, torch.ones(2, 3), atol=1e-4)  # really normalised
