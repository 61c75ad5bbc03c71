"""The Profiler: its options, entering and leaving a block, and the walk of the model.

Data flows one way: the hooks of :mod:`opscope.capture` log the shapes of every counted call
inside the block; :mod:`opscope.counting` turns the log into records when results are first
read; the :class:`~opscope.report.Report` holds them, and the views render it.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_module_registration_hook
from torch.nn.parameter import is_lazy
from torch.utils.hooks import RemovableHandle

import opscope.formulas  # noqa: F401  (registers every built-in family)
from opscope import distributed
from opscope.capture import CallLog, CallTimer, CoverageProbe, ModuleTracker, OpCapture
from opscope.choices import SortOrder
from opscope.counting import Counted, Counter, Site
from opscope.formulas.registry import CountFn, Formula, as_formulas, formula_for
from opscope.records import LayerRecord
from opscope.report import Coverage, ModuleInfo, Report

if TYPE_CHECKING:
    from rich.console import Console
    from torch.distributed import ProcessGroup

# Modules that only hold others: an empty one does nothing, so is never "uncounted".
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

Named = tuple[str, str]
"""A module's qualified name and its type's name."""


def _described(name: str) -> str:
    return f"module {name!r}" if name else "the model"


def _qualified(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_leaf(module: nn.Module) -> bool:
    """A module that holds no other and is not an (empty) container."""
    return not module._modules and not isinstance(module, _CONTAINERS)


@dataclass
class _Block:
    """What one ``with`` block collects; a new block starts from a new one.

    Attributes:
        sites: the hooked modules, numbered as the hooks log them.
        uncounted: leaf modules whose type has no formula.
        walked: ids of every module walked on entry.
        log: the calls the hooks saw.
        timer: per-call durations, when timing.
        probe: the coverage probe, when measuring coverage.
        tracker: which module runs: the counted modules' calls, and the other modules, to
            which operators run outside counted ones are attributed.
        functional: whether operators outside counted modules are counted.
        changed: whether a module was added to any model since the last look for unhooked
            modules (so the model is walked again only after a change).
        unhooked: leaf modules found in the model that were not there on entry.
        replicated: the ``nn.DataParallel`` modules on several devices, left unfollowed:
            ``(name, devices)``.
    """

    log: CallLog
    timer: CallTimer | None
    probe: CoverageProbe | None
    functional: bool
    sites: list[Site] = field(default_factory=list)
    uncounted: list[Named] = field(default_factory=list)
    walked: set[int] = field(default_factory=set)
    tree: list[tuple[str, nn.Module, Formula | None]] = field(default_factory=list)
    changed: bool = False
    unhooked: tuple[Named, ...] = ()
    replicated: list[tuple[str, int]] = field(default_factory=list)
    params: int | None = None  # the model's, once known
    optimizer_hooks: list[RemovableHandle] = field(default_factory=list)
    tracker: ModuleTracker = field(init=False)
    counter: Counter = field(init=False)
    mode: OpCapture | None = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = ModuleTracker(self.log, self.timer, self.probe)
        # The counter describes each site once, when results are first read.
        # Without the operators' mode, no use of a counted module's parameters is seen.
        used_by = self.tracker.used_by if self.functional else None
        self.counter = Counter(self.sites, self.tracker.names, used_by, self.tracker.tied)
        self.mode = OpCapture(self.log, self.tracker, self.probe) if self.functional else None
        if self.mode is not None:
            self.tracker.mode = weakref.ref(self.mode)


class Profiler:
    """Count the exact operations of every counted module call of ``model``.

    When the ``with`` block is entered, every module that has a formula (see
    :mod:`opscope.formulas`) is hooked, as a whole: its submodules are not hooked, so nothing
    counts twice. Every ATen operator that runs inside the block outside those modules
    (``x + y``, ``q @ k.transpose(-2, -1)``, ``F.linear`` on a child's weight) is counted by
    its own formula and attributed to the innermost module that ran it. Hooks are removed
    when the block exits, also when it raises. Each call inside the block becomes one record,
    in execution order.

    Entering the same profiler again after it exited starts a new measurement: the records
    of the previous block are discarded.

    Args:
        model: the module to profile.
        include: count only modules that are instances of these types
            (``include=[nn.Conv2d]`` is the Conv2d-only view: functional work is then not
            counted, unless ``functional=True``).
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
        functional: count the operators run outside counted modules (default: yes, unless
            ``include`` is given); ``False`` counts counted modules only, with hooks.
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
        functional: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"Profiler expects a torch.nn.Module to profile, got {type(model).__name__}"
            )
        if timing and summary:
            raise ValueError("timing keeps every call's time: use it without summary=True")
        self._model = model
        self._include = None if include is None else _type_tuple(include, "include")
        self._exclude = _type_tuple(exclude, "exclude")
        self._formulas = as_formulas(formulas or {})
        self._coverage = coverage
        self._summary = summary
        self._timing = timing
        self._functional = include is None if functional is None else functional
        self._block = self._new_block()
        self._active = False
        self._coverage_result: Coverage | None = None
        self._report: Report | None = None
        self._report_calls = 0  # how many calls the cached report holds
        self._watch: RemovableHandle | None = None
        self._mode_entered = False
        self._profiled = False  # a block was entered: there are results to read

    def _new_block(self) -> _Block:
        return _Block(
            log=CallLog(self._summary),
            timer=CallTimer() if self._timing else None,
            probe=CoverageProbe() if self._coverage else None,
            functional=self._functional,
        )

    # -- the context manager -------------------------------------------------------------

    def __enter__(self) -> Profiler:
        if self._active:
            raise RuntimeError("this Profiler is already active: exit its 'with' block first")
        if self._timing and any(
            t.is_meta for t in (*self._model.parameters(), *self._model.buffers())
        ):
            raise ValueError(
                "timing needs real execution: the model is on the meta device, which computes "
                "shapes only; move it to the CPU or a GPU, or profile without timing"
            )
        block = self._block = self._new_block()
        self._report, self._coverage_result = None, None
        # Formulas may have been registered since the last block: resolve types afresh.
        formula_of: dict[type[nn.Module], Formula | None] = {}
        try:
            self._hook_tree("", self._model, block, formula_of)
            self._watch = register_module_module_registration_hook(self._on_registration)
            if block.mode is not None:
                block.optimizer_hooks += block.tracker.optimizer_hooks()
            if block.probe is not None:
                block.probe.start()
            if block.mode is not None:  # above the probe: it sees each operator first
                block.mode.__enter__()
                self._mode_entered = True
        except BaseException:
            self._leave()
            raise
        self._active = self._profiled = True
        for name, devices in block.replicated:
            warnings.warn(
                f"{_described(name)} is an nn.DataParallel on {devices} devices, whose "
                "copies of its module, made at each call, cannot be followed: profile its "
                "module on one device",
                stacklevel=2,
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._leave()

    def _leave(self) -> None:
        """Stop the probe, look for modules added during the block, remove every hook."""
        block = self._block
        try:
            if block.mode is not None and self._mode_entered:
                self._mode_entered = False
                block.mode.__exit__(None, None, None)
            if block.probe is not None and self._active:
                block.probe.stop()
                self._coverage_result = Coverage(block.probe.counted_flops, block.probe.total_flops)
            self._refresh_unhooked()
        finally:
            if self._watch is not None:
                self._watch.remove()
                self._watch = None
            block.tracker.detach()
            for handle in block.optimizer_hooks:
                handle.remove()
            block.optimizer_hooks.clear()
            self._active = False

    def _on_registration(self, parent: nn.Module, name: str, child: nn.Module | None) -> None:
        # A module was added somewhere: the next read looks for unhooked modules again.
        self._block.changed = True

    def _formula_of(
        self, module_type: type[nn.Module], cache: dict[type[nn.Module], Formula | None]
    ) -> Formula | None:
        """The formula a module of this type is counted with here, or None (cached per block:
        a model has many modules of few types)."""
        if module_type not in cache:
            included = self._include is None or issubclass(module_type, self._include)
            excluded = issubclass(module_type, self._exclude)
            formula = formula_for(module_type, self._formulas)
            cache[module_type] = formula if included and not excluded else None
        return cache[module_type]

    def _hook_tree(
        self,
        name: str,
        module: nn.Module,
        block: _Block,
        formula_of: dict[type[nn.Module], Formula | None],
    ) -> None:
        if id(module) in block.walked:  # a shared module is hooked once, under its first name
            return
        block.walked.add(id(module))
        if isinstance(module, torch.jit.ScriptModule):
            raise TypeError(
                f"{_described(name)} is a TorchScript module ({type(module).__name__}): "
                "TorchScript runs no Python forward hooks, so nothing could be counted; "
                "profile the eager module, before torch.jit.script"
            )
        formula = self._formula_of(type(module), formula_of)
        block.tree.append((name, module, formula))
        if formula is not None:
            block.tracker.add_site(len(block.sites), module)
            block.sites.append(Site(name, module, formula))
        else:
            block.tracker.add_scope(name, module)
            if (
                not block.functional
                and _is_leaf(module)
                and not formula_for(type(module), self._formulas)
            ):
                block.uncounted.append((name, type(module).__name__))
        if isinstance(module, nn.DataParallel) and len(module.device_ids) > 1:
            # Each call runs copies of its module, made then (a copy of a followed module
            # would run the original's forward): left as it is.
            block.replicated.append((name, len(module.device_ids)))
            return
        for child_name, child in module._modules.items():
            # A counted module's formula holds the children it accounts for (all of them,
            # unless it names some); any other child is counted on its own.
            if child is not None and (formula is None or not formula.accounts_for(child_name)):
                self._hook_tree(_qualified(name, child_name), child, block, formula_of)

    def _refresh_unhooked(self) -> None:
        """Walk the model for leaf modules that were not there on entry, if a module was
        added since the last walk: whatever they ran is not in the totals."""
        block = self._block
        if not block.changed:
            return
        block.changed = False
        hooked = {id(site.module) for site in block.sites}
        found: list[Named] = []

        def walk(name: str, module: nn.Module) -> None:
            if id(module) in hooked:
                return
            if id(module) not in block.walked and _is_leaf(module):
                found.append((name, type(module).__name__))
            for child_name, child in module._modules.items():
                if child is not None:
                    walk(_qualified(name, child_name), child)

        walk("", self._model)
        block.unhooked = tuple(found)

    # -- results ---------------------------------------------------------------------------

    @property
    def report(self) -> Report:
        """The records so far, as a :class:`~opscope.report.Report` (built lazily, cached);
        empty before the profiler was entered."""
        block = self._block
        if self._active:
            self._refresh_unhooked()
        recorded = len(block.log)
        if (
            self._report is None
            or self._report_calls != recorded
            or self._report.coverage is not self._coverage_result
        ):
            self._report_calls = recorded
            counted = self._counted()
            self._report = Report(
                records=tuple(counted.records),
                hooked_modules=len(block.sites),
                counted_types=None
                if self._include is None
                else tuple(t.__name__ for t in self._include),
                uncounted_modules=tuple(block.uncounted),
                coverage=self._coverage_result,
                uncounted_ops=counted.uncounted_ops,
                idle_modules=counted.idle,
                modules=self._modules(),
                params=self._model_params(),
            )
        if block.unhooked != self._report.unhooked_modules:
            self._report = dataclasses.replace(self._report, unhooked_modules=block.unhooked)
        return self._report

    def _modules(self) -> tuple[ModuleInfo, ...]:
        """Every module walked, in the model's order, with the parameters it holds: its own,
        and a counted module's those of the children its formula accounts for; each
        parameter at its first module only."""
        seen: set[int] = set()
        infos = []
        for name, module, formula in self._block.tree:
            held = [p for p in module._parameters.values() if p is not None]
            if formula is not None:
                held += [
                    p
                    for child_name, child in module._modules.items()
                    if child is not None and formula.accounts_for(child_name)
                    for p in child.parameters()
                ]
            count = 0
            for parameter in held:
                if id(parameter) not in seen and not is_lazy(parameter):
                    seen.add(id(parameter))
                    count += parameter.numel()
            infos.append(ModuleInfo(name, type(module).__name__, count))
        return tuple(infos)

    def _model_params(self) -> int:
        """The model's parameters, each once (counted again while some are still lazy)."""
        block = self._block
        if block.params is None:
            parameters = list(self._model.parameters())
            if any(is_lazy(p) for p in parameters):
                return sum(p.numel() for p in parameters if not is_lazy(p))
            block.params = sum(p.numel() for p in parameters)
        return block.params

    def _counted(self) -> Counted:
        block = self._block
        distinct, calls = block.log.snapshot()
        timer = block.timer
        if timer is None:
            return block.counter.records(distinct, calls, [])
        return block.counter.records(
            distinct, calls, timer.durations(len(calls)), timer.backward_durations()
        )

    @property
    def records(self) -> tuple[LayerRecord, ...]:
        """One record per counted call, in execution order."""
        return self.report.records

    @property
    def total_ops(self) -> int:
        """Exact operations of every recorded call (without building the records)."""
        return self._totals()[0]

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of every recorded call (see :attr:`Report.total_macs`)."""
        return self._totals()[1]

    def _totals(self) -> tuple[int, int]:
        block = self._block
        if self._report is not None and self._report_calls == len(block.log):
            return self._report.total_ops, self._report.total_macs
        distinct, calls = block.log.snapshot()
        return block.counter.totals(distinct, calls)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready results (see :meth:`Report.to_dict`)."""
        return self.report.to_dict()

    def _repr_html_(self) -> str | None:
        """The report, as a notebook shows it (:meth:`Report._repr_html_`); None (the
        notebook shows the plain repr) before the profiler was entered."""
        return self.report._repr_html_() if self._profiled else None

    def to_json(self) -> str:
        """The results as JSON text (see :meth:`Report.to_json`)."""
        return self.report.to_json()

    def print(
        self,
        *,
        sort: SortOrder = "order",
        top: int | None = None,
        show_bytes: bool = False,
        console: Console | None = None,
        depth: int | None = None,
    ) -> None:
        """Print the per-layer table (or, with a ``depth``, the per-module tree), the per-type
        summary and the totals with rich (see :meth:`Report.print`); before the profiler was
        entered, that there is nothing to show yet."""
        if not self._profiled:
            from rich.console import Console

            if console is None:
                console = Console()
                console = console if console.width > 0 else Console(width=80)  # COLUMNS=0
            console.print(
                "Nothing profiled yet: run the model in the profiler's block, "
                "'with Profiler(model) as p: model(x)', then print p.",
                highlight=False,
            )
            return
        self.report.print(sort=sort, top=top, show_bytes=show_bytes, console=console, depth=depth)

    def reduce(
        self, *, group: ProcessGroup | None = None, dst: int = 0
    ) -> distributed.DistributedReport | None:
        """Gather every rank's report on rank ``dst`` of a torch.distributed job: the
        per-rank and total view there, None elsewhere. A collective: call it on every rank
        (see :func:`opscope.distributed.reduce`)."""
        return distributed.reduce(self.report, group=group, dst=dst)


def _type_tuple(types: Iterable[type[nn.Module]], argument: str) -> tuple[type[nn.Module], ...]:
    if isinstance(types, (type, str)):  # one type, or a name: not the list asked for
        raise TypeError(
            f"{argument} expects a list of torch.nn.Module subclasses, such as "
            f"[torch.nn.Linear]; got {types!r}"
        )
    result = tuple(types)
    for module_type in result:
        if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
            raise TypeError(f"{argument} expects torch.nn.Module subclasses, got {module_type!r}")
    return result
