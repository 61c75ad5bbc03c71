"""The Profiler: forward hooks that record the shapes of every counted module call.

Data flows one way: the hooks append ``(site, input_shape, output_shape)`` tuples, the
:class:`~opscope.report.Report` turns them into :class:`~opscope.records.LayerRecord` objects
(applying each family's formula) when results are first read, and rendering reads the report.
The hook itself only reads two ``.shape`` attributes and appends a tuple: it never reads tensor
data, never makes a device wait and never keeps a reference to a tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.hooks import RemovableHandle

from opscope.formulas.registry import Formula, Shape, formula_for, registered_types
from opscope.records import LayerRecord
from opscope.report import Report, SortOrder

# (site index, input shape, output shape): all a hook keeps of one call.
_Call = tuple[int, "torch.Size | None", "torch.Size | None"]


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


def _shape_of(value: Any) -> torch.Size | None:
    """Shape of the first tensor in ``value`` (a tensor, or a tuple/list/dict holding one)."""
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (tuple, list)):
        items: Sequence[Any] = value
    elif isinstance(value, dict):
        items = list(value.values())
    else:
        return None
    for item in items:
        shape = _shape_of(item)
        if shape is not None:
            return shape
    return None


class Profiler:
    """Count the exact operations of every counted module call of ``model``.

    Hooks are registered on every module that has a formula (``torch.nn.Conv2d`` and its
    subclasses) when the ``with`` block is entered, and removed when it exits, also when the
    block raises. Each call inside the block becomes one record, in execution order.

    Entering the same profiler again after it exited starts a new measurement: the records
    of the previous block are discarded.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(weights=None).eval()
        >>> with Profiler(model) as p:
        ...     _ = model(torch.randn(1, 3, 224, 224))
        >>> p.total_ops
        3624638976
        >>> p.print(sort="ops", top=10)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"Profiler expects a torch.nn.Module to profile, got {type(model).__name__}"
            )
        self._model = model
        self._sites: list[_Site] = []
        self._lazy_modules: dict[int, nn.Module] = {}
        self._handles: list[RemovableHandle] = []
        self._calls: list[_Call] = []
        self._active = False
        self._report: Report | None = None

    # -- the context manager -------------------------------------------------------------

    def __enter__(self) -> Profiler:
        if self._active:
            raise RuntimeError("this Profiler is already active: exit its 'with' block first")
        self._sites, self._lazy_modules, self._calls, self._report = [], {}, [], None
        try:
            for name, module in self._model.named_modules():
                formula = formula_for(type(module))
                if formula is not None:
                    self._hook(name, module, formula)
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
            self._describe_lazy_modules()
        finally:
            self._remove_hooks()
            self._active = False

    def _hook(self, name: str, module: nn.Module, formula: Formula) -> None:
        site = _describe(name, module, formula)
        index = len(self._sites)
        self._sites.append(site)
        if site.params is None:
            self._lazy_modules[index] = module
        self._handles.append(
            module.register_forward_hook(self._make_hook(index, self._calls.append), with_kwargs=True)
        )

    @staticmethod
    def _make_hook(index: int, append: Callable[[_Call], None]) -> Callable[..., None]:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            input_shape = _shape_of(args)
            if input_shape is None:  # called as module(input=x)
                input_shape = _shape_of(kwargs)
            append((index, input_shape, _shape_of(output)))

        return hook

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
        if self._report is None or len(self._report.records) != len(calls):
            self._describe_lazy_modules()
            self._report = Report(
                records=tuple(self._records(calls)),
                hooked_modules=len(self._sites),
                counted_types=tuple(t.__name__ for t in registered_types()),
            )
        return self._report

    def _records(self, calls: list[_Call]) -> list[LayerRecord]:
        calls_per_site = [0] * len(self._sites)
        records = []
        for index, input_shape, output_shape in calls:
            site = self._sites[index]
            if input_shape is None or output_shape is None:
                raise RuntimeError(
                    f"{site.name or site.module_type} was called without a tensor input or output"
                )
            calls_per_site[index] += 1
            records.append(
                LayerRecord(
                    name=site.name,
                    module_type=site.module_type,
                    call_index=calls_per_site[index],
                    input_shape=tuple(input_shape),
                    output_shape=tuple(output_shape),
                    config=site.config,
                    params=site.params or 0,
                    ops=site.formula.count(site.config, tuple(input_shape), tuple(output_shape)),
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
        """JSON-ready results: ``{"total_ops": int, "total_params": int, "layers": [...]}``."""
        return self.report.to_dict()

    def print(
        self, *, sort: SortOrder = "order", top: int | None = None, console: Console | None = None
    ) -> None:
        """Print the per-layer table and totals with rich (see :meth:`Report.print`)."""
        self.report.print(sort=sort, top=top, console=console)
