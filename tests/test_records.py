"""Records and their JSON round trip, whatever kind of function reads a formula's settings."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import opscope
from opscope import Profiler, Report
from opscope.formulas import registry


@dataclass(frozen=True)
class ScaleConfig:
    factor: int
    shape: tuple[int, ...]


class ScaleByLambda(nn.Module):
    factor = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class ScaleByFunction(ScaleByLambda):
    factor = 5


def describe_scale(module: nn.Module) -> ScaleConfig:
    return ScaleConfig(module.factor, (1, 2))


def count_scale(config: ScaleConfig, call: opscope.Call) -> int:
    return config.factor * call.input[-1]


@pytest.fixture
def registered():
    opscope.register(ScaleByLambda, describe=lambda m: ScaleConfig(m.factor, (1, 2)))(count_scale)
    opscope.register(ScaleByFunction, describe=describe_scale)(count_scale)
    try:
        yield
    finally:
        registry._REGISTRY.pop(ScaleByLambda)
        registry._REGISTRY.pop(ScaleByFunction)


def test_json_round_trip_with_a_lambda_or_a_plain_function_describe(registered) -> None:
    net = nn.Sequential(ScaleByLambda(), ScaleByFunction())
    with Profiler(net) as p:
        net(torch.ones(2, 4))
    assert [r.config for r in p.records] == [ScaleConfig(3, (1, 2)), ScaleConfig(5, (1, 2))]
    assert [r.ops for r in p.records] == [12, 20]
    back = Report.from_json(p.report.to_json())
    assert back == p.report
    assert back.records[1].config.shape == (1, 2)  # tuples come back as tuples


def test_a_config_of_no_registered_formula_is_refused(registered) -> None:
    net = nn.Sequential(ScaleByLambda())
    with Profiler(net) as p:
        net(torch.ones(2, 4))
    text = p.report.to_json().replace("ScaleConfig", "Unknown")
    with pytest.raises(ValueError, match="register its formula first"):
        Report.from_json(text)
    # A dataclass of a module that defines no formula is never picked up.
    foreign = p.report.to_json().replace(f"{__name__}.ScaleConfig", "dataclasses.Field")
    with pytest.raises(ValueError, match="register its formula first"):
        Report.from_json(foreign)
