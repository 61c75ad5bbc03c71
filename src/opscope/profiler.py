"""The Profiler: forward hooks that record the shapes of every counted module call.

Data flows one way: the hooks append ``(site, input shapes, output shapes, training)`` tuples,
the :class:`~opscope.report.Report` turns them into :class:`~opscope.records.LayerRecord`
objects (applying each family's formula) when results are first read, and rendering reads the
report. The hook itself only reads ``.shape`` attributes and appends a tuple: it never reads
tensor data, never makes a device wait and never keeps a reference to a tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from opscope.formulas.registry import Call, CountFn, Formula, as_formulas, formula_for
from opscope.records import LayerRecord
from opscope.report import Coverage, Report, SortOrder

# Modules that only hold others: an empty one does nothing, so is never "uncounted".
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

# (site index, input shapes, output shapes, training): all a hook keeps of one call.
_Call = tuple[int, tuple[torch.Size, ...], tuple[torch.Size, ...], bool]


@dataclass(frozen=True)
class _Site:
    """A hooked module, described once when the profiler is entered."""

    name: str
    module_type: str
    formula: Formula
    config: Any
    params: int | None  # None until a lazy module has materialised its parameters


def _describe(name: str, module: nn.Module, formula: Formula) -> _Site:
    parameters = list(module.parameters())
    params = None if any(is_lazy(p) for p in parameters) else sum(p.numel() for p in parameters)
    return _Site(name, type(module).__name__, formula, formula.describe(module), params)


def _collect_shapes(value: Any, shapes: list[torch.Size]) -> None:
    """Append the shape of every tensor in ``value`` (looking into tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        shapes.append(value.shape)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect_shapes(item, shapes)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_shapes(item, shapes)


def _shapes(value: Any) -> tuple[torch.Size, ...]:
    if isinstance(value, torch.Tensor):  # the common case, kept cheap
        return (value.shape,)
    shapes: list[torch.Size] = []
    _collect_shapes(value, shapes)
    return tuple(shapes)


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
        self._lazy_modules: dict[int, nn.Module] = {}
        self._handles: list[RemovableHandle] = []
        self._calls: list[_Call] = []
        self._flop_counter: FlopCounterMode | None = None
        self._coverage_result: Coverage | None = None
        self._active = False
        self._report: Report | None = None

    # -- the context manager -------------------------------------------------------------

    def __enter__(self) -> Profiler:
        if self._active:
            raise RuntimeError("this Profiler is already active: exit its 'with' block first")
        self._sites, self._uncounted, self._lazy_modules = [], [], {}
        self._calls, self._report, self._coverage_result = [], None, None
        try:
            self._hook_tree("", self._model, set())
            if self._coverage:
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
            self._describe_lazy_modules()
        finally:
            self._flop_counter = None
            self._remove_hooks()
            self._active = False

    def _formula_of(self, module: nn.Module) -> Formula | None:
        if self._include is not None and not isinstance(module, self._include):
            return None
        if isinstance(module, self._exclude):
            return None
        return formula_for(type(module), self._formulas)

    def _hook_tree(self, name: str, module: nn.Module, seen: set[int]) -> None:
        if id(module) in seen:  # a shared module is hooked once, under its first name
            return
        seen.add(id(module))
        formula = self._formula_of(module)
        if formula is not None:
            self._hook(name, module, formula)
            return  # counted as a whole: its submodules are not hooked
        children = list(module.named_children())
        if not children and not isinstance(module, _CONTAINERS) and (
            formula_for(type(module), self._formulas) is None
        ):
            self._uncounted.append((name, type(module).__name__))
        for child_name, child in children:
            self._hook_tree(_qualified(name, child_name), child, seen)

    def _hook(self, name: str, module: nn.Module, formula: Formula) -> None:
        site = _describe(name, module, formula)
        index = len(self._sites)
        self._sites.append(site)
        if site.params is None:
            self._lazy_modules[index] = module
        hook = self._make_hook(index, self._calls.append)
        self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    @staticmethod
    def _make_hook(index: int, append: Callable[[_Call], None]) -> Callable[..., None]:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            inputs = _shapes(args) + _shapes(kwargs) if kwargs else _shapes(args)
            append((index, inputs, _shapes(output), module.training))

        return hook

    def _measure_coverage(self, counter: FlopCounterMode) -> Coverage:
        counts = counter.get_flop_counts()
        root = type(self._model).__name__  # FlopCounterMode names modules "Root.child.leaf"
        counted = sum(
            sum(counts.get(_qualified(root, site.name), {}).values()) for site in self._sites
        )
        return Coverage(counted_flops=counted, total_flops=sum(counts.get("Global", {}).values()))

    def _describe_lazy_modules(self) -> None:
        # A lazy module (nn.LazyConv2d) learns its parameters in its first forward.
        for index, module in list(self._lazy_modules.items()):
            site = _describe(self._sites[index].name, module, self._sites[index].formula)
            if site.params is not None:
                self._sites[index] = site
                del self._lazy_modules[index]

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._lazy_modules.clear()  # hold no module past the block

    # -- results ---------------------------------------------------------------------------

    @property
    def report(self) -> Report:
        """The records so far, as a :class:`~opscope.report.Report` (built lazily, cached)."""
        calls = self._calls[:]  # a consistent snapshot while other threads may still append
        if self._report is None or len(self._report.records) != len(calls) or (
            self._report.coverage is not self._coverage_result
        ):
            self._describe_lazy_modules()
            self._report = Report(
                records=tuple(self._records(calls)),
                hooked_modules=len(self._sites),
                counted_types=None if self._include is None else tuple(t.__name__ for t in self._include),
                uncounted_modules=tuple(self._uncounted),
                coverage=self._coverage_result,
            )
        return self._report

    def _records(self, calls: list[_Call]) -> list[LayerRecord]:
        calls_per_site = [0] * len(self._sites)
        records = []
        for index, input_shapes, output_shapes, training in calls:
            site = self._sites[index]
            calls_per_site[index] += 1
            call = Call(tuple(map(tuple, input_shapes)), tuple(map(tuple, output_shapes)), training)
            try:
                ops = site.formula.count(site.config, call)
            except Exception as error:
                raise RuntimeError(
                    f"cannot count {site.name or '(model)'} ({site.module_type}) on inputs "
                    f"{call.inputs} and outputs {call.outputs}: {error}"
                ) from error
            records.append(
                LayerRecord(
                    name=site.name,
                    module_type=site.module_type,
                    family=site.formula.module_type.__name__,
                    call_index=calls_per_site[index],
                    input_shapes=call.inputs,
                    output_shapes=call.outputs,
                    training=training,
                    config=site.config,
                    params=site.params or 0,
                    ops=ops,
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
        self, *, sort: SortOrder = "order", top: int | None = None, console: Console | None = None
    ) -> None:
        """Print the per-layer table, the per-type summary and the totals with rich
        (see :meth:`Report.print`)."""
        self.report.print(sort=sort, top=top, console=console)


def _type_tuple(types: Iterable[type[nn.Module]], argument: str) -> tuple[type[nn.Module], ...]:
    result = tuple(types)
    for module_type in result:
        if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
            raise TypeError(f"{argument} expects torch.nn.Module subclasses, got {module_type!r}")
    return result
