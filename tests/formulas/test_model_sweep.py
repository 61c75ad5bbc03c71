"""Every torchvision classification model, counted at the operator level with no module hook:
no operator is left uncounted, and the MACs are exactly ``FlopCounterMode``'s FLOPs / 2 (and
torchvision's published "GFLOPS"), under ``torch.inference_mode`` and ``torch.no_grad``.

Models run on the meta device at their weights' published evaluation size, batch 1. The whole
sweep (80 models) takes about a minute on two cores, so ``make test`` runs a representative
sample of every architecture family; ``OPSCOPE_FULL_SWEEP=1`` runs them all.
"""

from __future__ import annotations

import functools
import os
import warnings

import pytest
import torch
import torchvision
from formulas.op_harness import GRAD_MODES, OpCounts, count_ops, flop_counter_flops
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from opscope.meta import build_on_meta

SAMPLE = (
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s",
    "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2",
    "mobilenet_v3_small", "regnet_y_400mf", "resnet18", "resnext50_32x4d",
    "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t", "swin_v2_t", "vgg11_bn", "vit_b_32",
)  # fmt: skip
"""One or two models of every architecture family (all of them with OPSCOPE_FULL_SWEEP=1)."""

MODELS = (
    tuple(torchvision.models.list_models(module=torchvision.models))
    if os.environ.get("OPSCOPE_FULL_SWEEP")
    else SAMPLE
)


def published_size(name: str) -> int:
    """The evaluation size of the model's default weights (crop, else resize size)."""
    keywords = torchvision.models.get_model_weights(name).DEFAULT.transforms.keywords
    size = keywords.get("crop_size") or keywords.get("resize_size")
    return size[0] if isinstance(size, (list, tuple)) else size


@functools.lru_cache(maxsize=1)
def built(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model on meta, in eval mode, and its input. ViTs are built for their weights' size
    (vit_h_14's default weights are at 518, its builder's default 224)."""
    size = published_size(name)
    extra = {"image_size": size} if name.startswith("vit_") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_on_meta(lambda: torchvision.models.get_model(name, weights=None, **extra))
    return model.eval(), torch.empty(1, 3, size, size, device="meta")


@functools.cache
def op_counts(name: str, grad_mode: str) -> OpCounts:
    """The model's op-level counts under ``grad_mode`` (shared by the tests below)."""
    model, x = built(name)
    return count_ops(lambda: model(x), grad_mode)


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize("name", MODELS)
def test_model_is_fully_counted_and_macs_match_flop_counter(name: str, grad_mode: str) -> None:
    model, x = built(name)
    counts = op_counts(name, grad_mode)
    assert not counts.uncounted, (
        f"operators with neither a formula nor a zero entry: {counts.uncounted}"
    )
    assert 2 * counts.macs == flop_counter_flops(lambda: model(x), grad_mode)
    published = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"]
    assert round(counts.macs / 1e9, 3) == published


SDPA = torch.ops.aten.scaled_dot_product_attention.default


class _AttentionKeys(TorchDispatchMode):
    """Sums ``numel(key)`` over the ``scaled_dot_product_attention`` calls that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is SDPA:
            self.elements += args[1].numel()
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", MODELS)
def test_composite_and_decomposed_levels_count_the_same(name: str) -> None:
    """Whole composites (inference mode) and their decompositions (no_grad) give the same
    operations, but for ``scaled_dot_product_attention``, which the meta device decomposes
    into its math reference: that scales the keys too (``q * sqrt(s)`` and ``k * sqrt(s)``
    where opscope's definition scales the query once), ``numel(k)`` more per call."""
    model, x = built(name)
    with torch.inference_mode(), _AttentionKeys() as keys:
        model(x)
    difference = op_counts(name, "no_grad").ops - op_counts(name, "inference_mode").ops
    assert difference == keys.elements
