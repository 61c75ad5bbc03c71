"""Capture: everything that runs inside the forward pass.

The forward hook of a counted module, the dispatch mode that sees the ATen operators run
outside counted modules, the log of what both saw, the per-call timer and the coverage
probe. They only read ``.shape``, ``.dtype`` and the device type of tensors and append one
number per call: they never read tensor data, never make a device wait and never keep a
reference to a tensor. Turning the log into counts is :mod:`opscope.counting`'s job, when
results are read.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._C import _current_autograd_node
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from opscope.formulas.registry import OpCall, op_formula_for

ShapeAndDtype = tuple[torch.Size, torch.dtype]
"""What a hook reads of a tensor: its shape and dtype."""
LoggedCall = tuple[int, tuple[ShapeAndDtype, ...], tuple[ShapeAndDtype, ...], bool]
"""All a hook keeps of one call: (site index, input metadata, output metadata, training)."""


@dataclass(frozen=True, slots=True)
class LoggedOp:
    """All the dispatch mode keeps of one ATen operator call outside counted modules.

    Attributes:
        scope: the number of the innermost module that was running (:class:`Scopes`), or
            :data:`OUTSIDE` when no module of the model was.
        op: the operator.
        call: its arguments' and outputs' metadata, as its formula reads them; None when
            they could not be read (a tensor without a single shape).
        out_dtypes: the dtypes of its tensor outputs, in the order of ``call.outputs``.
    """

    scope: int
    op: torch._ops.OpOverload
    call: OpCall | None
    out_dtypes: tuple[torch.dtype, ...]


OUTSIDE = -1
"""The scope of operators that ran inside the block but outside every module of the model."""


def _collect_metas(value: Any, metas: list[ShapeAndDtype]) -> None:
    """Append the shape and dtype of every tensor in ``value``, looking into tuples, lists,
    dicts and dataclass instances."""
    if isinstance(value, torch.Tensor):
        if not value.is_nested:  # a nested tensor has no single shape: nothing to read
            metas.append((value.shape, value.dtype))
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect_metas(item, metas)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_metas(item, metas)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _collect_metas(getattr(value, field.name), metas)


def tensor_metas(value: Any) -> tuple[ShapeAndDtype, ...]:
    """The shape and dtype of every tensor in ``value`` (nested containers included)."""
    metas: list[ShapeAndDtype] = []
    _collect_metas(value, metas)
    return tuple(metas)


_SCOPE_CALL_SHIFT = 32  # up to 2**32 distinct calls, and 2**31 calls of one scope


class CallLog:
    """The calls a profiler saw, kept compactly.

    Each distinct call (module, shapes, mode) is stored once and numbered; then either the
    number of every call is appended to an array of machine integers (8 bytes a call, and
    nothing for the garbage collector to walk, which a list of tuples would make it do over
    and over), or, in summary mode, one count per distinct call is kept. Forward passes may
    run in several threads: numbering and counting take a lock, appending is atomic.
    """

    def __init__(self, summary: bool) -> None:
        self._codes: dict[LoggedCall | LoggedOp, int] = {}
        # Per call, its number and, in the high bits, which call of its scope an op ran in:
        # one append, which is atomic, so threads need no lock to log.
        self._order = array("q")
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._summary = summary

    def _code(self, call: LoggedCall | LoggedOp) -> int:
        code = self._codes.get(call)
        if code is None:
            with self._lock:
                code = self._codes.setdefault(call, len(self._codes))
        return code

    def keep(self, call: LoggedCall | LoggedOp, scope_call: int = 0) -> None:
        """Log one call; ``scope_call`` numbers the call of the op's scope it ran in."""
        code = self._code(call)
        if self._summary:
            with self._lock:
                self._counts[code] = self._counts.get(code, 0) + 1
        else:
            self._order.append(code | scope_call << _SCOPE_CALL_SHIFT)

    def __len__(self) -> int:
        """How many calls were logged."""
        return sum(self._counts.values()) if self._summary else len(self._order)

    def snapshot(self) -> tuple[list[LoggedCall | LoggedOp], list[tuple[int, int, int]]]:
        """The distinct calls by number, and ``(number, calls, scope call)`` triples in
        execution order: one per call, or in summary mode one per distinct call (scope
        call 0)."""
        with self._lock:
            distinct = list(self._codes)
            if self._summary:
                return distinct, [(code, count, 0) for code, count in self._counts.items()]
            order = self._order[:]
        low = (1 << _SCOPE_CALL_SHIFT) - 1
        return distinct, [(entry & low, 1, entry >> _SCOPE_CALL_SHIFT) for entry in order]


def forward_hook(index: int, keep: Callable[[LoggedCall], object]) -> Callable[..., None]:
    """The forward hook (``with_kwargs=True``) of the counted module numbered ``index``: it
    keeps the call's input and output metadata and the module's training flag."""

    # The hot path: runs once per counted call, so only the common single-tensor case is
    # handled inline; everything else (several inputs, keywords, tuples) is looked into.
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        first = args[0] if len(args) == 1 and not kwargs else None
        if isinstance(first, torch.Tensor) and not first.is_nested:
            inputs: tuple[ShapeAndDtype, ...] = ((first.shape, first.dtype),)
        else:
            inputs = tensor_metas(args) + tensor_metas(kwargs)
        if isinstance(output, torch.Tensor) and not output.is_nested:
            outputs: tuple[ShapeAndDtype, ...] = ((output.shape, output.dtype),)
        else:
            outputs = tensor_metas(output)
        keep((index, inputs, outputs, module.training))

    return hook


def _on_cuda(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the call runs on CUDA: its first tensor argument, or else the module's first
    parameter, is a CUDA tensor (a device attribute, never data)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.is_cuda
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            return value[0].is_cuda  # a list of images, as detection models take
    parameter = next(module.parameters(), None)
    return parameter is not None and parameter.is_cuda


class CallTimer:
    """The duration of every logged call, in the order the calls were logged: monotonic
    nanoseconds on the CPU; on CUDA, a pair of events recorded on the current stream in the
    hooks (nothing waits) and resolved after one synchronisation when results are read."""

    def __init__(self) -> None:
        self._times: list[int | tuple[Any, Any]] = []
        self._lock = threading.Lock()

    def timed(
        self, keep: Callable[[LoggedCall], object]
    ) -> tuple[Callable[..., None], Callable[[LoggedCall], None]]:
        """A forward pre-hook (``with_kwargs=True``) that starts a module's call, and ``keep``
        that also keeps its time. The call and its time are kept together under one lock, so
        calls of other modules in other threads cannot come between them."""
        starts: list[Any] = []  # a stack: a module may call itself (recursion)

        def start(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if _on_cuda(module, args, kwargs):
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                starts.append(event)
            else:
                starts.append(time.perf_counter_ns())

        def keep_timed(call: LoggedCall) -> None:
            begun = starts.pop()
            if isinstance(begun, int):
                elapsed: Any = time.perf_counter_ns() - begun
            else:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                elapsed = (begun, end)
            with self._lock:
                self._times.append(elapsed)
                keep(call)

        return start, keep_timed

    def durations(self, count: int) -> list[int]:
        """The first ``count`` durations in nanoseconds (CUDA events resolved after one
        synchronisation)."""
        times = self._times[:count]
        if any(not isinstance(t, int) for t in times):
            torch.cuda.synchronize()
        return [t if isinstance(t, int) else round(t[0].elapsed_time(t[1]) * 1e6) for t in times]


class CoverageProbe:
    """``torch.utils.flop_counter.FlopCounterMode`` around the block, and hooks that add up
    the FLOPs each counted module's call adds to its total (whatever name the counter gives
    the module), so that the share of the block's FLOPs inside counted modules is known."""

    def __init__(self) -> None:
        self._counter = FlopCounterMode(display=False)
        self._active = False
        self.counted_flops = 0

    @property
    def total_flops(self) -> int:
        """The counter's FLOPs of the whole block so far."""
        return self._counter.get_total_flops()

    def start(self) -> None:
        """Enter the counter's mode: every operation from here on is counted."""
        self._counter.__enter__()
        self._active = True

    def stop(self) -> None:
        """Leave the counter's mode."""
        self._active = False
        self._counter.__exit__(None, None, None)

    def watch(self, module: nn.Module) -> list[RemovableHandle]:
        """Hook ``module`` so that its calls' FLOPs add to :attr:`counted_flops`."""
        starts: list[int] = []

        def start(module: nn.Module, args: tuple[Any, ...]) -> None:
            starts.append(self.total_flops if self._active else 0)

        def stop(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._active and starts:
                self.counted_flops += self.total_flops - starts.pop()

        return [module.register_forward_pre_hook(start), module.register_forward_hook(stop)]


def _dtypes(out: Any) -> tuple[torch.dtype, ...]:
    """The dtypes of the tensors in an operator's output, flattened in order."""
    if isinstance(out, torch.Tensor):
        return (out.dtype,)
    if isinstance(out, (tuple, list)):
        return tuple(dtype for item in out for dtype in _dtypes(item))
    return ()


FOREIGN = -2
"""The scope of a module that is not part of the profiled model: its operators are not the
model's work, and are not counted."""
_COUNTED = -3  # a module counted by its formula: its operators are already counted


class _ThreadScopes(threading.local):
    """One thread's view of the running modules."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, int]] = []  # (scope, which call of it), innermost last
        self.counted = 0  # how deep inside counted modules (whose formula holds their ops)


class Scopes:
    """Which module is running, per thread, so that an operator run outside counted modules
    is attributed to the innermost module of the model that ran it.

    Every module of the model without a formula is a scope. Global forward hooks (any
    module's call, while the block lasts) push the module that starts and pop it when it ends,
    also when it raises: a scope, a counted module (whose operators its formula holds), or a
    module foreign to the model (profiling part of what runs: its operators are not this
    model's work). Operators that run while no module runs (a loss, an optimizer step) belong
    to the block itself, :data:`OUTSIDE` the model.
    """

    def __init__(self) -> None:
        self.names: list[tuple[str, str]] = []  # (qualified name, type name) per scope
        self._calls: list[int] = []  # calls of each scope so far
        self._kinds: dict[int, int] = {}  # id(module): its scope, or _COUNTED
        self._threads = _ThreadScopes()

    def current(self) -> _ThreadScopes:
        return self._threads

    def add(self, name: str, module: nn.Module) -> None:
        """Make ``module`` a scope: its operators are attributed to ``name``."""
        self._kinds[id(module)] = len(self.names)
        self.names.append((name, type(module).__name__))
        self._calls.append(0)

    def add_counted(self, module: nn.Module) -> None:
        """Mark ``module``'s calls as counted by its formula: its operators are skipped."""
        self._kinds[id(module)] = _COUNTED

    def hooks(self) -> list[RemovableHandle]:
        """The global hooks that follow module calls (remove them when the block ends)."""
        threads, kinds, calls = self._threads, self._kinds, self._calls

        def push(module: nn.Module, args: tuple[Any, ...]) -> None:
            scope = kinds.get(id(module), FOREIGN)
            if scope >= 0:
                calls[scope] += 1
                threads.stack.append((scope, calls[scope]))
                return
            if scope == _COUNTED:
                threads.counted += 1
            threads.stack.append((scope, 0))

        def pop(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if threads.stack and threads.stack.pop()[0] == _COUNTED:
                threads.counted -= 1

        # Global pre-hooks run before a module's own: a lazy module's pre-hook creates its
        # parameters with operators that belong to the module.
        return [
            register_module_forward_pre_hook(push),
            register_module_forward_hook(pop, always_call=True),
        ]


class OpCapture(TorchDispatchMode):
    """A dispatch mode that logs every ATen operator run inside the block but outside counted
    modules, under the innermost running module.

    An operator that has no formula is decomposed, as ``FlopCounterMode`` does, so that a
    composite (``einsum``, ``linear`` under ``no_grad``) is counted through the operators it
    runs; one that has neither is logged too, and listed as uncounted when results are read.
    With a coverage probe, the FlopCounterMode FLOPs of the operators logged here count as
    covered.
    """

    def __init__(self, log: CallLog, scopes: Scopes, probe: CoverageProbe | None) -> None:
        super().__init__()
        self._log = log
        self._scopes = scopes
        self._probe = probe

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        here = self._scopes.current()
        scope, scope_call = here.stack[-1] if here.stack else (OUTSIDE, 0)
        if here.counted or scope == FOREIGN or _current_autograd_node() is not None:
            # Counted by a formula, not the model's work, or the backward pass (not counted
            # yet: the forward's count stays the same with or without a backward).
            return func(*args, **kwargs)
        formula = op_formula_for(func)
        if formula is None:
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        probe = self._probe
        before = probe.total_flops if probe is not None else 0
        out = func(*args, **kwargs)
        if probe is not None and formula is not None:
            probe.counted_flops += probe.total_flops - before
        try:
            call: OpCall | None = OpCall.of(args, kwargs, out)
        except Exception:  # noqa: BLE001 - a tensor without shape must not break the forward
            call = None  # counted as an operator that has no formula
        self._log.keep(LoggedOp(scope, func, call, _dtypes(out)), scope_call)
        return out
