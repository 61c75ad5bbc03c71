"""Pass-through modules count zero operations, in eval and in training mode."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import opscope.formulas.activation  # noqa: F401  (registers the activations used below)
import opscope.formulas.passthrough  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas import passthrough
from opscope.formulas.registry import formula_for, registered_types

Inputs = tuple[int, ...] | Callable[[], tuple[torch.Tensor, ...]]
"""A shape (one random input of that shape), or a function that makes the call's inputs."""


def unpool_inputs(pool: type[nn.Module], *shape: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    """The values and indices of ``pool(2)`` on a random ``shape`` input, as the
    ``MaxUnpool`` of the same dimensionality takes them."""
    return lambda: pool(2, return_indices=True)(torch.randn(shape))


# Each registered type, with inputs it accepts (batched, then unbatched where that exists).
CASES: dict[str, tuple[nn.Module, list[Inputs]]] = {
    "Identity": (nn.Identity(), [(2, 3, 4), (5,)]),
    "Flatten": (nn.Flatten(), [(2, 3, 4, 4)]),
    "Flatten all": (nn.Flatten(start_dim=0), [(3, 4, 4)]),
    "Unflatten": (nn.Unflatten(1, (3, 4)), [(2, 12), (5, 12, 2)]),
    "Dropout": (nn.Dropout(0.5), [(2, 3, 4), (7,)]),
    "Dropout inplace": (nn.Dropout(0.5, inplace=True), [(2, 3, 4)]),
    "Dropout1d": (nn.Dropout1d(0.5), [(2, 3, 4), (3, 4)]),
    "Dropout2d": (nn.Dropout2d(0.5), [(2, 3, 4, 4), (3, 4, 4)]),
    "Dropout3d": (nn.Dropout3d(0.5), [(2, 3, 2, 4, 4), (3, 2, 4, 4)]),
    "AlphaDropout": (nn.AlphaDropout(0.5), [(2, 3, 4), (7,)]),
    "FeatureAlphaDropout": (nn.FeatureAlphaDropout(0.5), [(2, 3, 4, 4), (3, 4, 4)]),
    "ConstantPad1d": (nn.ConstantPad1d((1, 2), 3.5), [(2, 3, 4), (3, 4)]),
    "ConstantPad2d": (nn.ConstantPad2d(1, -1.0), [(2, 3, 4, 4), (3, 4, 4)]),
    "ConstantPad3d": (nn.ConstantPad3d((1, 0, 2, 0, 0, 1), 0.5), [(1, 2, 2, 3, 3)]),
    "ZeroPad1d": (nn.ZeroPad1d(2), [(2, 3, 4)]),
    "ZeroPad2d": (nn.ZeroPad2d((1, 1, 2, 0)), [(2, 3, 4, 4), (3, 4, 4)]),
    "ZeroPad3d": (nn.ZeroPad3d(1), [(1, 2, 2, 3, 3)]),
    "ReflectionPad1d": (nn.ReflectionPad1d(2), [(2, 3, 4), (3, 4)]),
    "ReflectionPad2d": (nn.ReflectionPad2d((1, 2, 0, 1)), [(2, 3, 4, 4), (3, 4, 4)]),
    "ReflectionPad3d": (nn.ReflectionPad3d(1), [(1, 2, 2, 3, 3), (2, 2, 3, 3)]),
    "ReplicationPad1d": (nn.ReplicationPad1d(3), [(2, 3, 4)]),
    "ReplicationPad2d": (nn.ReplicationPad2d(1), [(2, 3, 4, 4), (3, 4, 4)]),
    "ReplicationPad3d": (nn.ReplicationPad3d((0, 1, 1, 0, 1, 1)), [(1, 2, 2, 3, 3)]),
    "CircularPad1d": (nn.CircularPad1d(2), [(2, 3, 4), (3, 4)]),
    "CircularPad2d": (nn.CircularPad2d((1, 0, 2, 1)), [(2, 3, 4, 4)]),
    "CircularPad3d": (nn.CircularPad3d(1), [(1, 2, 2, 3, 3)]),
    "PixelShuffle": (nn.PixelShuffle(2), [(2, 8, 3, 3), (4, 3, 3)]),
    "PixelUnshuffle": (nn.PixelUnshuffle(2), [(2, 2, 4, 6), (1, 4, 4)]),
    "ChannelShuffle": (nn.ChannelShuffle(2), [(2, 6, 3, 3), (2, 4, 5)]),
    "Unfold": (nn.Unfold(2, dilation=2, padding=1, stride=2), [(2, 3, 5, 6), (3, 5, 6)]),
    "MaxUnpool1d": (nn.MaxUnpool1d(2), [unpool_inputs(nn.MaxPool1d, 2, 3, 8)]),
    "MaxUnpool2d": (
        nn.MaxUnpool2d(2),
        [unpool_inputs(nn.MaxPool2d, 2, 3, 4, 6), unpool_inputs(nn.MaxPool2d, 3, 4, 6)],
    ),
    "MaxUnpool3d": (nn.MaxUnpool3d(2), [unpool_inputs(nn.MaxPool3d, 1, 2, 4, 4, 2)]),
}


def _inputs(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return inputs() if callable(inputs) else (torch.randn(inputs),)


def test_every_registered_passthrough_is_tested() -> None:
    count = passthrough.count_passthrough
    registered = {t for t in registered_types() if formula_for(t).count is count}
    assert registered == {type(module) for module, _ in CASES.values()}
    assert registered == set(passthrough.PASSTHROUGH_TYPES)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.filterwarnings("ignore:dropout2d. Received a 3D input")  # zero ops either way
def test_zero_ops(case: str, training: bool) -> None:
    module, calls = CASES[case]
    module.train(training)
    for inputs in calls:
        args = _inputs(inputs)  # a pooling's indices: made outside the block, not its work
        with Profiler(module) as p:
            module(*args)
        (record,) = p.records
        # Training-mode masking and rescaling is deliberately not counted: it is not part of
        # the model's inference arithmetic.
        assert record.ops == 0
        assert record.training is training
        assert record.config is None


def test_training_dropout_really_changes_values_but_counts_zero() -> None:
    # The mode is seen (the values differ from the input), and still costs nothing.
    module, x = nn.Dropout(0.5).train(), torch.ones(64)
    with Profiler(module) as p:
        y = module(x)
    assert not torch.equal(y, x)
    assert p.total_ops == 0


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_functional_training_dropout_decomposed_by_torch_counts_its_mask_arithmetic(
    device: str,
) -> None:
    """What passthrough.md says of the CPU and meta: torch decomposes a training dropout
    before a dispatch mode sees it (with or without gradients), so a functional one counts
    the mask's division and the product, 2 per element, and a module's backward its mask
    product, 1 per element; the module's forward is its formula's 0."""

    class Functional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.dropout(x, 0.5, training=True)

    x = torch.randn(4, 64, device=device, requires_grad=True)
    functional = Functional()
    with Profiler(functional) as p:
        functional(x)
    assert p.total_ops == 2 * 4 * 64
    phases = {}
    for last in (nn.Identity(), nn.Dropout(0.5)):
        model = nn.Sequential(nn.Linear(64, 64), last).to(device).train()
        with Profiler(model) as p:
            model(x.detach().requires_grad_()).sum().backward()
        assert p.records[1].ops == 0  # the module's forward
        phases[type(last).__name__] = p.report.by_phase()["backward"][0]
    assert phases["Dropout"] - phases["Identity"] == 4 * 64


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_only_the_arithmetic_around_them_counts(training: bool) -> None:
    # A classifier head: Flatten and Dropout add nothing to the ReLU's 2 * 48 comparisons.
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.ReLU(), nn.Identity()).train(training)
    with Profiler(model) as p:
        model(torch.randn(2, 3, 4, 4))
    assert [record.ops for record in p.records] == [0, 0, 2 * 48 * 1, 0]
    assert p.report.uncounted_modules == ()
