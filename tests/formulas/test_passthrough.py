"""Pass-through modules count zero operations, in eval and in training mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import opscope.formulas.activation  # noqa: F401  (registers the activations used below)
import opscope.formulas.passthrough  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas import passthrough
from opscope.formulas.registry import formula_for, registered_types

# Each registered type, with an input it accepts (batched, then unbatched where that exists).
CASES: dict[str, tuple[nn.Module, list[tuple[int, ...]]]] = {
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
}


def test_every_registered_passthrough_is_tested() -> None:
    count = passthrough.count_passthrough
    registered = {t for t in registered_types() if formula_for(t).count is count}
    assert registered == {type(module) for module, _ in CASES.values()}
    assert registered == set(passthrough.PASSTHROUGH_TYPES)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.filterwarnings("ignore:dropout2d. Received a 3D input")  # zero ops either way
def test_zero_ops(case: str, training: bool) -> None:
    module, shapes = CASES[case]
    module.train(training)
    for shape in shapes:
        with Profiler(module) as p:
            module(torch.randn(shape))
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


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_only_the_arithmetic_around_them_counts(training: bool) -> None:
    # A classifier head: Flatten and Dropout add nothing to the ReLU's 2 * 48 comparisons.
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.ReLU(), nn.Identity()).train(training)
    with Profiler(model) as p:
        model(torch.randn(2, 3, 4, 4))
    assert [record.ops for record in p.records] == [0, 0, 2 * 48 * 1, 0]
    assert p.report.uncounted_modules == ()
