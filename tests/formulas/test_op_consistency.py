"""The op registry agrees with the module formulas: a module run with no hook at all, counted
operator by operator as the capture layer will, gives exactly its module formula's count, and
its MACs equal the module formula's MACs and ``FlopCounterMode``'s FLOPs / 2.

Under ``torch.inference_mode`` composite operators (``linear``, ``layer_norm``, ``lstm``...)
arrive whole; under ``torch.no_grad`` they arrive decomposed. Every case is checked in the
settings where the two levels must agree; the known differences are checked as differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from formulas.op_harness import (
    BOTH,
    INFERENCE,
    Case,
    flop_counter_flops,
    module_formula,
    module_op_counts,
)
from torch import nn


def randn(*shape: int) -> Callable[[], tuple[Any, ...]]:
    return lambda: (torch.randn(shape),)


def seq(*shapes: tuple[int, ...]) -> Callable[[], tuple[Any, ...]]:
    return lambda: tuple(torch.randn(shape) for shape in shapes)


def ints(high: int, *shape: int) -> Callable[[], tuple[Any, ...]]:
    """Indices below ``high`` (an embedding's input)."""
    return lambda: (torch.randint(0, high, shape),)


def bags(weighted: bool = False) -> Callable[[], tuple[Any, ...]]:
    """Six indices below 10 in bags of 2, 1 and 3 (offsets 0, 2, 3), and per-sample weights
    when ``weighted``."""

    def inputs() -> tuple[Any, ...]:
        weights = (torch.rand(6),) if weighted else ()
        return (torch.tensor([1, 2, 2, 3, 4, 9]), torch.tensor([0, 2, 3]), *weights)

    return inputs


def same(*shape: int) -> Callable[[], tuple[Any, ...]]:
    """One tensor passed three times (self-attention's query, key and value)."""

    def inputs() -> tuple[Any, ...]:
        x = torch.randn(shape)
        return (x, x, x)

    return inputs


def _frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False)


class _Calling(nn.Module):
    """Calls a MultiheadAttention with extra keyword arguments (``need_weights=False``: the
    sdpa path; ``average_attn_weights=False``: weights per head)."""

    def __init__(self, attention: nn.MultiheadAttention, **kwargs: bool) -> None:
        super().__init__()
        self.attention = attention
        self.kwargs = kwargs

    def forward(self, *args: torch.Tensor) -> Any:
        return self.attention(*args, **self.kwargs)


def _no_weights(attention: nn.MultiheadAttention) -> nn.Module:
    return _Calling(attention, need_weights=False)


def _per_head(attention: nn.MultiheadAttention) -> nn.Module:
    return _Calling(attention, average_attn_weights=False)


ACTIVATIONS = [
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.SiLU,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Mish, nn.Hardtanh,
    nn.Hardshrink, nn.Softshrink, nn.LogSigmoid, nn.Tanhshrink, nn.Softsign,
]  # fmt: skip

CASES: dict[str, Case] = {
    **{f"{t.__name__}": Case(t, randn(2, 3, 4, 5)) for t in ACTIVATIONS},
    "CELU(alpha=2)": Case(lambda: nn.CELU(2.0), randn(2, 3, 4)),
    "Threshold": Case(lambda: nn.Threshold(0.1, 20.0), randn(2, 7)),
    "GELU": Case(nn.GELU, randn(2, 3, 4)),
    "GELU(tanh)": Case(lambda: nn.GELU(approximate="tanh"), randn(2, 3, 4)),
    "GLU": Case(nn.GLU, randn(4, 6)),
    "ReLU(inplace)": Case(lambda: nn.ReLU(inplace=True), randn(2, 5)),
    "Softmax": Case(lambda: nn.Softmax(dim=1), randn(2, 5, 3)),
    "Softmin": Case(lambda: nn.Softmin(dim=-1), randn(2, 5, 3)),
    "Softmax2d": Case(nn.Softmax2d, randn(2, 3, 4, 4)),
    "LogSoftmax": Case(lambda: nn.LogSoftmax(dim=0), randn(4, 3)),
    "Linear": Case(lambda: nn.Linear(4, 3), randn(6, 4)),
    "Linear(no bias, 3-D)": Case(lambda: nn.Linear(4, 3, bias=False), randn(2, 5, 4)),
    "Linear(3-D)": Case(lambda: nn.Linear(4, 3), randn(2, 5, 4)),
    "Linear(unbatched)": Case(lambda: nn.Linear(4, 3), randn(4)),
    "Bilinear": Case(lambda: nn.Bilinear(3, 4, 5), seq((6, 3), (6, 4))),
    "Bilinear(no bias)": Case(lambda: nn.Bilinear(3, 4, 5, bias=False), seq((6, 3), (6, 4))),
    "Conv1d": Case(lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), randn(2, 4, 9)),
    "Conv2d": Case(lambda: nn.Conv2d(3, 8, 3, padding=1, bias=False), randn(1, 3, 8, 8)),
    "Conv2d(groups, dilation)": Case(
        lambda: nn.Conv2d(4, 8, 3, groups=2, dilation=2), randn(2, 4, 9, 9)
    ),
    "Conv2d(same, unbatched)": Case(lambda: nn.Conv2d(3, 4, 3, padding="same"), randn(3, 6, 6)),
    "Conv3d": Case(lambda: nn.Conv3d(2, 3, (1, 2, 3)), randn(1, 2, 3, 4, 5)),
    "ConvTranspose1d": Case(lambda: nn.ConvTranspose1d(4, 2, 3, stride=2), randn(2, 4, 5)),
    "ConvTranspose2d(padding, groups)": Case(
        lambda: nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2), randn(1, 4, 5, 5)
    ),
    "ConvTranspose3d(no bias)": Case(
        lambda: nn.ConvTranspose3d(2, 3, 2, bias=False, dilation=2), randn(1, 2, 3, 3, 3)
    ),
    "BatchNorm2d": Case(lambda: nn.BatchNorm2d(3), randn(2, 3, 4, 4)),
    "BatchNorm1d(2-D, no affine)": Case(lambda: nn.BatchNorm1d(5, affine=False), randn(4, 5)),
    "BatchNorm2d(no running stats)": Case(
        lambda: nn.BatchNorm2d(3, track_running_stats=False), randn(2, 3, 4, 4)
    ),
    "BatchNorm2d(train)": Case(lambda: nn.BatchNorm2d(3), randn(2, 3, 4, 4), training=True),
    "LayerNorm": Case(lambda: nn.LayerNorm(5), randn(2, 3, 5)),
    "LayerNorm(2 dims, no bias)": Case(lambda: nn.LayerNorm((3, 5), bias=False), randn(2, 3, 5)),
    "LayerNorm(no affine)": Case(lambda: nn.LayerNorm(5, elementwise_affine=False), randn(4, 5)),
    "RMSNorm": Case(lambda: nn.RMSNorm(5), randn(2, 3, 5)),
    "RMSNorm(2 dims, no affine, eps)": Case(
        lambda: nn.RMSNorm((3, 5), eps=1e-3, elementwise_affine=False), randn(2, 3, 5)
    ),
    "RMSNorm(train)": Case(lambda: nn.RMSNorm(4), randn(3, 4), training=True),
    "GroupNorm": Case(lambda: nn.GroupNorm(2, 4), randn(3, 4, 5)),
    "GroupNorm(no affine)": Case(lambda: nn.GroupNorm(4, 4, affine=False), randn(1, 4, 2, 2)),
    # instance_norm decomposes into a batch norm of the reshaped input: inference mode only
    "InstanceNorm2d": Case(lambda: nn.InstanceNorm2d(3), randn(2, 3, 4, 4), INFERENCE),
    "InstanceNorm1d(affine, tracked)": Case(
        lambda: nn.InstanceNorm1d(3, affine=True, track_running_stats=True),
        randn(2, 3, 5),
        INFERENCE,
    ),
    "InstanceNorm1d(tracked, train)": Case(
        lambda: nn.InstanceNorm1d(3, track_running_stats=True), randn(2, 3, 5), INFERENCE, True
    ),
    "MaxPool2d": Case(lambda: nn.MaxPool2d(3, stride=2, padding=1), randn(1, 2, 7, 7)),
    "MaxPool1d(dilation, ceil)": Case(
        lambda: nn.MaxPool1d(3, stride=2, dilation=2, ceil_mode=True), randn(2, 3, 10)
    ),
    "MaxPool3d": Case(lambda: nn.MaxPool3d(2), randn(1, 2, 4, 4, 4)),
    "AvgPool2d": Case(lambda: nn.AvgPool2d(3, stride=2, padding=1), randn(1, 2, 7, 7)),
    "AvgPool1d(ceil)": Case(lambda: nn.AvgPool1d(3, stride=2, ceil_mode=True), randn(1, 2, 8)),
    "AvgPool3d": Case(lambda: nn.AvgPool3d(2, stride=1), randn(1, 1, 3, 3, 3)),
    "AdaptiveAvgPool2d(1)": Case(lambda: nn.AdaptiveAvgPool2d(1), randn(2, 3, 7, 7)),
    "AdaptiveAvgPool2d(3)": Case(lambda: nn.AdaptiveAvgPool2d((3, 2)), randn(2, 3, 7, 5)),
    "AdaptiveAvgPool1d": Case(lambda: nn.AdaptiveAvgPool1d(3), randn(2, 3, 7)),
    "AdaptiveMaxPool2d": Case(lambda: nn.AdaptiveMaxPool2d(3), randn(1, 2, 7, 7)),
    "AdaptiveMaxPool3d": Case(lambda: nn.AdaptiveMaxPool3d(2), randn(1, 2, 5, 5, 5)),
    "LPPool2d": Case(lambda: nn.LPPool2d(2, 3, stride=2, ceil_mode=True), randn(1, 2, 7, 7)),
    "LPPool1d(p=1.5)": Case(lambda: nn.LPPool1d(1.5, 2), randn(2, 3, 7)),
    "LPPool3d(inf)": Case(lambda: nn.LPPool3d(float("inf"), 2), randn(1, 2, 4, 4, 4)),
    "LPPool2d(-inf)": Case(lambda: nn.LPPool2d(-float("inf"), 2, stride=1), randn(2, 5, 5)),
    "FractionalMaxPool2d": Case(
        lambda: nn.FractionalMaxPool2d(3, output_size=(4, 5)), randn(2, 3, 9, 9)
    ),
    "FractionalMaxPool3d(ratio, unbatched)": Case(
        lambda: nn.FractionalMaxPool3d(2, output_ratio=0.5, return_indices=True), randn(2, 6, 6, 6)
    ),
    "Embedding": Case(lambda: nn.Embedding(10, 4, padding_idx=0), ints(10, 2, 3)),
    "Embedding(max_norm)": Case(lambda: nn.Embedding(10, 4, max_norm=0.5), ints(10, 2, 3)),
    "Embedding(max_norm, p=1)": Case(
        lambda: nn.Embedding(10, 4, max_norm=0.5, norm_type=1.0), ints(10, 5)
    ),
    "EmbeddingBag(mean, offsets)": Case(lambda: nn.EmbeddingBag(10, 4), bags()),
    "EmbeddingBag(sum, weighted)": Case(
        lambda: nn.EmbeddingBag(10, 4, mode="sum"), bags(weighted=True)
    ),
    "EmbeddingBag(max, 2-D, max_norm)": Case(
        lambda: nn.EmbeddingBag(10, 4, mode="max", max_norm=1.0), ints(10, 3, 4)
    ),
    "Upsample(nearest)": Case(lambda: nn.Upsample(scale_factor=2), randn(1, 2, 3, 3)),
    "Upsample(bilinear)": Case(
        lambda: nn.Upsample(scale_factor=2, mode="bilinear"), randn(1, 2, 3, 3)
    ),
    "Upsample(bicubic)": Case(lambda: nn.Upsample(size=(5, 7), mode="bicubic"), randn(1, 2, 3, 3)),
    "Upsample(linear)": Case(lambda: nn.Upsample(scale_factor=3, mode="linear"), randn(1, 2, 4)),
    "Upsample(trilinear)": Case(
        lambda: nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True),
        randn(1, 1, 2, 3, 2),
    ),
    "Upsample(area)": Case(lambda: nn.Upsample(size=(2, 3), mode="area"), randn(1, 2, 5, 7)),
    "MultiheadAttention": Case(
        lambda: nn.MultiheadAttention(8, 2), seq((5, 2, 8), (5, 2, 8), (5, 2, 8))
    ),
    "MultiheadAttention(no weights)": Case(
        lambda: _no_weights(nn.MultiheadAttention(8, 2, batch_first=True)),
        seq((2, 5, 8), (2, 5, 8), (2, 5, 8)),
    ),
    # frozen parameters and one tensor as query, key and value: the fused fast path
    "MultiheadAttention(fast path)": Case(
        lambda: _frozen(nn.MultiheadAttention(8, 2, batch_first=True)), same(2, 5, 8)
    ),
    "MultiheadAttention(fast path, no weights)": Case(
        lambda: _no_weights(_frozen(nn.MultiheadAttention(8, 2, batch_first=True))),
        same(2, 5, 8),
    ),
    "MultiheadAttention(cross, kdim, per-head weights)": Case(
        lambda: _per_head(nn.MultiheadAttention(6, 3, kdim=4, vdim=5)),
        seq((3, 2, 6), (4, 2, 4), (4, 2, 5)),
    ),
    "MultiheadAttention(unbatched, bias_kv, zero_attn)": Case(
        lambda: nn.MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True, bias=False),
        seq((3, 4), (5, 4), (5, 4)),
    ),
    "RNN": Case(lambda: nn.RNN(3, 4, num_layers=2), randn(5, 2, 3)),
    "RNN(relu, bidirectional)": Case(
        lambda: nn.RNN(3, 4, nonlinearity="relu", bidirectional=True), randn(5, 2, 3)
    ),
    "LSTM": Case(lambda: nn.LSTM(3, 4, num_layers=2, bidirectional=True), randn(5, 2, 3)),
    "LSTM(proj, batch_first)": Case(
        lambda: nn.LSTM(3, 5, proj_size=2, batch_first=True), randn(2, 4, 3)
    ),
    "LSTM(no bias, unbatched)": Case(lambda: nn.LSTM(3, 4, bias=False), randn(6, 3)),
    "GRU": Case(lambda: nn.GRU(3, 4, num_layers=2), randn(5, 2, 3), INFERENCE),
    "RNNCell": Case(lambda: nn.RNNCell(3, 4), randn(2, 3)),
    "LSTMCell": Case(lambda: nn.LSTMCell(3, 4), randn(2, 3)),
    "LSTMCell(no bias, unbatched)": Case(lambda: nn.LSTMCell(3, 4, bias=False), randn(3)),
    "GRUCell": Case(lambda: nn.GRUCell(3, 4), randn(2, 3), INFERENCE),
    "Fold": Case(lambda: nn.Fold((4, 5), 2), randn(2, 12, 12)),
    "Fold(padding, stride, dilation, unbatched)": Case(
        lambda: nn.Fold(6, 3, dilation=(1, 2), padding=1, stride=2), randn(9, 6)
    ),
    "Unfold": Case(lambda: nn.Unfold(3, padding=1, stride=2), randn(2, 3, 7, 7)),
    "ZeroPad2d": Case(lambda: nn.ZeroPad2d((1, 0, 2, 1)), randn(2, 3, 4, 4)),
    "ReflectionPad1d": Case(lambda: nn.ReflectionPad1d(2), randn(2, 3, 5)),
    "ReplicationPad3d": Case(lambda: nn.ReplicationPad3d(1), randn(1, 2, 3, 3, 3)),
    "CircularPad2d": Case(lambda: nn.CircularPad2d(1), randn(1, 2, 4, 4)),
    "PixelShuffle": Case(lambda: nn.PixelShuffle(2), randn(1, 8, 3, 3)),
    "PixelUnshuffle": Case(lambda: nn.PixelUnshuffle(2), randn(1, 2, 4, 4)),
    "ChannelShuffle": Case(lambda: nn.ChannelShuffle(2), randn(1, 4, 3, 3)),
    "MaxUnpool2d": Case(
        lambda: nn.MaxUnpool2d(2),
        lambda: nn.MaxPool2d(2, return_indices=True)(torch.randn(1, 2, 4, 4)),
    ),
    "MaxUnpool1d": Case(
        lambda: nn.MaxUnpool1d(2),
        lambda: nn.MaxPool1d(2, return_indices=True)(torch.randn(2, 3, 6)),
    ),
    "CosineSimilarity": Case(nn.CosineSimilarity, seq((3, 4, 5), (1, 4, 5))),
    "CosineSimilarity(dim=-1, broadcast)": Case(
        lambda: nn.CosineSimilarity(dim=-1), seq((2, 3), (3,))
    ),
    "PairwiseDistance": Case(nn.PairwiseDistance, seq((3, 4), (3, 4))),
    "PairwiseDistance(p=1, keepdim, broadcast)": Case(
        lambda: nn.PairwiseDistance(p=1, keepdim=True), seq((2, 3, 4), (4,))
    ),
    "Identity": Case(nn.Identity, randn(2, 3)),
    "Dropout": Case(nn.Dropout, randn(2, 3)),
    "Dropout2d(train)": Case(nn.Dropout2d, randn(2, 3, 4, 4), INFERENCE, True),
    "Flatten": Case(nn.Flatten, randn(2, 3, 4)),
}


def _bookkeeping(case: Case, module: nn.Module) -> int:
    """A training BatchNorm also counts its calls, ``num_batches_tracked += 1``: one integer
    addition that its module formula leaves out (it is not arithmetic on the data)."""
    tracked = isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    return int(case.training and tracked)


@pytest.mark.parametrize(
    "name, grad_mode",
    [(name, grad_mode) for name, case in CASES.items() for grad_mode in case.grad_modes],
)
def test_op_level_matches_the_module_formula(name: str, grad_mode: str) -> None:
    case = CASES[name]
    module, inputs, ops, macs = module_formula(case)
    counts = module_op_counts(module, *inputs, grad_mode=grad_mode)
    assert not counts.uncounted
    assert counts.ops == ops + _bookkeeping(case, module), counts.by_op
    assert counts.macs == macs


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if not case.training])
def test_module_macs_are_flop_counter_flops_halved(name: str) -> None:
    """On the meta device torch runs every family through the products FlopCounterMode
    counts (the CPU's fused LSTM and attention kernels have no FLOP formula)."""
    case = CASES[name]
    _, _, _, macs = module_formula(case)
    torch.manual_seed(0)
    with torch.device("meta"):
        module = case.module().eval()
        inputs = case.inputs()
    assert 2 * macs == flop_counter_flops(lambda: module(*inputs))
    assert module_op_counts(module, *inputs).macs == macs


def test_known_differences() -> None:
    """Where torch's decomposition (under no_grad) computes differently from the documented
    formula (the cases checked in inference mode only above)."""
    # GRU: h' = n + z * (h - n), 3 operations per element instead of (1 - z) * n + z * h's 4
    for name, cells in (("GRU", 5 * 2 * 2), ("GRUCell", 2)):
        module, inputs, ops, _ = module_formula(CASES[name])
        decomposed = module_op_counts(module, *inputs, grad_mode="no_grad")
        assert decomposed.ops == ops - cells * 4
    # training dropout: its mask is drawn, then x * mask / (1 - p) is counted
    module, inputs, ops, _ = module_formula(CASES["Dropout2d(train)"])
    assert ops == 0 < module_op_counts(module, *inputs, grad_mode="no_grad").ops
