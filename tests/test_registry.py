"""Which modules are counted: registry resolution, custom formulas, include/exclude, nothing
counted twice, uncounted modules listed, and coverage."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import opscope
from opscope.records import OUTSIDE_NAME
from opscope.tables import notes
from opscope import Call, Formula, Profiler
from opscope.formulas import formula_for, registered_types


class Scale(nn.Module):
    """A custom block with no formula of its own: one multiplication per element."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


class ConvBlock(nn.Module):
    """A block that contains a Conv2d: once the block has a formula, the conv is not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


def count_per_element(config: None, call: Call) -> int:
    return torch.Size(call.output).numel()


def test_subclasses_resolve_to_their_nearest_registered_base() -> None:
    class MyConv(nn.Conv2d):
        pass

    class MyConvAgain(MyConv):
        pass

    assert formula_for(MyConvAgain) is formula_for(nn.Conv2d)
    assert formula_for(nn.LazyConv2d).module_type is nn.Conv2d
    assert formula_for(Scale) is None
    assert nn.Conv2d in registered_types()


def test_per_profiler_formulas_win_over_the_registry() -> None:
    model = nn.Sequential(nn.Conv2d(2, 2, 1), Scale())
    with Profiler(model, formulas={Scale: count_per_element, nn.Conv2d: lambda c, call: 7}) as p:
        model(torch.randn(3, 2, 4, 4))
    assert [(r.name, r.family, r.ops) for r in p.records] == [("0", "Conv2d", 7), ("1", "Scale", 3 * 2 * 16)]
    # Without them, the registry: Scale is not counted, and it is listed as such.
    with Profiler(model, include=[nn.Conv2d]) as p:
        model(torch.randn(3, 2, 4, 4))
    assert [r.name for r in p.records] == ["0"]
    assert p.report.uncounted_modules == (("1", "Scale"),)


def test_register_a_custom_block_globally() -> None:
    class Registered(Scale):
        pass

    try:
        decorated = opscope.register(Registered)(count_per_element)
        assert decorated is count_per_element
        model, other = Registered(), Registered()
        with Profiler(model) as p:
            other(torch.ones(5))  # a different instance: not hooked
            model(torch.ones(5))
        # the other's work (without parameters, like a loss module) is the block's own,
        # counted by its operator outside the model; it has no record of its own
        assert [(r.name, r.module_type, r.ops) for r in p.records] == [
            (OUTSIDE_NAME, "-", 5), ("", "Registered", 5)
        ]
    finally:
        from opscope.formulas import registry

        registry._REGISTRY.pop(Registered)


def test_register_rejects_what_is_not_a_module_type() -> None:
    with pytest.raises(TypeError, match="torch.nn.Module subclass"):
        opscope.register(int)
    with pytest.raises(TypeError, match="include expects torch.nn.Module subclasses"):
        Profiler(nn.Conv2d(1, 1, 1), include=["Conv2d"])  # type: ignore[list-item]


@pytest.mark.parametrize("include", [nn.Linear, "Linear"])
def test_one_type_or_a_name_for_include_is_refused_plainly(include: object) -> None:
    # a string is iterable: its letters were the types, the message named 'L'
    with pytest.raises(TypeError, match=r"a list of torch.nn.Module subclasses, such as \[torch.nn.Linear\]"):
        Profiler(nn.Linear(2, 2), include=include)  # type: ignore[arg-type]


def test_formulas_that_are_not_a_mapping_of_count_functions_are_refused() -> None:
    with pytest.raises(TypeError, match="formulas expects a mapping .* got a list"):
        Profiler(nn.Linear(2, 2), formulas=[lambda config, call: 0])  # type: ignore[arg-type]
    # accepted before, then counted 0 with a warning when results were read
    with pytest.raises(TypeError, match=r"formulas\[Linear\] must be a Formula or a count function"):
        Profiler(nn.Linear(2, 2), formulas={nn.Linear: 3})  # type: ignore[dict-item]


def test_a_counted_block_hides_its_submodules() -> None:
    model = nn.Sequential(ConvBlock(), ConvBlock())
    formula = Formula(ConvBlock, count=lambda config, call: 1000)
    with Profiler(model, formulas={ConvBlock: formula}) as p:
        model(torch.randn(1, 2, 3, 3))
    assert [(r.name, r.ops) for r in p.records] == [("0", 1000), ("1", 1000)]
    assert p.report.hooked_modules == 2
    assert p.report.total_params == 2 * (2 * 2 + 2)  # the blocks' params include the conv's


def test_exclude_descends_into_the_excluded_block() -> None:
    model = nn.Sequential(ConvBlock())
    formula = Formula(ConvBlock, count=lambda config, call: 1000)
    with Profiler(model, formulas={ConvBlock: formula}, exclude=[ConvBlock]) as p:
        model(torch.randn(1, 2, 3, 3))
    # The block's own work outside its conv is counted operator by operator.
    assert [(r.name, r.family) for r in p.records] == [("0.conv", "Conv2d"), ("0", "functional")]
    assert p.records[0].ops == 2 * 9 * (2 * 2)


def test_include_limits_the_families() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1), Scale())
    with Profiler(model, include=[nn.Linear], formulas={Scale: count_per_element}) as p:
        model(torch.randn(1, 1, 2, 2))
    assert p.records == ()
    assert p.report.counted_types == ("Linear",)


def test_by_type_summary() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), Scale(), nn.Conv2d(2, 1, 1), Scale())
    with Profiler(model, formulas={Scale: count_per_element}) as p:
        model(torch.randn(1, 1, 3, 3))
    summary = {s.module_type: (s.calls, s.ops) for s in p.report.by_type()}
    conv_ops = sum(r.ops for r in p.records if r.family == "Conv2d")
    assert summary == {"Conv2d": (2, conv_ops), "Scale": (2, 2 * 9 + 9)}
    assert p.report.ops_of("Conv2d") == conv_ops
    assert p.to_dict()["by_type"][0]["module_type"] == max(summary, key=lambda t: summary[t][1])


def test_coverage_measures_what_hooks_cannot_see() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.weight = nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y + torch.matmul(y.transpose(1, -1), self.weight).transpose(1, -1)  # unhooked

    model = Residual()
    x = torch.randn(2, 4, 5, 5)
    with Profiler(model, coverage=True, include=[nn.Conv2d]) as p:
        model(x)
    coverage = p.report.coverage
    conv_flops = 2 * 2 * 4 * 25 * 4 * 9  # FlopCounterMode: 2 * MACs of the convolution
    matmul_flops = 2 * (2 * 5 * 5) * 4 * 4  # (50 x 4) @ (4 x 4)
    assert (coverage.counted_flops, coverage.total_flops) == (conv_flops, conv_flops + matmul_flops)
    assert coverage.share == conv_flops / (conv_flops + matmul_flops)
    assert p.to_dict()["coverage"]["share"] == coverage.share
    # Without coverage=True nothing is measured.
    with Profiler(model) as p:
        model(x)
    assert p.report.coverage is None and "coverage" not in p.to_dict()


def test_types_registered_by_name_resolve_without_an_import() -> None:
    from torchvision.ops.misc import Permute

    class MyPermute(Permute):
        pass

    formula = formula_for(MyPermute)
    assert formula is not None and formula.module_type is Permute
    model = nn.Sequential(MyPermute([0, 2, 3, 1]))
    with Profiler(model) as p:
        model(torch.randn(1, 2, 3, 3))
    assert [(r.family, r.ops) for r in p.records] == [("Permute", 0)]


def test_coverage_is_right_for_shared_modules_and_outer_callers() -> None:
    shared = nn.Linear(8, 8)
    model = nn.Sequential(nn.Sequential(shared), nn.Sequential(shared))
    with Profiler(model, coverage=True) as p:
        model(torch.randn(2, 8))
    linear_flops = 2 * 2 * 8 * 8
    assert (p.report.coverage.counted_flops, p.report.coverage.total_flops) == (2 * linear_flops,) * 2
    # Profiling part of what runs: the outer Linear is outside the profiled model.
    inner = nn.Sequential(nn.Linear(8, 8))
    outer = nn.Sequential(inner, nn.Linear(8, 2))
    with Profiler(inner, coverage=True) as p:
        outer(torch.randn(2, 8))
    assert p.report.coverage.counted_flops == linear_flops
    assert p.report.coverage.total_flops == linear_flops + 2 * 2 * 8 * 2


@pytest.mark.parametrize(("result", "shown"), [(1.5, "1.5"), (-5, "-5"), (None, "None"), (True, "True")])
def test_a_formula_must_return_an_exact_count(result: object, shown: str) -> None:
    def odd(config: None, call: Call) -> object:
        return result

    model = nn.Sequential(nn.Conv2d(1, 1, 1))
    with Profiler(model, formulas={nn.Conv2d: odd}) as p:
        model(torch.ones(1, 1, 2, 2))
    with pytest.raises(RuntimeError, match=rf"odd returned {shown} for module '0' \(Conv2d\): a formula must return an exact, non-negative integer"):
        p.total_ops


def test_a_failing_formula_names_the_module_its_type_and_the_formula() -> None:
    def broken(config: None, call: Call) -> int:
        raise KeyError("kernel")

    model = nn.Sequential(nn.Conv2d(1, 1, 1))
    with Profiler(model, formulas={nn.Conv2d: broken}) as p:
        model(torch.ones(1, 1, 2, 2))
    with pytest.warns(UserWarning, match=r"cannot count module '0' \(Conv2d\): .*broken failed on inputs \(\(1, 1, 2, 2\),\)"):
        records = p.records
    # The call is a record of no operations that says why; the report stays readable.
    assert records[0].ops == 0 and "KeyError: 'kernel'" in records[0].uncounted
    assert "Not counted: 0 (Conv2d) #1: " in " ".join(notes(p.report))
    assert json.loads(p.to_json())["layers"][0]["uncounted"] == records[0].uncounted


def test_registering_a_type_again_warns() -> None:
    class Twice(nn.Module):
        pass

    try:
        opscope.register(Twice)(count_per_element)
        with pytest.warns(UserWarning, match="Twice already has a formula .*count_per_element.*replaces it"):
            opscope.register(Twice)(lambda config, call: 0)
    finally:
        from opscope.formulas import registry

        registry._REGISTRY.pop(Twice)


def test_profiler_to_json_is_the_reports() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1))
    with Profiler(model) as p:
        model(torch.ones(1, 1, 2, 2))
    assert p.to_json() == p.report.to_json() and '"total_macs": 4' in p.to_json()


def test_a_formula_is_evaluated_once_per_distinct_settings_and_shapes() -> None:
    # A formula is a pure function of its config and the call's shapes: a layer repeated in
    # a model, or a model profiled again, is counted once; a config that cannot be a key (a
    # dict) is evaluated every time, with the same result.
    for describe, evaluations in (
        (lambda m: m.out_channels, 2),
        (lambda m: {"c": m.out_channels}, 8),
    ):
        evaluated = []

        def per_output(config: object, call: Call) -> int:
            evaluated.append(call)
            return math.prod(call.outputs[0])

        formula = Formula(nn.Conv2d, per_output, describe=describe)
        model = nn.Sequential(*(nn.Conv2d(2, 2, 1) for _ in range(3)), nn.Conv2d(2, 3, 1))
        totals = []
        for _ in range(2):
            with Profiler(model, formulas={nn.Conv2d: formula}) as p:
                model(torch.ones(1, 2, 4, 4))
            totals.append((p.total_ops, sum(r.ops for r in p.records)))
        assert totals == [(3 * 32 + 48, 3 * 32 + 48)] * 2
        assert len(evaluated) == evaluations


def test_a_config_hashed_by_identity_is_counted_with_its_current_settings() -> None:
    # A formula's own describe may return the module itself, whose settings can change
    # between blocks: its counts are not remembered.
    formula = Formula(nn.Conv2d, lambda conv, call: conv.out_channels, describe=lambda m: m)
    conv = nn.Conv2d(2, 2, 1)
    totals = []
    for scale in (1, 5):
        conv.out_channels = 2 * scale  # a setting read when counting
        with Profiler(conv, formulas={nn.Conv2d: formula}) as p:
            conv(torch.ones(1, 2, 4, 4))
        totals.append(p.total_ops)
    assert totals == [2, 10]


def test_a_macs_function_that_raises_leaves_the_call_uncounted_whatever_its_count() -> None:
    formula = Formula(nn.Conv2d, lambda config, call: 1.5, macs=lambda config, call: 1 // 0)
    conv = nn.Conv2d(2, 2, 1)
    with Profiler(conv, formulas={nn.Conv2d: formula}) as p:
        conv(torch.ones(1, 2, 4, 4))
    with pytest.warns(UserWarning, match="ZeroDivisionError"):
        (record,) = p.records
    assert "ZeroDivisionError" in record.uncounted and p.total_ops == 0
