"""Whole training steps at the operator level: a torchvision model's backward pass leaves no
operator uncounted and its MACs are ``FlopCounterMode``'s backward FLOPs / 2 (its
forward-and-backward total minus its forward total; less, for grouped convolutions, the weight
gradient products it counts as if they were ungrouped), with every layer trainable and with frozen
layers (whose weight gradients are not computed); one optimizer step follows its closed form.

The models run on the meta device, where torch decomposes what ``FlopCounterMode`` has no
formula for on the CPU (the CPU attention kernel and its backward), at small sizes: a fast
version of the check reported for resnet18, mobilenet_v3_large and vit_b_16 at 224.
"""

from __future__ import annotations

import math
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


def grouped_weight_gradient_excess(model: nn.Module, x: torch.Tensor) -> int:
    """The products ``FlopCounterMode`` counts beyond those computed in the weight gradients
    of the model's grouped convolutions: ``(groups - 1) * N * P * numel(weight)`` each (it
    counts them as ungrouped), ``P`` the positions of each call's output."""
    excess = 0

    def grouped(conv: nn.Module, args: object, output: torch.Tensor) -> None:
        nonlocal excess
        if conv.groups > 1 and conv.weight.requires_grad:
            positions = math.prod(output.shape[2:])
            excess += (conv.groups - 1) * output.shape[0] * positions * conv.weight.numel()

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles = [conv.register_forward_hook(grouped) for conv in convs]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return excess


@pytest.mark.parametrize("name", MODELS)
def test_backward_macs_are_flop_counter_backward_flops_halved_less_its_grouped_excess(
    name: str,
) -> None:
    factory, size = MODELS[name]
    model = factory()
    x = torch.empty(2, 3, size, size, device="meta")
    counts = count_step(model, x)
    backward = counts["backward"]
    assert not backward.uncounted, backward.uncounted
    flops = flop_counter_phases(model, x)
    excess = grouped_weight_gradient_excess(model, x)
    assert (excess > 0) == name.startswith("mobilenet")
    assert 2 * counts["forward"].macs == flops["forward"]
    assert 2 * backward.macs == flops["backward"] - 2 * excess


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
