"""The fused eval fast path of ``nn.TransformerEncoderLayer`` (``_transformer_encoder_layer_fwd``)
counts exactly what its slow path counts module by module, and its MACs are the slow path's
``FlopCounterMode`` FLOPs / 2 (``FlopCounterMode`` itself counts 0 for the fused operator)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from formulas.op_harness import count_ops
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from opscope import Profiler

FUSED = "aten._transformer_encoder_layer_fwd.default"


@contextmanager
def fast_path(enabled: bool) -> Iterator[None]:
    """torch's MultiheadAttention / transformer fast path on or off, restored afterwards."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def profiled(model: nn.Module, *args: Any, fast: bool, **kwargs: Any) -> tuple[int, int]:
    """Total operations and MACs of one call under ``torch.no_grad``, as opscope profiles it."""
    with fast_path(fast), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on nested tensors being a prototype
        with Profiler(model) as profiler:
            model(*args, **kwargs)
    report = profiler.report
    assert report.uncounted_ops == ()
    return report.total_ops, report.total_macs


def encoder(**settings: Any) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, **settings)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": encoder,
    "gelu": lambda: encoder(activation="gelu"),
    "nn.ReLU, norm_first": lambda: encoder(activation=nn.ReLU(), norm_first=True),
    "gelu, norm_first": lambda: encoder(activation="gelu", norm_first=True),
}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("masked", [False, True])
def test_the_fast_path_counts_what_the_slow_path_counts(name: str, masked: bool) -> None:
    model = LAYERS[name]()
    x = torch.randn(3, 5, 8)
    kwargs = {"mask": torch.randn(5, 5)} if masked else {}
    with torch.no_grad(), fast_path(True):
        assert count_ops(lambda: model(x, **kwargs), "no_grad").by_op[FUSED] > 0  # it ran
    fast, slow = profiled(model, x, fast=True, **kwargs), profiled(model, x, fast=False, **kwargs)
    assert fast == slow
    counter = FlopCounterMode(display=False)
    with fast_path(False), torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(x, **kwargs)
    assert 2 * fast[1] == counter.get_total_flops()


def test_both_masks_add_up_before_the_fused_call() -> None:
    """A layer given a ``src_mask`` and a ``src_key_padding_mask`` merges them with one
    addition per score, then the fused call adds the merged mask: two, as the slow path."""
    model = LAYERS["relu"]().layers[0]
    x = torch.randn(2, 4, 8)
    masks = {"src_mask": torch.randn(4, 4), "src_key_padding_mask": torch.zeros(2, 4)}
    assert profiled(model, x, fast=True, **masks) == profiled(model, x, fast=False, **masks)
    only_padding = {"src_key_padding_mask": torch.zeros(2, 4)}
    fast = profiled(model, x, fast=True, **only_padding)
    assert fast == profiled(model, x, fast=False, **only_padding)
    assert fast[0] == profiled(model, x, fast=True)[0] + 2 * 2 * 4 * 4  # N * H * L * L


def test_the_fused_operator_alone() -> None:
    """Under inference mode and no_grad, with no hook at all, the operator level counts the
    fast path as opscope's profiler counts the slow path."""
    model = LAYERS["gelu"]()
    x = torch.randn(2, 6, 8)
    slow = profiled(model, x, fast=False)
    for grad_mode in ("inference_mode", "no_grad"):
        counts = count_ops(lambda: model(x), grad_mode)
        assert not counts.uncounted and set(counts.by_op) == {FUSED}
        assert (counts.ops, counts.macs) == slow
        assert counts.by_family == {"transformer": slow[0]}


def test_the_fast_path_runs_the_erf_gelu_whatever_the_module_says() -> None:
    """torch's fast path takes any ``nn.GELU`` for ``use_gelu``: a tanh-approximate GELU
    runs as the exact (erf) one, 5 operations per element instead of 9."""
    model = encoder(activation=nn.GELU(approximate="tanh"))
    x = torch.randn(2, 5, 8)
    fast, slow = profiled(model, x, fast=True), profiled(model, x, fast=False)
    assert fast[0] == slow[0] - 2 * (2 * 5 * 16) * (9 - 5)  # 2 layers, N * L * F elements
    assert fast[1] == slow[1]


def test_a_padded_batch_counts_its_sequences() -> None:
    """With a ``src_key_padding_mask`` the encoder runs its layers on a nested tensor: each
    sequence counts at its own length, as the sequences run alone without a mask."""
    model = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True), 2
    ).eval()
    x = torch.randn(2, 5, 8)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])  # lengths 5 and 3
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on nested tensors being a prototype
        with Profiler(model) as profiler:
            model(x, src_key_padding_mask=padding)
        counts = count_ops(lambda: model(x, src_key_padding_mask=padding), "no_grad")
    report = profiler.report
    assert report.uncounted_ops == ()
    alone = [profiled(model, x[i : i + 1, :length], fast=True) for i, length in enumerate((5, 3))]
    layers = [record for record in report.records if record.name.startswith("layers.")]
    assert sum(record.ops for record in layers) == sum(ops for ops, _ in alone)
    assert report.total_macs == sum(macs for _, macs in alone) == counts.macs
    # The encoder negates the (2, 5) mask twice (logical_not) to check it and to nest x.
    assert report.total_ops == sum(ops for ops, _ in alone) + 2 * 10 == counts.ops
    assert counts.by_op["aten._nested_tensor_from_mask.default"] == 0


@pytest.mark.parametrize("need_weights", [False, True])
def test_the_attention_fast_path_on_nested_sequences(need_weights: bool) -> None:
    """``_native_multi_head_attention`` on a nested tensor counts each sequence alone."""
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, 2, batch_first=True).eval().requires_grad_(False)
    sequences = torch.randn(1, 5, 8), torch.randn(1, 3, 8)

    def attend(x: torch.Tensor) -> Any:
        return attention(x, x, x, need_weights=need_weights)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on nested tensors being a prototype
        nested = torch.nested.nested_tensor([x[0] for x in sequences])
    counts = count_ops(lambda: attend(nested))
    assert set(counts.by_op) == {"aten._native_multi_head_attention.default"}
    alone = [count_ops(lambda x=x: attend(x)) for x in sequences]
    assert counts.ops == sum(c.ops for c in alone)
    assert counts.macs == sum(c.macs for c in alone)
