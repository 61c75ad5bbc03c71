"""The report: the records of one profiled block, their totals and their exports.

A report is data only: it knows none of its views. :meth:`Report.print` imports the terminal
view when it is called, as rich's own ``Console.status`` imports its spinner.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from numbers import Integral
from typing import TYPE_CHECKING, Any

from opscope import exports
from opscope.choices import SORT_ORDERS, SortOrder
from opscope.records import OPTIMIZER_NAME, OUTSIDE_NAME, PHASES, FunctionalOps, LayerRecord

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class Coverage:
    """How much of the block's work the counted modules account for.

    Attributes:
        counted_flops: ``FlopCounterMode`` FLOPs (matmul, convolution, attention) that ran
            inside counted modules.
        total_flops: ``FlopCounterMode`` FLOPs of the whole block.
    """

    counted_flops: int
    total_flops: int

    @property
    def share(self) -> float | None:
        """``counted_flops / total_flops``, or None when the block had no such FLOPs."""
        return self.counted_flops / self.total_flops if self.total_flops else None


@dataclass(frozen=True)
class TypeSummary:
    """Calls and operations of one module type."""

    module_type: str
    calls: int
    ops: int


@dataclass(frozen=True)
class ModuleInfo:
    """A module of the profiled model, for the per-module tree.

    Attributes:
        path: its qualified name (``""`` for the model itself).
        module_type: its class name.
        params: the parameters it holds itself (a counted module: its children's too), each
            parameter of the model counted at one module only.
    """

    path: str
    module_type: str
    params: int


@dataclass(frozen=True)
class ModuleTotal:
    """One node of the per-module tree: a module and everything that ran inside it.

    Attributes:
        path: the module's qualified name (``""`` for the model); one of
            :data:`BLOCK_PATHS` for the block's work outside the model.
        module_type: its class name.
        depth: 0 for the model, 1 for its children, ...
        calls: the counted calls inside it (module calls, and calls of modules with
            functional work).
        ops: exact operations of everything inside it.
        macs: multiply-accumulates of everything inside it.
        params: the parameters inside it, each once.
    """

    path: str
    module_type: str
    depth: int
    calls: int
    ops: int
    macs: int
    params: int


BLOCK_PATHS = (OUTSIDE_NAME, OPTIMIZER_NAME)
"""The names of the block's own work, outside the model: nodes of their own in the tree."""


def _ancestors(path: str) -> list[str]:
    """``"a.b.c"`` and the paths above it: ``["", "a", "a.b", "a.b.c"]``."""
    parts = path.split(".") if path else []
    return ["", *(".".join(parts[: index + 1]) for index in range(len(parts)))]


@dataclass(frozen=True)
class Report:
    """The records of one profiled block.

    Attributes:
        records: one record per counted call, in execution order.
        hooked_modules: how many modules of the model were hooked (had a formula), which
            tells "the model has no counted module" from "none of them ran".
        counted_types: the types the profiler was limited to (``include``), or None for
            every type that has a formula.
        uncounted_modules: ``(name, type)`` of the model's leaf modules whose type has no
            formula, so whose work, if any, is not in the totals.
        coverage: measured with ``coverage=True``, else None.
        unhooked_modules: ``(name, type)`` of leaf modules added to the model after the
            profiler was entered: they were not hooked, so their work is not in the totals.
        uncounted_ops: ``(name, calls)`` of the ATen operators that ran outside counted
            modules and have no formula, so whose work is not in the totals.
        params: the model's parameters, each once (None for a report made without a model:
            :attr:`total_params` then sums the modules that ran).
        idle_modules: ``(name, type, used by)`` of the counted modules that were never called:
            ``used by`` names the module whose operators used their parameters (ran
            functionally, and counted there) or a counted module that ran with them (tied
            weights), ``""`` when nothing did (dead code), None when it is not known
            (``functional=False`` follows no operator).
    """

    records: tuple[LayerRecord, ...]
    hooked_modules: int
    counted_types: tuple[str, ...] | None = None
    uncounted_modules: tuple[tuple[str, str], ...] = ()
    coverage: Coverage | None = None
    unhooked_modules: tuple[tuple[str, str], ...] = ()
    uncounted_ops: tuple[tuple[str, int], ...] = ()
    params: int | None = None
    idle_modules: tuple[tuple[str, str, str | None], ...] = ()
    modules: tuple[ModuleInfo, ...] = ()

    @property
    def total_ops(self) -> int:
        """Exact operations of every recorded call."""
        return sum(record.ops for record in self.records)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of every recorded call's convolution, matrix and attention
        products, bias excluded: what torchvision and most papers publish as "FLOPs"."""
        return sum(record.macs for record in self.records)

    @property
    def total_calls(self) -> int:
        """Counted calls (in summary mode, more than there are records)."""
        return sum(record.calls for record in self.records)

    @property
    def total_params(self) -> int:
        """The model's parameters, each once; for a report made without a model, those of
        the modules that ran, each module counted once however often it ran."""
        if self.params is not None:
            return self.params
        return sum(record.params for record in self.records if record.call_index == 1)

    def by_module(self, depth: int | None = None) -> list[ModuleTotal]:
        """The per-module tree, in the model's order (each module before its children): every
        module that has counted work inside it, with the calls, operations, MACs and
        parameters of everything inside it, down to ``depth`` (None: every level). The model's
        node (``""``, depth 0) and, when there is some, the block's work outside the model and
        an optimizer's step (``(outside the model)``, ``(optimizer step)``, depth 0 beside it)
        add up to :attr:`total_ops` exactly; a module called several times holds all its
        calls, a shared one is counted once per call.

        Raises:
            ValueError: a ``depth`` that is not a whole number, 0 or more.

        Example:
            >>> report = Report(records=(), hooked_modules=0)
            >>> report.by_module()
            []
        """
        if depth is not None and (
            not isinstance(depth, Integral) or isinstance(depth, bool) or depth < 0
        ):
            raise ValueError(f"depth must be a whole number, 0 or more; got {depth!r}")
        known = {info.path: info for info in self.modules}
        order = {info.path: position for position, info in enumerate(self.modules)}
        totals: dict[str, list[int]] = {}  # path: [calls, ops, macs]
        for record in self.records:
            paths = [record.name] if record.name in BLOCK_PATHS else _ancestors(record.name)
            for path in paths:
                total = totals.setdefault(path, [0, 0, 0])
                total[0] += record.calls
                total[1] += record.ops
                total[2] += record.macs
        params: dict[str, int] = {}
        for info in self.modules:
            for path in _ancestors(info.path):
                params[path] = params.get(path, 0) + info.params
        shown = [
            path
            for path in totals
            if path in BLOCK_PATHS or depth is None or len(_ancestors(path)) - 1 <= depth
        ]
        shown.sort(key=lambda path: (path in BLOCK_PATHS, order.get(path, len(order)), path))
        types = {record.name: record.module_type for record in self.records}
        return [
            ModuleTotal(
                path=path,
                module_type=known[path].module_type if path in known else types.get(path, "-"),
                depth=0 if path in BLOCK_PATHS else len(_ancestors(path)) - 1,
                calls=totals[path][0],
                ops=totals[path][1],
                macs=totals[path][2],
                params=params.get(path, 0),
            )
            for path in shown
        ]

    def to_pandas(self) -> Any:
        """One row per record as a pandas DataFrame, with typed columns (the ``pandas`` extra;
        see :func:`opscope.frames.records_frame`)."""
        from opscope.frames import records_frame

        return records_frame(self)

    def tree_to_pandas(self, depth: int | None = None) -> Any:
        """The per-module tree as a pandas DataFrame indexed by module path (see
        :func:`opscope.frames.modules_frame`)."""
        from opscope.frames import modules_frame

        return modules_frame(self, depth)

    def _repr_html_(self) -> str:
        """The report's tables and notes, as a notebook shows it."""
        from opscope.html import report_fragment

        return report_fragment(self)

    def by_phase(self) -> dict[str, tuple[int, int]]:
        """Operations and MACs of each phase that ran, in order: ``forward``, ``backward``
        (gradients), ``recompute`` (checkpointed forwards run again in the backward pass),
        ``step`` (an optimizer's step); they add up to :attr:`total_ops`."""
        totals: dict[str, list[int]] = {}
        for record in self.records:
            total = totals.setdefault(record.phase, [0, 0])
            total[0] += record.ops
            total[1] += record.macs
        return {phase: (totals[phase][0], totals[phase][1]) for phase in PHASES if phase in totals}

    def by_type(self) -> list[TypeSummary]:
        """Calls and operations per module type, and per operator family of the functional
        work (``"matmul (functional)"``, counting operator calls), heaviest first."""
        calls: dict[str, int] = {}
        ops: dict[str, int] = {}

        def add(name: str, count: int, work: int) -> None:
            calls[name] = calls.get(name, 0) + count
            ops[name] = ops.get(name, 0) + work

        for record in self.records:
            phase = "functional" if record.phase == "forward" else record.phase
            if isinstance(record.config, FunctionalOps):
                for family, count, work in record.config.families:
                    add(f"{family} ({phase})", count, work)
            elif record.phase == "forward":
                add(record.module_type, record.calls, record.ops)
            else:
                add(f"{record.module_type} ({phase})", record.calls, record.ops)
        summaries = [TypeSummary(name, calls[name], ops[name]) for name in calls]
        return sorted(summaries, key=lambda summary: -summary.ops)

    def ops_of(self, family: str) -> int:
        """Operations of the calls counted by one family's formula (``"Conv2d"``)."""
        return sum(record.ops for record in self.records if record.family == family)

    def sorted(self, by: SortOrder = "order") -> tuple[LayerRecord, ...]:
        """The records in execution order, or by descending ops (ties keep execution order)."""
        if by not in SORT_ORDERS:
            raise ValueError(f"sort must be one of {', '.join(SORT_ORDERS)}; got {by!r}")
        if by == "ops":
            return tuple(sorted(self.records, key=lambda record: -record.ops))
        return self.records

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"total_ops": int, "total_macs": int, "total_params": int, "layers":
        [{...}, ...]}``, plus ``"by_type"``, ``"by_phase"`` (``{"forward": {"ops": int, "macs":
        int}, ...}``), ``"uncounted_modules"``, ``"uncounted_ops"`` and, when measured,
        ``"coverage"``.

        Every count is the exact integer; shapes and tuples are lists.
        """
        data: dict[str, Any] = {
            "total_ops": self.total_ops,
            "total_macs": self.total_macs,
            "total_params": self.total_params,
            "model_params": self.params,
            "layers": [record.to_dict() for record in self.records],
            "by_type": [asdict(summary) for summary in self.by_type()],
            "by_phase": {
                phase: {"ops": ops, "macs": macs} for phase, (ops, macs) in self.by_phase().items()
            },
            "hooked_modules": self.hooked_modules,
            "counted_types": None if self.counted_types is None else list(self.counted_types),
            "uncounted_modules": _named(self.uncounted_modules),
            "unhooked_modules": _named(self.unhooked_modules),
            "uncounted_ops": [{"op": op, "calls": calls} for op, calls in self.uncounted_ops],
            "modules": [asdict(info) for info in self.modules],
            "idle_modules": [
                {"name": name, "type": module_type, "used_by": used_by}
                for name, module_type, used_by in self.idle_modules
            ],
        }
        if self.coverage is not None:
            data["coverage"] = {**asdict(self.coverage), "share": self.coverage.share}
        return data

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text (what ``opscope profile --format json`` writes)."""
        return exports.to_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """The report that :meth:`to_dict` produced; derived fields (totals, by_type, the
        coverage share) are recomputed, not read."""
        coverage = data.get("coverage")
        return cls(
            records=tuple(LayerRecord.from_dict(row) for row in data["layers"]),
            hooked_modules=data["hooked_modules"],
            counted_types=None if data["counted_types"] is None else tuple(data["counted_types"]),
            uncounted_modules=_unnamed(data["uncounted_modules"]),
            coverage=None
            if coverage is None
            else Coverage(
                counted_flops=coverage["counted_flops"], total_flops=coverage["total_flops"]
            ),
            unhooked_modules=_unnamed(data["unhooked_modules"]),
            uncounted_ops=tuple((row["op"], row["calls"]) for row in data.get("uncounted_ops", ())),
            params=data.get("model_params"),
            modules=tuple(ModuleInfo(**row) for row in data.get("modules", ())),
            idle_modules=tuple(
                (row["name"], row["type"], row["used_by"]) for row in data.get("idle_modules", ())
            ),
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        """The report that :meth:`to_json` wrote, with equal records.

        Example:
            >>> report = Report(records=(), hooked_modules=3)
            >>> Report.from_json(report.to_json()) == report
            True
        """
        return cls.from_dict(json.loads(text))

    @property
    def total_bytes(self) -> int:
        """Bytes moved by every recorded call (inputs, outputs and parameters)."""
        return sum(record.bytes for record in self.records)

    def print(
        self,
        *,
        sort: SortOrder = "order",
        top: int | None = None,
        show_bytes: bool = False,
        console: Console | None = None,
        depth: int | None = None,
    ) -> None:
        """Print the per-layer table with its totals row, then the per-type summary, the
        coverage (when measured) and the uncounted modules, with rich.

        Args:
            sort: ``"order"`` (execution order) or ``"ops"`` (heaviest first).
            top: show only the first ``top`` rows after sorting; the rest are summed in one row.
            show_bytes: add the bytes each call moved and its operations per byte.
            console: where to print (default: a new rich Console on standard output).
            depth: print the per-module tree down to this depth (:meth:`by_module`) instead
                of one row per call.
        """
        from opscope.terminal import print_report

        print_report(self, sort=sort, top=top, show_bytes=show_bytes, console=console, depth=depth)


def median_timing(reports: Sequence[Report]) -> Report:
    """Repeated timed runs of the same forward as one report: the first run's records with
    each call's median time and its spread (max - min) over the runs.

    Raises:
        ValueError: no reports, or runs that did not make the same calls.
    """
    if not reports:
        raise ValueError("median_timing needs at least one report")
    first = reports[0]
    if any(len(report.records) != len(first.records) for report in reports):
        raise ValueError("the runs made different numbers of calls: cannot pair their times")
    records = []
    for position, record in enumerate(first.records):
        times = sorted(report.records[position].time_ns or 0 for report in reports)
        records.append(
            replace(
                record, time_ns=round(statistics.median(times)), time_spread_ns=times[-1] - times[0]
            )
        )
    return replace(first, records=tuple(records))


def _named(modules: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"name": name, "type": module_type} for name, module_type in modules]


def _unnamed(modules: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((module["name"], module["type"]) for module in modules)
