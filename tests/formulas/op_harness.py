"""A stand-in for the capture layer: counts every ATen operator call with the op registry.

It works as the capture layer will: an operator with a formula is run and counted (its
operations and MACs); one without is decomposed where torch can, like ``FlopCounterMode``
does, and otherwise run and listed as uncounted, by name.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import opscope.formulas  # noqa: F401  (registers every family)
from opscope import Profiler
from opscope.formulas.registry import Call, OpCall, formula_for, formula_macs, op_formula_for


@dataclass
class OpCounts:
    """What one counted region ran: totals, per-family totals, and the uncounted ops."""

    ops: int = 0
    macs: int = 0
    by_family: collections.Counter[str] = field(default_factory=collections.Counter)
    by_op: collections.Counter[str] = field(default_factory=collections.Counter)
    uncounted: collections.Counter[str] = field(default_factory=collections.Counter)


class OpCounter(TorchDispatchMode):
    """Counts the operators that reach it (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = OpCounts()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        formula = op_formula_for(func)
        if formula is None:
            with self:
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
            self.counts.uncounted[str(func)] += 1
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        call = OpCall.of(args, kwargs, out)
        ops, macs = formula.count(call), formula.call_macs(call)
        self.counts.ops += ops
        self.counts.macs += macs
        self.counts.by_family[formula.family] += ops
        self.counts.by_op[str(func)] += ops
        return out


GRAD_MODES: dict[str, Callable[[], Any]] = {
    "inference_mode": torch.inference_mode,
    "no_grad": torch.no_grad,
}
"""The two settings the capture layer meets: composites arrive whole under inference mode,
decomposed under no_grad (and grad mode)."""


def count_ops(run: Callable[[], Any], grad_mode: str = "inference_mode") -> OpCounts:
    """The op-level counts of ``run()`` under ``grad_mode``."""
    with GRAD_MODES[grad_mode](), OpCounter() as counter:
        run()
    return counter.counts


def flop_counter_flops(run: Callable[[], Any], grad_mode: str = "inference_mode") -> int:
    """``FlopCounterMode``'s total FLOPs for ``run()`` under ``grad_mode``."""
    with GRAD_MODES[grad_mode](), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def module_op_counts(
    module: nn.Module, *inputs: Any, grad_mode: str = "inference_mode"
) -> OpCounts:
    """The op-level counts of one call of ``module`` (no module hooks at all)."""
    return count_ops(lambda: module(*inputs), grad_mode)


BOTH = tuple(GRAD_MODES)
INFERENCE = ("inference_mode",)


@dataclass(frozen=True)
class Case:
    """A module, its inputs, and the grad modes in which the op level must match it."""

    module: Callable[[], nn.Module]
    inputs: Callable[[], tuple[Any, ...]]
    grad_modes: tuple[str, ...] = BOTH
    training: bool = False


def _counted_module(module: nn.Module) -> nn.Module:
    """The module whose formula counts the call (a test wrapper's attention)."""
    return getattr(module, "attention", module)


def module_formula(case: Case) -> tuple[nn.Module, tuple[Any, ...], int, int]:
    """The case's module and inputs, with its module formula's ops and MACs."""
    torch.manual_seed(0)
    module = case.module().train(case.training)
    inputs = case.inputs()
    counted = _counted_module(module)
    with Profiler(counted) as profiler:
        module(*inputs)
    (record,) = profiler.records
    formula = formula_for(type(counted))
    assert formula is not None
    call = Call(record.input_shapes, record.output_shapes, record.training)
    return module, inputs, record.ops, formula_macs(formula, record.config, call)
