"""The Profiler: forward hooks that record the shapes of every counted module call.

Data flows one way: the hooks append ``(site, input shapes, output shapes, training)`` tuples,
the :class:`~opscope.report.Report` turns them into :class:`~opscope.records.LayerRecord`
objects (applying each family's formula) when results are first read, and rendering reads the
report. The hook itself only reads ``.shape`` attributes and appends a tuple: it never reads
tensor data, never makes a device wait and never keeps a reference to a tensor.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time
import warnings
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from opscope import distributed
from opscope.formulas.registry import Call, CountFn, Formula, as_formulas, formula_for
from opscope.records import LayerRecord
from opscope.report import Coverage, Report, SortOrder

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

# Modules that only hold others: an empty one does nothing, so is never "uncounted".
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

# (site index, input shapes, output shapes, training): all a hook keeps of one call.
_Meta = tuple[torch.Size, torch.dtype]  # what a hook reads of a tensor: shape and dtype
_Call = tuple[int, tuple[_Meta, ...], tuple[_Meta, ...], bool]


@dataclass(frozen=True)
class _Site:
    """A hooked module. Its settings and parameter count are read when results are first
    read, not when the block is entered, to keep entering cheap (the profiler holds the
    model anyway); a lazy module (``nn.LazyConv2d``) has its parameters by then."""

    name: str
    module: nn.Module
    formula: Formula

    @property
    def module_type(self) -> str:
        return type(self.module).__name__


@dataclass(frozen=True)
class _Description:
    config: Any
    params: int
    param_bytes: int


def _describe(site: _Site) -> _Description | None:
    """The site's settings, parameter count and bytes; None while its parameters are lazy."""
    parameters = list(site.module.parameters())
    if any(is_lazy(p) for p in parameters):
        return None
    return _Description(
        site.formula.describe(site.module),
        sum(p.numel() for p in parameters),
        sum(p.numel() * p.element_size() for p in parameters),
    )


def _collect_metas(value: Any, metas: list[_Meta]) -> None:
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


def _metas(value: Any) -> tuple[_Meta, ...]:
    metas: list[_Meta] = []
    _collect_metas(value, metas)
    return tuple(metas)


def _bytes(metas: tuple[_Meta, ...]) -> int:
    """Bytes the tensors occupy, from metadata only: numel times the dtype's element size."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in metas)


class _CallLog:
    """The calls a profiler saw, kept compactly.

    Each distinct call (module, shapes, mode) is stored once and numbered; then either the
    number of every call is appended to an array of machine integers (8 bytes a call, and
    nothing for the garbage collector to walk, which a list of tuples would make it do over
    and over), or, in summary mode, one count per distinct call is kept. Forward passes may
    run in several threads: numbering and counting take a lock, appending is atomic.
    """

    def __init__(self, summary: bool) -> None:
        self._codes: dict[_Call, int] = {}
        self._order = array("q")
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self.keep: Callable[[_Call], None] = self._count if summary else self._append
        self._summary = summary

    def _code(self, call: _Call) -> int:
        code = self._codes.get(call)
        if code is None:
            with self._lock:
                code = self._codes.setdefault(call, len(self._codes))
        return code

    def _append(self, call: _Call) -> None:
        self._order.append(self._code(call))

    def _count(self, call: _Call) -> None:
        code = self._code(call)
        with self._lock:
            self._counts[code] = self._counts.get(code, 0) + 1

    def snapshot(self) -> tuple[list[_Call], list[tuple[int, int]]]:
        """The distinct calls by number, and ``(number, calls)`` pairs in execution order:
        one pair per call, or in summary mode one per distinct call."""
        with self._lock:
            distinct = list(self._codes)
            if self._summary:
                return distinct, list(self._counts.items())
            order = self._order[:]
        return distinct, [(code, 1) for code in order]


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


def _timer_start(push: Callable[[Any], None]) -> Callable[..., None]:
    """A forward pre-hook that pushes the call's start: a CUDA event recorded on the current
    stream for a call on CUDA (nothing waits), else the monotonic clock in nanoseconds."""

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if _on_cuda(module, args, kwargs):
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            push(event)
        else:
            push(time.perf_counter_ns())

    return pre_hook


def _timed(
    keep: Callable[[_Call], None],
    pop_start: Callable[[], Any],
    keep_time: Callable[[Any], None],
    lock: threading.Lock,
) -> Callable[[_Call], None]:
    """``keep`` that also keeps the call's time: nanoseconds, or the (start, end) CUDA events
    to resolve later. The call and its time are kept together under ``lock``, so that calls of
    other modules in other threads cannot come between them."""

    def keep_timed(call: _Call) -> None:
        start = pop_start()
        if isinstance(start, int):
            elapsed: Any = time.perf_counter_ns() - start
        else:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            elapsed = (start, end)
        with lock:
            keep_time(elapsed)
            keep(call)

    return keep_timed


def _resolve_times(times: list[int | tuple[Any, Any]]) -> list[int]:
    """Durations in nanoseconds; CUDA events are resolved after one synchronisation."""
    if any(not isinstance(t, int) for t in times):
        torch.cuda.synchronize()
    return [t if isinstance(t, int) else round(t[0].elapsed_time(t[1]) * 1e6) for t in times]


def _is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` is a ``torch.compile`` wrapper (without importing dynamo, which is
    slow to import and must already be loaded for any module to be compiled)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(module, eval_frame.OptimizedModule)


def _described(name: str) -> str:
    return f"module {name!r}" if name else "the model"


def _qualified(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Profiler:
    """Count the exact operations of every counted module call of ``model``.

    When the ``with`` block is entered, every module that has a formula (see
    :mod:`opscope.formulas`) is hooked, as a whole: its submodules are not hooked, so nothing
    counts twice. Hooks are removed when the block exits, also when it raises. Each call
    inside the block becomes one record, in execution order.

    Entering the same profiler again after it exited starts a new measurement: the records
    of the previous block are discarded.

    Args:
        model: the module to profile.
        include: count only modules that are instances of these types
            (``include=[nn.Conv2d]`` is the Conv2d-only view).
        exclude: never count modules that are instances of these types (their submodules
            may still be counted).
        formulas: formulas for this profiler only, by module type: a
            :class:`~opscope.formulas.Formula`, or a bare ``count(config, call)`` function.
            They take precedence over the registered ones.
        coverage: also run the block under ``torch.utils.flop_counter.FlopCounterMode`` and
            report which share of its FLOPs happened inside counted modules (operations in
            functional calls or ``x + y`` are invisible to hooks). It slows the block down.
        summary: keep one record per distinct (module, shapes, mode) with a ``calls`` count
            instead of one record per call, so memory stays flat however many batches run
            inside the block (``record.ops`` is then the total of those calls).
        timing: also time every call (``record.time_ns``), from a forward pre-hook to the
            forward hook: a monotonic nanosecond clock on the CPU; on CUDA, CUDA events
            recorded in the hooks and resolved when results are first read (one
            synchronisation, never one per layer), so the time is kernel time, not launch
            time. Needs real execution (not the meta device) and one thread per module.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(weights=None).eval()
        >>> with Profiler(model, include=[torch.nn.Conv2d]) as p:
        ...     _ = model(torch.randn(1, 3, 224, 224))
        >>> p.total_ops
        3624638976
        >>> p.print(sort="ops", top=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        include: Iterable[type[nn.Module]] | None = None,
        exclude: Iterable[type[nn.Module]] = (),
        formulas: Mapping[type[nn.Module], Formula | CountFn] | None = None,
        coverage: bool = False,
        summary: bool = False,
        timing: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"Profiler expects a torch.nn.Module to profile, got {type(model).__name__}"
            )
        self._model = model
        self._include = None if include is None else _type_tuple(include, "include")
        self._exclude = _type_tuple(exclude, "exclude")
        self._formulas = as_formulas(formulas or {})
        self._coverage = coverage
        self._sites: list[_Site] = []
        self._uncounted: list[tuple[str, str]] = []
        self._descriptions: dict[int, _Description] = {}
        self._formula_by_type: dict[type[nn.Module], Formula | None] = {}
        self._walked: set[int] = set()  # ids of the modules walked on entry
        self._handles: list[RemovableHandle] = []
        if timing and summary:
            raise ValueError("timing keeps every call's time: use it without summary=True")
        self._summary = summary
        self._timing = timing
        self._log = _CallLog(summary)
        self._times: list[int | tuple[Any, Any]] = []  # timing: per call, ns or CUDA events
        self._times_lock = threading.Lock()
        self._flop_counter: FlopCounterMode | None = None
        self._covered_flops = 0  # coverage: FLOPs that ran inside counted modules
        self._coverage_result: Coverage | None = None
        self._active = False
        self._report: Report | None = None
        self._report_calls = 0  # how many calls the cached report holds

    # -- the context manager -------------------------------------------------------------

    def __enter__(self) -> Profiler:
        if self._active:
            raise RuntimeError("this Profiler is already active: exit its 'with' block first")
        self._sites, self._uncounted, self._descriptions = [], [], {}
        self._walked, self._formula_by_type = set(), {}  # formulas may have been registered
        self._log, self._report, self._coverage_result = _CallLog(self._summary), None, None
        self._times = []
        if self._timing and any(
            t.is_meta for t in (*self._model.parameters(), *self._model.buffers())
        ):
            raise ValueError(
                "timing needs real execution: the model is on the meta device, which computes "
                "shapes only; move it to the CPU or a GPU, or profile without timing"
            )
        try:
            self._hook_tree("", self._model, self._walked)
            if self._coverage:
                self._covered_flops = 0
                self._flop_counter = FlopCounterMode(display=False)
                self._flop_counter.__enter__()
        except BaseException:
            self._remove_hooks()
            raise
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._flop_counter is not None:
                self._flop_counter.__exit__(exc_type, exc, traceback)
                self._coverage_result = self._measure_coverage(self._flop_counter)
        finally:
            self._flop_counter = None
            self._remove_hooks()
            self._active = False

    def _formula_of(self, module_type: type[nn.Module]) -> Formula | None:
        """The formula a module of this type is counted with here, or None (cached: a model
        has many modules of few types)."""
        if module_type not in self._formula_by_type:
            included = self._include is None or issubclass(module_type, self._include)
            excluded = issubclass(module_type, self._exclude)
            formula = formula_for(module_type, self._formulas)
            self._formula_by_type[module_type] = formula if included and not excluded else None
        return self._formula_by_type[module_type]

    def _hook_tree(self, name: str, module: nn.Module, seen: set[int]) -> None:
        if id(module) in seen:  # a shared module is hooked once, under its first name
            return
        seen.add(id(module))
        if isinstance(module, torch.jit.ScriptModule):
            raise TypeError(
                f"{_described(name)} is a TorchScript module ({type(module).__name__}): "
                "TorchScript runs no Python forward hooks, so nothing could be counted; "
                "profile the eager module, before torch.jit.script"
            )
        if _is_compiled(module):
            warnings.warn(
                f"{_described(name)} is torch.compile'd: its compiled graph runs without "
                "Python forward hooks, so its calls will not be recorded; profile the eager "
                "module instead (model._orig_mod, or the model before torch.compile)",
                stacklevel=4,
            )
        formula = self._formula_of(type(module))
        if formula is not None:
            self._hook(name, module, formula)
            return  # counted as a whole: its submodules are not hooked
        children = module._modules  # named_children(), without its generator and set
        if (
            not children
            and not isinstance(module, _CONTAINERS)
            and (formula_for(type(module), self._formulas) is None)
        ):
            self._uncounted.append((name, type(module).__name__))
        for child_name, child in children.items():
            if child is not None:
                self._hook_tree(_qualified(name, child_name), child, seen)

    def _hook(self, name: str, module: nn.Module, formula: Formula) -> None:
        index = len(self._sites)
        self._sites.append(_Site(name, module, formula))
        if self._timing:
            starts: list[Any] = []  # a stack: a module may call itself (recursion)
            pre_hook = _timer_start(starts.append)
            self._handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            keep = _timed(self._log.keep, starts.pop, self._times.append, self._times_lock)
        else:
            keep = self._log.keep
        hook = self._make_hook(index, keep)
        self._handles.append(module.register_forward_hook(hook, with_kwargs=True))
        if self._coverage:
            self._coverage_hooks(module)

    @staticmethod
    def _make_hook(index: int, keep: Callable[[_Call], None]) -> Callable[..., None]:
        # The hot path: runs once per counted call, so only the common single-tensor case is
        # handled inline; everything else (several inputs, keywords, tuples) is looked into.
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            first = args[0] if len(args) == 1 and not kwargs else None
            if isinstance(first, torch.Tensor) and not first.is_nested:
                inputs: tuple[_Meta, ...] = ((first.shape, first.dtype),)
            else:
                inputs = _metas(args) + _metas(kwargs)
            if isinstance(output, torch.Tensor) and not output.is_nested:
                outputs: tuple[_Meta, ...] = ((output.shape, output.dtype),)
            else:
                outputs = _metas(output)
            keep((index, inputs, outputs, module.training))

        return hook

    def _measure_coverage(self, counter: FlopCounterMode) -> Coverage:
        return Coverage(counted_flops=self._covered_flops, total_flops=counter.get_total_flops())

    def _coverage_hooks(self, module: nn.Module) -> None:
        """Hooks that add the FlopCounterMode FLOPs a counted module's call adds (the counter's
        total before and after), whatever name FlopCounterMode gives the module."""
        starts: list[int] = []

        def start(module: nn.Module, args: tuple[Any, ...]) -> None:
            starts.append(self._flop_counter.get_total_flops() if self._flop_counter else 0)

        def stop(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._flop_counter is not None and starts:
                self._covered_flops += self._flop_counter.get_total_flops() - starts.pop()

        self._handles.append(module.register_forward_pre_hook(start))
        self._handles.append(module.register_forward_hook(stop))

    def _description(self, index: int) -> _Description:
        description = self._descriptions.get(index)
        if description is None:
            description = _describe(self._sites[index])
            if description is None:  # still lazy: settings known, parameters not yet
                site = self._sites[index]
                return _Description(site.formula.describe(site.module), 0, 0)
            self._descriptions[index] = description
        return description

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- results ---------------------------------------------------------------------------

    @property
    def report(self) -> Report:
        """The records so far, as a :class:`~opscope.report.Report` (built lazily, cached)."""
        distinct, calls = self._log.snapshot()
        recorded = sum(count for _, count in calls)
        if (
            self._report is None
            or self._report_calls != recorded
            or (self._report.coverage is not self._coverage_result)
        ):
            self._report_calls = recorded
            self._report = Report(
                records=tuple(self._records(distinct, calls)),
                hooked_modules=len(self._sites),
                counted_types=None
                if self._include is None
                else tuple(t.__name__ for t in self._include),
                uncounted_modules=tuple(self._uncounted),
                coverage=self._coverage_result,
            )
        unhooked = self._unhooked_modules()  # the model may change without a new call
        if unhooked != self._report.unhooked_modules:
            self._report = dataclasses.replace(self._report, unhooked_modules=unhooked)
        return self._report

    def _unhooked_modules(self) -> tuple[tuple[str, str], ...]:
        """Leaf modules in the model now that were not there when the block was entered, so
        were not hooked: whatever they ran is not in the totals."""
        hooked = {id(site.module) for site in self._sites}
        found: list[tuple[str, str]] = []

        def walk(name: str, module: nn.Module) -> None:
            if id(module) in hooked:
                return
            children = module._modules
            if (
                id(module) not in self._walked
                and not children
                and not isinstance(module, _CONTAINERS)
            ):
                found.append((name, type(module).__name__))
            for child_name, child in children.items():
                if child is not None:
                    walk(_qualified(name, child_name), child)

        if self._sites or self._walked:
            walk("", self._model)
        return tuple(found)

    @staticmethod
    def _apply_formula(site: _Site, config: Any, logged: _Call) -> tuple[Call, int]:
        _, inputs, outputs, training = logged
        call = Call(
            tuple(tuple(shape) for shape, _ in inputs),
            tuple(tuple(shape) for shape, _ in outputs),
            training,
        )
        try:
            return call, site.formula.count(config, call)
        except Exception as error:
            raise RuntimeError(
                f"cannot count {site.name or '(model)'} ({site.module_type}) on inputs "
                f"{call.inputs} and outputs {call.outputs}: {error}"
            ) from error

    def _records(self, distinct: list[_Call], calls: list[tuple[int, int]]) -> list[LayerRecord]:
        counted: dict[int, tuple[Call, int]] = {}  # each distinct call is counted once
        calls_per_site = [0] * len(self._sites)
        times: list[int | None] = _resolve_times(self._times[: len(calls)]) if self._timing else []
        times += [None] * (len(calls) - len(times))
        records = []
        for (code, count), time_ns in zip(calls, times):
            index = distinct[code][0]
            site, description = self._sites[index], self._description(index)
            calls_per_site[index] += 1
            if code not in counted:
                counted[code] = self._apply_formula(site, description.config, distinct[code])
            call, ops = counted[code]
            records.append(
                LayerRecord(
                    name=site.name,
                    module_type=site.module_type,
                    family=site.formula.module_type.__name__,
                    call_index=calls_per_site[index],
                    input_shapes=call.inputs,
                    output_shapes=call.outputs,
                    training=call.training,
                    config=description.config,
                    params=description.params,
                    ops=ops * count,
                    calls=count,
                    time_ns=time_ns,
                    input_bytes=_bytes(distinct[code][1]) * count,
                    output_bytes=_bytes(distinct[code][2]) * count,
                    param_bytes=description.param_bytes * count,
                )
            )
        return records

    @property
    def records(self) -> tuple[LayerRecord, ...]:
        """One record per counted call, in execution order."""
        return self.report.records

    @property
    def total_ops(self) -> int:
        """Exact operations of every recorded call."""
        return self.report.total_ops

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready results (see :meth:`Report.to_dict`)."""
        return self.report.to_dict()

    def print(
        self,
        *,
        sort: SortOrder = "order",
        top: int | None = None,
        show_bytes: bool = False,
        console: Console | None = None,
    ) -> None:
        """Print the per-layer table, the per-type summary and the totals with rich
        (see :meth:`Report.print`)."""
        self.report.print(sort=sort, top=top, show_bytes=show_bytes, console=console)

    def reduce(
        self, *, group: ProcessGroup | None = None, dst: int = 0
    ) -> distributed.DistributedReport | None:
        """Gather every rank's report on rank ``dst`` of a torch.distributed job: the
        per-rank and total view there, None elsewhere. A collective: call it on every rank
        (see :func:`opscope.distributed.reduce`)."""
        return distributed.reduce(self.report, group=group, dst=dst)


def _type_tuple(types: Iterable[type[nn.Module]], argument: str) -> tuple[type[nn.Module], ...]:
    result = tuple(types)
    for module_type in result:
        if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
            raise TypeError(f"{argument} expects torch.nn.Module subclasses, got {module_type!r}")
    return result
