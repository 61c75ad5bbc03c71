"""Whole training steps at the operator level: a torchvision model's backward pass leaves no
operator uncounted and its MACs are ``FlopCounterMode``'s backward FLOPs / 2 (its
forward-and-backward total minus its forward total), with every layer trainable and with frozen
layers (whose weight gradients are not computed); one optimizer step follows its closed form.

The models run on the meta device, where torch decomposes what ``FlopCounterMode`` has no
formula for on the CPU (the CPU attention kernel and its backward), at small sizes: a fast
version of the check reported for resnet18, mobilenet_v3_large and vit_b_16 at 224.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from formulas.step_harness import count_step, flop_counter_phases
from torch import nn

from opscope.meta import build_on_meta


def built(name: str, **extra: object) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_on_meta(lambda: torchvision.models.get_model(name, weights=None, **extra))
    return model.train()


def frozen_resnet18() -> nn.Module:
    """resnet18 with its stem and first stage frozen: no weight gradient there, and no input
    gradient for the first convolution."""
    model = built("resnet18")
    for part in (model.conv1, model.bn1, model.layer1):
        part.requires_grad_(False)
    return model


MODELS = {
    "resnet18": (lambda: built("resnet18"), 32),
    "resnet18 frozen stem and layer1": (frozen_resnet18, 32),
    "mobilenet_v3_large": (lambda: built("mobilenet_v3_large"), 32),  # depthwise, grouped
    "vit_b_16": (lambda: built("vit_b_16", image_size=32), 32),  # attention, layer norms
}


@pytest.mark.parametrize("name", MODELS)
def test_backward_macs_are_flop_counter_backward_flops_halved(name: str) -> None:
    factory, size = MODELS[name]
    model = factory()
    x = torch.empty(2, 3, size, size, device="meta")
    counts = count_step(model, x)
    backward = counts["backward"]
    assert not backward.uncounted, backward.uncounted
    flops = flop_counter_phases(model, x)
    assert 2 * counts["forward"].macs == flops["forward"]
    assert 2 * backward.macs == flops["backward"]


def test_frozen_layers_compute_fewer_gradients() -> None:
    x = torch.empty(2, 3, 32, 32, device="meta")
    trainable = count_step(built("resnet18"), x)["backward"]
    frozen = count_step(frozen_resnet18(), x)["backward"]
    assert frozen.macs < trainable.macs
    assert frozen.ops < trainable.ops


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_step_on_a_model(foreach: bool) -> None:
    """One AdamW step (weight decay 0.01): 14 operations per parameter element, 1 per
    parameter tensor (its step count)."""
    model = built("resnet18")
    optimizer = torch.optim.AdamW(model.parameters(), foreach=foreach)
    x = torch.empty(2, 3, 32, 32, device="meta")
    optimizer_counts = count_step(model, x, optimizer=optimizer)["optimizer"]
    parameters = list(model.parameters())
    elements = sum(p.numel() for p in parameters)
    assert not optimizer_counts.uncounted
    assert optimizer_counts.ops == 14 * elements + len(parameters)
