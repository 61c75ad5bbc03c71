"""Every ``torch.nn`` module type is accounted for: it has a formula (its own, or its nearest
registered base's), or it is listed here, as a container, as a base class with no forward of
its own, or as not supported yet, with the reason.

A torch release that adds a module type fails :func:`test_every_torch_nn_module_is_accounted_for`
until the type gets a formula or a place on one of these lists; one that removes a listed type,
or a formula that covers a listed type, fails it too, so the lists stay exact. (Modules outside
``torch.nn``'s namespace, such as ``torch.ao.nn.quantized``, are not enumerated.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType

import pytest
from torch import nn

import opscope.formulas  # noqa: F401  (registers every family)
from opscope.formulas.registry import formula_for

CONTAINERS: Mapping[str, Callable[[], nn.Module]] = MappingProxyType(
    {
        "Sequential": lambda: nn.Sequential(nn.ReLU()),
        "ModuleList": lambda: nn.ModuleList([nn.ReLU()]),
        "ModuleDict": lambda: nn.ModuleDict({"relu": nn.ReLU()}),
        "DataParallel": lambda: nn.DataParallel(nn.ReLU()),
        "Transformer": lambda: nn.Transformer(4, 2, 1, 1, dim_feedforward=8, batch_first=True),
        "TransformerEncoder": lambda: nn.TransformerEncoder(
            nn.TransformerEncoderLayer(4, 2, batch_first=True), 1
        ),
        "TransformerDecoder": lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(4, 1), 1),
        # Their submodules (attention, linears, norms) are counted when called, and the
        # residual additions around them by the op level. An encoder layer's fused eval fast
        # path (_transformer_encoder_layer_fwd), which calls none of them, is counted by its
        # op formula, the same count (opscope puts no hook on the user's modules).
        "TransformerEncoderLayer": lambda: nn.TransformerEncoderLayer(4, 1),
        "TransformerDecoderLayer": lambda: nn.TransformerDecoderLayer(4, 1),
        # The head Linear and tail projections are counted; the log-softmax and gathers around
        # them run outside counted modules and are counted by the op level.
        "AdaptiveLogSoftmaxWithLoss": lambda: nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4]),
    }
)
"""Module types that hold other modules, which do their work: never a leaf, so never
"uncounted" (an instance is built to check that it does hold submodules)."""

NO_FORWARD: frozenset[str] = frozenset(
    {"Module", "Container", "ParameterList", "ParameterDict", "RNNBase", "RNNCellBase"}
)
"""Base classes and parameter holders that define no ``forward``: calling one raises. (RNN,
LSTM, GRU and their cells, the subclasses of the two recurrent bases, have formulas.)"""

NOT_SUPPORTED_YET: Mapping[str, str] = MappingProxyType(
    {
        "CrossMapLRN2d": (
            "a legacy Lua Torch cross-channel LRN run as a Python autograd Function, not "
            "LocalResponseNorm's arithmetic (LocalResponseNorm is counted)"
        ),
        "CTCLoss": (
            "its forward recursion over the blank-extended targets allows a transition only "
            "between different labels, so its work depends on the target labels and lengths "
            "(values, not shapes); its operators are counted at the op level where known"
        ),
        "MultiLabelMarginLoss": (
            "it sums over (target, non-target) class pairs, and how many classes a row lists "
            "before its -1 is in the target's values, not its shape"
        ),
        "TripletMarginWithDistanceLoss": (
            "it takes any Python distance function, whose work no formula of shapes can know; "
            "its operators (pairwise_distance by default) are counted exactly at the op level"
        ),
        "LinearCrossEntropyLoss": (
            "holds a Linear but passes its weights to a fused, optionally chunked functional "
            "call; its operators (the product, the cross entropy) are counted at the op level"
        ),
    }
)
"""Module types with arithmetic and no formula yet, each with the reason. A model that uses
one lists it among its uncounted modules."""


def torch_nn_module_types() -> dict[str, type[nn.Module]]:
    """Every module class in the ``torch.nn`` namespace, by name."""
    return {
        name: value
        for name, value in vars(nn).items()
        if inspect.isclass(value) and issubclass(value, nn.Module)
    }


def test_every_torch_nn_module_is_accounted_for() -> None:
    unformulated = {
        name
        for name, module_type in torch_nn_module_types().items()
        if formula_for(module_type) is None
    }
    listed = [set(CONTAINERS), set(NO_FORWARD), set(NOT_SUPPORTED_YET)]
    assert sum(map(len, listed)) == len(set().union(*listed)), "a type is on two lists"
    assert sorted(unformulated - set().union(*listed)) == [], "new types: count or list them"
    assert sorted(set().union(*listed) - unformulated) == [], "gone, or counted now: unlist"


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_containers_hold_modules(name: str) -> None:
    container = CONTAINERS[name]()
    assert isinstance(container, getattr(nn, name))
    assert list(container.children())


@pytest.mark.parametrize("name", sorted(NO_FORWARD))
def test_bases_have_no_forward(name: str) -> None:
    assert getattr(nn, name).forward is nn.Module.forward
