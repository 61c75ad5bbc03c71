"""Counting: everything that runs when results are read.

The hooked modules (sites), their settings and parameter counts, the formulas applied to the
logged calls, and the records built from them. Nothing here runs inside the forward pass.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter as Tally
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn
from torch.nn.parameter import is_lazy

from opscope.capture import (
    BACKWARD,
    OPTIMIZER,
    OUTSIDE,
    LoggedCall,
    LoggedOp,
    ShapeAndDtype,
)
from opscope.formulas.registry import Call, Formula, TensorMeta, formula_macs, op_formula_for
from opscope.records import (
    FUNCTIONAL,
    OPTIMIZER_NAME,
    OUTSIDE_NAME,
    PHASES,
    FunctionalOps,
    LayerRecord,
)


@dataclass(slots=True)  # not frozen: one per counted module on each entry, and frozen is slower
class Site:
    """A hooked module: its qualified name, the module and the formula that counts it."""

    name: str
    module: nn.Module
    formula: Formula

    @property
    def module_type(self) -> str:
        return type(self.module).__name__


@dataclass(frozen=True)
class Description:
    """A site's settings (its formula's config), parameter count and parameter bytes."""

    config: Any
    params: int
    param_bytes: int


def _parameters(module: nn.Module) -> list[nn.Parameter]:
    """The module's parameters, its children's included (a leaf's read directly: a walk of
    the module tree is most of the cost of describing hundreds of layers)."""
    if not module._modules:
        return [p for p in module._parameters.values() if p is not None]
    return list(module.parameters())


def describe(site: Site) -> Description | None:
    """The site's settings, parameter count and bytes; None while its parameters are lazy
    (``nn.LazyConv2d`` before its first call)."""
    parameters = _parameters(site.module)
    if any(is_lazy(p) for p in parameters):
        return None
    return Description(
        site.formula.describe(site.module),
        sum(p.numel() for p in parameters),
        sum(p.numel() * p.element_size() for p in parameters),
    )


def tensor_bytes(metas: tuple[ShapeAndDtype, ...]) -> int:
    """Bytes the tensors occupy, from metadata only: numel times the dtype's element size."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in metas)


class FormulaError(RuntimeError):
    """A formula that failed, or gave something other than a count; the message names the
    formula, the module (its path and type) and the shapes."""


def _module(name: str) -> str:
    return f"module {name!r}" if name else "the model"


def _function_name(function: Any) -> str:
    return getattr(function, "__qualname__", None) or repr(function)


class _NotACount(Exception):
    """A formula gave something other than a count (before it is known where)."""

    def __init__(self, value: Any, function: Any) -> None:
        super().__init__(value, function)
        self.value, self.function = value, function

    def error(self, where: str) -> FormulaError:
        """The error to raise, naming the formula and ``where`` it was applied."""
        return FormulaError(
            f"{_function_name(self.function)} returned {self.value!r} for {where}: a formula "
            "must return an exact, non-negative integer (use // for divisions)"
        )


def _checked(value: Any, function: Any) -> int:
    """``value`` if it is a count: an exact, non-negative integer.

    Raises:
        _NotACount: anything else (a float, a negative number, None).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _NotACount(value, function)


def op_name(op: Any) -> str:
    """An ATen operator's short name: ``aten.add.Tensor`` is ``add``."""
    return str(getattr(op, "overloadpacket", op)).removeprefix("aten.")


def _op_bytes(logged: LoggedOp) -> tuple[int, int]:
    """Bytes an operator reads (its tensor arguments) and writes (its outputs), from metadata."""
    call, read = logged.call, 0
    assert call is not None  # only counted calls get here
    for value in (*call.args, *(value for _, value in call.kwargs)):
        for meta in value if isinstance(value, tuple) else (value,):
            if isinstance(meta, TensorMeta):
                read += math.prod(meta.shape) * meta.dtype.itemsize
    written = sum(
        math.prod(shape) * dtype.itemsize for shape, dtype in zip(call.outputs, logged.out_dtypes)
    )
    return read, written


# The counts of (formula, settings, shapes), shared by every profiler: a formula is a pure
# function of them, so a layer repeated in a model, or a model profiled again, is counted
# once. Bounded: cleared when full.
_COUNTS: dict[tuple[Formula, Any, Call], tuple[int, int]] = {}
_COUNTS_LIMIT = 1 << 13  # a few MB at most


def _formula_counts(formula: Formula, config: Any, call: Call) -> tuple[int, int]:
    """The exact operations and MACs of one call counted by ``formula``.

    Raises:
        _NotACount: the formula returned something other than a count.
        Exception: whatever the formula raised.
    """
    # A config hashed by identity (a formula's own describe that returns the module) may
    # change its settings between blocks: its counts are not remembered.
    by_identity = config is not None and type(config).__hash__ is object.__hash__
    key: tuple[Formula, Any, Call] | None = None if by_identity else (formula, config, call)
    if key is not None:
        try:
            return _COUNTS[key]
        except KeyError:
            pass
        except TypeError:  # a config that cannot be a key (a formula's own, not frozen)
            key = None
    # both evaluated before either is checked: as without the memo, a MACs function that
    # raises makes the call uncounted, whatever its count returned
    ops, macs = formula.count(config, call), formula_macs(formula, config, call)
    counts = (_checked(ops, formula.count), _checked(macs, formula.macs))
    if key is not None:
        if len(_COUNTS) >= _COUNTS_LIMIT:
            _COUNTS.clear()
        _COUNTS[key] = counts
    return counts


@dataclass
class _Functional:
    """The functional work of one call of one module, as it adds up."""

    scope: int
    scope_call: int
    phase: int
    ops: int = 0
    macs: int = 0
    calls: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    by_op: Tally[str] = field(default_factory=Tally)
    family_calls: Tally[str] = field(default_factory=Tally)
    family_ops: Tally[str] = field(default_factory=Tally)


@dataclass(frozen=True)
class Counted:
    """The records of a block, in execution order, the ATen operators that had no formula
    (``(name, calls)``, most frequent first), and the counted modules that were never called
    (``(name, type, used by)``: the module whose operators used their parameters, ``""`` for
    none)."""

    records: list[LayerRecord]
    uncounted_ops: tuple[tuple[str, int], ...]
    idle: tuple[tuple[str, str, str | None], ...] = ()


class Counter:
    """Applies the sites' formulas to logged module calls and the operators' formulas to
    logged operator calls. Each site is described once (when first needed: a lazy module has
    its parameters by then), each distinct call counted once."""

    def __init__(
        self,
        sites: Sequence[Site],
        scopes: Sequence[tuple[str, str]] = (),
        used_by: Mapping[int, int] | None = None,
        tied: Mapping[int, Collection[int]] | None = None,
    ) -> None:
        self.sites = sites
        self.scopes = scopes
        self.used_by = used_by  # None: not followed (operators not counted)
        self.tied = tied if tied is not None else {}
        self._descriptions: dict[int, Description] = {}
        self._configs: dict[int, Any] = {}
        # Each distinct call counted once, whatever is read (totals, then records).
        self._counted: dict[int, tuple[Call, int, int, str | None]] = {}
        self._op_counts: dict[int, tuple[int, int, str] | None] = {}

    def config(self, index: int) -> Any:
        """Site ``index``'s settings, read once (a formula's count needs nothing else)."""
        if index not in self._configs:
            site = self.sites[index]
            self._configs[index] = site.formula.describe(site.module)
        return self._configs[index]

    def description(self, index: int) -> Description:
        """Site ``index``'s settings and parameters (cached once they are final)."""
        description = self._descriptions.get(index)
        if description is None:
            description = describe(self.sites[index])
            if description is None:  # still lazy: settings known, parameters not yet
                return Description(self.config(index), 0, 0)
            self._descriptions[index] = description
        return description

    def count(self, logged: LoggedCall) -> tuple[Call, int, int, str | None]:
        """The call's shapes, as its formula sees them, its exact operations and MACs (under
        ``torch.vmap``, of every call it stands for), and why it could not be counted: a
        formula that fails on a call (a nested tensor has no single shape to give it) makes
        a call of no operations, flagged with the reason, and a warning.

        Raises:
            FormulaError: the formula returned something other than a count.
        """
        index, inputs, outputs, training, batch, _ = logged
        site = self.sites[index]
        call = Call(
            tuple(tuple(shape) for shape, _ in inputs),
            tuple(tuple(shape) for shape, _ in outputs),
            training,
        )
        config = self.config(index)
        try:
            ops, macs = _formula_counts(site.formula, config, call)
        except _NotACount as bad:
            raise bad.error(f"{_module(site.name)} ({site.module_type})") from None
        except Exception as error:  # noqa: BLE001 - one uncountable call must not lose the rest
            reason = (
                f"{_function_name(site.formula.count)} failed on inputs {call.inputs} and "
                f"outputs {call.outputs}: {type(error).__name__}: {error}"
            )
            where = f"{_module(site.name)} ({site.module_type})"
            warnings.warn(f"opscope cannot count {where}: {reason}", stacklevel=2)
            return call, 0, 0, reason
        return call, ops * batch, macs * batch, None

    def _scope_name(self, scope: int) -> tuple[str, str]:
        """The name and type of a scope, of a counted module (in the backward pass), or of
        the block's own work."""
        if scope == OUTSIDE:
            return OUTSIDE_NAME, "-"
        if scope == OPTIMIZER:
            return OPTIMIZER_NAME, "Optimizer"
        if scope < 0:  # a site's code, -3 - index
            site = self.sites[-3 - scope]
            return site.name, site.module_type
        return self.scopes[scope]

    def count_op(self, logged: LoggedOp) -> tuple[int, int, str] | None:
        """The operator call's exact operations, MACs and formula family; None when it has no
        formula.

        Raises:
            RuntimeError: the formula failed; the message names the operator and the module.
        """
        formula = op_formula_for(logged.op)
        if formula is None or logged.call is None:
            return None
        try:
            found = formula.count(logged.call), formula.call_macs(logged.call)
        except Exception as error:  # noqa: BLE001 - listed as uncounted, the rest stays
            warnings.warn(
                f"opscope cannot count {self._op_where(logged)} with {_function_name(formula.count)} on "
                f"{logged.call.args}: {type(error).__name__}: {error}",
                stacklevel=2,
            )
            return None
        try:
            return (
                _checked(found[0], formula.count),
                _checked(found[1], formula.macs),
                formula.family,
            )
        except _NotACount as bad:
            raise bad.error(self._op_where(logged)) from None

    def _op_where(self, logged: LoggedOp) -> str:
        """An operator call, as a message names it."""
        name, module_type = self._scope_name(logged.scope)
        return f"operator {op_name(logged.op)} in {_module(name)} ({module_type})"

    def _module_record(
        self,
        logged: LoggedCall,
        counted: tuple[Call, int, int, str | None],
        count: int,
        index: int,
    ) -> LayerRecord:
        site, description = self.sites[logged[0]], self.description(logged[0])
        call, ops, macs, uncounted = counted
        return LayerRecord(
            name=site.name,
            module_type=site.module_type,
            family=site.formula.module_type.__name__,
            call_index=index,
            input_shapes=call.inputs,
            output_shapes=call.outputs,
            training=call.training,
            config=description.config,
            params=description.params,
            ops=ops * count,
            macs=macs * count,
            calls=count,
            input_bytes=tensor_bytes(logged[1]) * count,
            output_bytes=tensor_bytes(logged[2]) * count,
            param_bytes=description.param_bytes * count,
            uncounted=uncounted,
            phase=PHASES[logged[5]],
        )

    def _functional_record(self, work: _Functional, index: int) -> LayerRecord:
        name, module_type = self._scope_name(work.scope)
        return LayerRecord(
            name=name,
            module_type=module_type,
            family=FUNCTIONAL,
            call_index=index,
            input_shapes=(),
            output_shapes=(),
            training=False,
            config=FunctionalOps(
                tuple(work.by_op.most_common()),
                tuple(
                    (family, work.family_calls[family], ops)
                    for family, ops in work.family_ops.most_common()
                ),
            ),
            params=0,
            ops=work.ops,
            macs=work.macs,
            calls=1 if work.scope_call else work.calls,
            input_bytes=work.input_bytes,
            output_bytes=work.output_bytes,
            phase=PHASES[work.phase],
        )

    def totals(
        self, distinct: Sequence[LoggedCall | LoggedOp], calls: Sequence[tuple[int, int, int]]
    ) -> tuple[int, int]:
        """Exact operations and MACs of ``(distinct call number, calls, scope call)`` entries:
        one formula evaluation per distinct call, no record built."""
        multiplicity: Tally[int] = Tally()
        for code, count, _ in calls:
            multiplicity[code] += count
        ops = macs = 0
        for code, count in multiplicity.items():
            logged = distinct[code]
            if isinstance(logged, LoggedOp):
                if code not in self._op_counts:
                    self._op_counts[code] = self.count_op(logged)
                found = self._op_counts[code]
                counts = (0, 0) if found is None else found[:2]
            else:
                if code not in self._counted:
                    self._counted[code] = self.count(logged)
                counts = self._counted[code][1:3]
            ops += counts[0] * count
            macs += counts[1] * count
        return ops, macs

    def records(
        self,
        distinct: Sequence[LoggedCall | LoggedOp],
        calls: Sequence[tuple[int, int, int]],
        times: Sequence[int],
        backward_times: Mapping[int, int] | None = None,
    ) -> Counted:
        """The records of ``(distinct call number, calls, scope call)`` entries in execution
        order: one per module call (with its time, ``times`` being those of the module calls in
        order), and one per call of a module that ran operators outside counted modules (its
        place is that of its first operator); a module's backward record has its time in
        ``backward_times`` (by the module's code), when timed."""
        counted, op_counts = self._counted, self._op_counts
        calls_per_site = [0] * len(self.sites)
        slots: list[LayerRecord | _Functional] = []
        functional: dict[tuple[int, int], _Functional] = {}
        uncounted: Tally[str] = Tally()
        module_times = iter(times)
        for code, count, scope_call in calls:
            logged = distinct[code]
            if isinstance(logged, LoggedOp):
                if code not in op_counts:
                    op_counts[code] = self.count_op(logged)
                found = op_counts[code]
                if found is None:
                    uncounted[op_name(logged.op)] += count
                    continue
                if not found[0] and not found[1]:
                    continue  # no arithmetic (a view, a copy): nothing to show
                key = (logged.scope, scope_call, logged.phase)
                work = functional.get(key)
                if work is None:
                    work = functional[key] = _Functional(*key)
                    slots.append(work)
                read, written = _op_bytes(logged)
                work.ops += found[0] * count
                work.macs += found[1] * count
                work.calls += count
                work.input_bytes += read * count
                work.output_bytes += written * count
                work.by_op[op_name(logged.op)] += count
                work.family_calls[found[2]] += count
                work.family_ops[found[2]] += found[0] * count
                continue
            index = logged[0]
            calls_per_site[index] += 1
            if code not in counted:
                counted[code] = self.count(logged)
            record = self._module_record(logged, counted[code], count, calls_per_site[index])
            time_ns = next(module_times, None)
            slots.append(replace(record, time_ns=time_ns) if time_ns is not None else record)
        calls_per_scope: Tally[tuple[int, int]] = Tally()
        records = []
        for slot in slots:
            if isinstance(slot, _Functional):
                calls_per_scope[slot.scope, slot.phase] += 1
                work = slot
                slot = self._functional_record(work, calls_per_scope[work.scope, work.phase])
                if backward_times and work.phase == BACKWARD and work.scope in backward_times:
                    slot = replace(slot, time_ns=backward_times[work.scope])
            records.append(slot)
        idle = tuple(
            (site.name, site.module_type, self._user(index, calls_per_site))
            for index, (site, calls) in enumerate(zip(self.sites, calls_per_site))
            if not calls
        )
        return Counted(records, tuple(uncounted.most_common()), idle)

    def _user(self, site: int, calls_per_site: Sequence[int]) -> str | None:
        """The name of the module whose operators used the site's parameters, or else of a
        counted module that ran with one of them (tied weights); ``""`` for none, None when
        the operators' use of parameters was not followed."""
        scope = None if self.used_by is None else self.used_by.get(site)
        if scope is not None:
            return self._scope_name(scope)[0] or "(model)"
        ran = sorted(other for other in self.tied.get(site, ()) if calls_per_site[other])
        if ran:
            return self.sites[ran[0]].name
        return None if self.used_by is None else ""
