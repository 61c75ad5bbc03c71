"""Tables: what a report, a comparison or a distributed job shows, composed once for every view.

Each table is a :class:`Grid` of plain text cells whose :class:`Column` objects carry their
alignment; a report is a :class:`Document` of sections (the layer table, the per-type summary
when there is more than one type, the notes). The views render these and decide nothing about
what is shown: :mod:`opscope.terminal` (rich), :mod:`opscope.documents` (markdown, LaTeX) and
:mod:`opscope.html`. This module knows nothing of hooks, formulas, rich or HTML.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Literal

from opscope.format import (
    format_count,
    format_published,
    format_shape,
    format_share,
    format_time,
    models_title,
    plural,
)
from opscope.records import OUTSIDE_NAME, FunctionalOps

if TYPE_CHECKING:
    from opscope.choices import SortOrder
    from opscope.compare import ModelSummary
    from opscope.distributed import DistributedReport
    from opscope.records import LayerRecord
    from opscope.report import Report
    from opscope.zoo import PublishedMetrics

Align = Literal["left", "right", "center"]


ALWAYS = 100
"""The ``keep`` of a column that is never left out."""


@dataclass(frozen=True)
class Column:
    """A column's header and how its cells are laid out.

    Attributes:
        header: the column's title.
        align: ``left`` for names and shapes, ``right`` for numbers, ``center`` for short
            settings.
        whole: the cells are numbers or shapes: a view never wraps or cuts them.
        strong: the column to emphasise (the operations).
        keep: how much the column matters where space is short (a narrow terminal): the
            columns of lowest ``keep`` are left out first, never one of :data:`ALWAYS`.
    """

    header: str
    align: Align = "left"
    whole: bool = False
    strong: bool = False
    keep: int = ALWAYS


WIDE_SETTINGS = {"Kernel": 30, "Stride": 25, "Groups": 24, "Bias": 23}
"""The wide layout's settings columns, and their ``keep``; the compact one shares one."""


def _number(header: str, keep: int = ALWAYS, strong: bool = False) -> Column:
    return Column(header, "right", whole=True, strong=strong, keep=keep)


def _shape(header: str, keep: int) -> Column:
    return Column(header, whole=True, keep=keep)


def _centered(header: str, keep: int) -> Column:
    return Column(header, "center", whole=True, keep=keep)


@dataclass(frozen=True)
class Grid:
    """A table as plain text cells.

    Attributes:
        columns: the columns, with their alignment.
        rows: the body.
        footer: summary rows under a rule (rows cut by ``top``, then the totals).
        title: a line above the table, if any.
    """

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    footer: tuple[tuple[str, ...], ...] = ()
    title: str | None = None

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(column.header for column in self.columns)


@dataclass(frozen=True)
class Document:
    """The sections of one report, as every format shows them.

    Attributes:
        grids: the layer table, then the per-type summary when more than one type ran;
            empty for an empty report.
        notes: lines under the tables (coverage, modules not counted or not hooked); for an
            empty report, first the line that says why it is empty.
        heading: what was profiled (model, input, device), when known.
    """

    grids: tuple[Grid, ...]
    notes: tuple[str, ...]
    heading: str | None = None


WIDE_LAYOUT_MIN_WIDTH = 120
"""Below this many columns the kernel, stride, groups and bias share one column."""


def check_top(top: int | None) -> None:
    """Refuse a ``top`` that is not a positive number of rows."""
    if top is not None and (not isinstance(top, Integral) or isinstance(top, bool) or top < 1):
        raise ValueError(f"top must be a positive number of rows; got {top!r}")


def check_depth(depth: int | None, sort: str, top: int | None, show_bytes: bool) -> None:
    """Refuse what the per-module tree cannot show: it lists the model's modules in their own
    order, with their operations and parameters."""
    if depth is not None and (sort != "order" or top is not None or show_bytes):
        raise ValueError(
            "depth shows the model's tree in its own order, with operations and parameters: "
            "not with sort, top or show_bytes"
        )


def layer_label(record: LayerRecord, repeated: bool) -> str:
    """A record's name in tables and pictures: ``layer1.0.conv1``, ``#2`` for a module
    called again, ``×5`` for a summary record of five calls, ``[backward]`` for a training
    step's other phases (whose ``calls`` are operators run, not module calls: not shown)."""
    name = record.name or "(model)"
    label = f"{name} #{record.call_index}" if repeated else name
    if record.phase != "forward":
        return f"{label} [{record.phase}]"
    return f"{label} ×{record.calls}" if record.calls > 1 else label


def layer_labels(records: Sequence[LayerRecord]) -> list[str]:
    """:func:`layer_label` of every record, numbered where a module ran more than once."""
    repeated = {(r.name, r.phase) for r in records if r.call_index > 1}
    return [layer_label(record, (record.name, record.phase) in repeated) for record in records]


def type_label(record: LayerRecord) -> str:
    """A record's type as tables show it: the module's type, and for its functional work the
    operators it ran (``Bottleneck: add``, ``Attention: bmm ×2, softmax``)."""
    config = record.config
    if not isinstance(config, FunctionalOps):
        return record.module_type
    ops = ", ".join(f"{name} ×{calls}" if calls > 1 else name for name, calls in config.ops)
    return f"{record.module_type}: {ops}"


def _settings(record: LayerRecord) -> tuple[str, str, str, str]:
    """Kernel, stride, groups and bias cells; blank for a family without them."""
    config = record.config
    kernel = getattr(config, "kernel_size", None)
    stride = getattr(config, "stride", None)
    groups = getattr(config, "groups", None)
    bias = getattr(config, "bias", None)
    return (
        format_shape(kernel) if kernel is not None else "",
        format_shape(stride) if stride is not None else "",
        str(groups) if groups is not None else "",
        "" if bias is None else "yes" if bias else "no",
    )


def _compact_settings(record: LayerRecord) -> str:
    """The four settings in one cell for narrow consoles: ``3×3 s2 g32 +b``
    (stride and groups only when not 1, ``+b`` when there is a bias)."""
    kernel, stride, groups, bias = _settings(record)
    parts = [kernel]
    strides = set(stride.split("×"))
    if stride and strides != {"1"}:
        parts.append(f"s{strides.pop()}" if len(strides) == 1 else f"s{stride}")
    if groups and groups != "1":
        parts.append(f"g{groups}")
    if bias == "yes":
        parts.append("+b")
    return " ".join(part for part in parts if part)


def _bytes_cells(ops: int, moved: int) -> tuple[str, str]:
    """Bytes moved and operations per byte."""
    return f"{format_count(moved)}B", f"{ops / moved:.1f}" if moved else "-"


def layer_grid(
    report: Report,
    *,
    sort: SortOrder = "order",
    top: int | None = None,
    wide: bool = True,
    show_bytes: bool = False,
    shared_settings: bool = False,
) -> Grid:
    """The per-layer table of a non-empty report.

    One row per call, a footer row summing the rows cut by ``top``, and a totals row.
    ``show_bytes`` adds the bytes each call moved and its operations per byte (arithmetic
    intensity); timed records add their time, its spread over repeated runs and the achieved
    operations per second. ``wide`` gives every column; the compact layout, for 80 columns,
    puts kernel, stride, groups and bias in one column (``3×3 s2 g32 +b``), turns a type
    column that would repeat one name into the title or, with several types, leaves out the
    input shape (normally the previous layer's output), and makes room for bytes and times by
    leaving out the shapes, settings and parameters. The wide layout and the exports keep all;
    ``shared_settings`` gives the wide layout the compact one's settings column.
    """
    check_top(top)
    records, total = report.sorted(sort), report.total_ops
    types = sorted({type_label(record) for record in records})
    timed = any(record.time_ns is not None for record in records)
    spread = any(record.time_spread_ns is not None for record in records)
    show_types = wide or len(types) > 1
    show_details = wide or not (show_bytes or timed)  # output, settings, params
    show_inputs = wide or (show_details and not show_types)
    one_setting_column = shared_settings or not wide

    def cells(record: LayerRecord) -> list[str]:
        """The columns between the layer's name and its ops."""
        row = [type_label(record)] if show_types else []
        row += [format_shape(record.input_shape)] if show_inputs else []
        if show_details:
            row.append(format_shape(record.output_shape))
            row += [_compact_settings(record)] if one_setting_column else _settings(record)
            row.append(format_count(record.params) if record.call_index == 1 else "shared")
        return row

    def measured(records: Sequence[LayerRecord]) -> list[str]:
        """Bytes and times of one or several records (blank spread for several)."""
        ops, row = sum(r.ops for r in records), []
        if show_bytes:
            row += _bytes_cells(ops, sum(r.bytes for r in records))
        if timed:
            nanoseconds = sum(r.time_ns or 0 for r in records)
            untimed = all(r.time_ns is None for r in records)  # operators outside modules
            row.append("-" if untimed else format_time(nanoseconds))
            if spread:
                single = records[0].time_spread_ns if len(records) == 1 else None
                row.append("" if single is None else format_time(single))
            row.append(format_count(round(ops / (nanoseconds * 1e-9))) if nanoseconds else "-")
        return row

    columns = [Column("Layer"), *([Column("Type", keep=60)] if show_types else [])]
    columns += [_shape("Input", keep=20)] if show_inputs else []
    if show_details:
        columns.append(_shape("Output", keep=40))
        if one_setting_column:
            columns.append(_centered("Kernel", WIDE_SETTINGS["Kernel"]))
        else:
            columns += [_centered(header, keep) for header, keep in WIDE_SETTINGS.items()]
        columns.append(_number("Params", 50))
    columns += [_number("Ops", strong=True), *([_number("MACs", 35)] if wide else [])]
    columns.append(_number("Share", 90))
    columns += [_number("Bytes", 70), _number("Ops/B", 65)] if show_bytes else []
    if timed:
        columns += [_number("Time", 85), *([_number("Spread", 45)] if spread else [])]
        columns.append(_number("Ops/s", 75))

    def counts(rows: Sequence[LayerRecord]) -> list[str]:
        """Ops, MACs (wide) and share of one or several records."""
        ops = sum(r.ops for r in rows)
        macs = [format_count(sum(r.macs for r in rows))] if wide else []
        return [format_count(ops), *macs, format_share(ops, total)]

    def summary_row(label: str, rows: Sequence[LayerRecord], params: str) -> tuple[str, ...]:
        blanks = [""] * (len(cells(rows[0])) - show_details)
        return (label, *blanks, *([params] if show_details else []), *counts(rows), *measured(rows))

    shown = records if top is None else records[:top]
    labels = layer_labels(records)
    rows = tuple(
        (label, *cells(record), *counts([record]), *measured([record]))
        for label, record in zip(labels, shown)
    )
    hidden = records[len(shown) :]
    # rows, not calls: a row may stand for several calls (summary mode, a backward record)
    footer = [summary_row(f"… {plural(len(hidden), 'more row')}", hidden, "")] if hidden else []
    footer.append(
        summary_row(
            f"Total ({plural(report.total_calls, 'call')})",
            records,
            format_count(report.total_params),
        )
    )
    return Grid(
        columns=tuple(columns),
        rows=rows,
        footer=tuple(footer),
        title=None if show_types else f"{types[0]} calls",
    )


def tree_grid(report: Report, depth: int | None = None) -> Grid:
    """The per-module tree (:meth:`~opscope.report.Report.by_module`): each module indented
    under its parent, with the calls, parameters, operations, MACs and share of everything
    inside it, and the report's totals."""
    total = report.total_ops
    rows = tuple(
        (
            "  " * node.depth + (node.path or "(model)"),
            node.module_type,
            str(node.calls),
            format_count(node.params),
            format_count(node.ops),
            format_count(node.macs),
            format_share(node.ops, total),
        )
        for node in report.by_module(depth)
    )
    totals = (
        f"Total ({plural(report.total_calls, 'call')})",
        "",
        str(report.total_calls),
        format_count(report.total_params),
        format_count(total),
        format_count(report.total_macs),
        format_share(total, total),
    )
    columns = (
        Column("Module"), Column("Type", keep=60), _number("Calls", 40), _number("Params", 50),
        _number("Ops", strong=True), _number("MACs", 35), _number("Share", 90),
    )  # fmt: skip
    title = "By module" + ("" if depth is None else f", to depth {depth}")
    return Grid(columns, rows, footer=(totals,), title=title)


def type_grid(report: Report) -> Grid:
    """Calls, operations and share per module type, heaviest first."""
    total = report.total_ops
    rows = tuple(
        (
            summary.module_type,
            str(summary.calls),
            format_count(summary.ops),
            format_share(summary.ops, total),
        )
        for summary in report.by_type()
    )
    columns = (Column("Type"), _number("Calls"), _number("Ops", strong=True), _number("Share"))
    return Grid(columns=columns, rows=rows, title="By type")


def empty_message(report: Report) -> str:
    """What an empty report shows instead of tables."""
    kinds = " or ".join(report.counted_types) if report.counted_types else "counted"
    if report.hooked_modules == 0:
        what = f"{kinds} module" if report.counted_types else "module with a formula"
        return f"No counted modules: the model has no {what}."
    return (
        f"No calls recorded: {report.hooked_modules} {kinds} module(s) were hooked, "
        "but none ran inside the profiled block."
    )


_UNFOLLOWED = "their parameters' use not followed (functional=False)"


def notes(report: Report) -> list[str]:
    """Lines under the tables: coverage, when measured, and the modules left uncounted."""
    lines = []
    coverage = report.coverage
    if coverage is not None:
        if coverage.share is None:
            lines.append(
                "Coverage: FlopCounterMode saw no matmul or convolution FLOPs in the block."
            )
        else:
            flops = f"the block's {format_count(coverage.total_flops)} matmul/convolution FLOPs"
            if coverage.counted_flops == coverage.total_flops:
                lines.append(f"Coverage: opscope counted all of {flops} (FlopCounterMode).")
            else:
                lines.append(
                    f"Coverage: opscope counted {coverage.share:.2%} of {flops} "
                    "(FlopCounterMode); the rest ran in work it did not count (operators "
                    "without a formula, or outside counted modules with functional=False)."
                )
    phases = report.by_phase()
    if set(phases) - {"forward"}:
        parts = [f"{phase} {format_count(ops)}" for phase, (ops, _) in phases.items()]
        lines.append(f"Operations by phase: {', '.join(parts)} (report.by_phase()).")
    backward_alone = "backward" in phases and all(
        record.name == OUTSIDE_NAME for record in report.records if record.phase != "step"
    )
    if backward_alone:
        lines.append(
            "The backward pass ran without the model's forward in the block: its work is "
            "counted, but only a forward inside the block tells which module each gradient "
            "belongs to."
        )
    failed = [record for record in report.records if record.uncounted]
    if failed:
        first = failed[0]
        more = f" (and {plural(len(failed) - 1, 'other call')})" if len(failed) > 1 else ""
        lines.append(
            f"Not counted: {first.name or '(model)'} ({first.module_type}) #{first.call_index}"
            f"{more}: {first.uncounted} (each record's 'uncounted' in to_dict())."
        )
    if report.uncounted_ops:
        listed = ", ".join(
            f"{op} ×{calls}" if calls > 1 else op for op, calls in report.uncounted_ops
        )
        lines.append(
            f"Not counted, no formula for these operators: {listed} (to_dict()['uncounted_ops'])."
        )
    if report.uncounted_modules:
        per_type = Counter(module_type for _, module_type in report.uncounted_modules)
        listed = ", ".join(
            f"{count} {module_type}" for module_type, count in per_type.most_common()
        )
        lines.append(
            f"Not counted, no formula for their type: {listed} "
            "(by name in to_dict()['uncounted_modules'])."
        )
    ran_functionally = [(name, used) for name, _, used in report.idle_modules if used]
    if ran_functionally:
        users = sorted({used for _, used in ran_functionally})
        shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
        lines.append(
            f"Never called, their parameters used elsewhere (counted there): "
            f"{plural(len(ran_functionally), 'module')}, in {shown}."
        )
    if not backward_alone:  # then the forward ran before the block, not "never"
        for used, claim in (("", "nor their parameters used"), (None, _UNFOLLOWED)):
            idle = [f"{name} ({kind})" for name, kind, user in report.idle_modules if user == used]
            if idle:
                more = f" and {len(idle) - 3} more" if len(idle) > 3 else ""
                lines.append(f"Never called, {claim}: {', '.join(idle[:3])}{more}.")
    if report.unhooked_modules:
        named = ", ".join(
            f"{name} ({module_type})" for name, module_type in report.unhooked_modules
        )
        lines.append(
            "Added after the profiler was entered (counted operator by operator in the module "
            f"that ran them): {named}."
        )
    return lines


def report_document(
    report: Report,
    *,
    sort: SortOrder = "order",
    top: int | None = None,
    wide: bool = True,
    show_bytes: bool = False,
    heading: str | None = None,
    extra_notes: Sequence[str] = (),
    depth: int | None = None,
    shared_settings: bool = False,
) -> Document:
    """The sections of ``report``, as every format shows them (see :func:`layer_grid` for
    the options); ``heading`` says what was profiled, ``extra_notes`` follow the report's.
    With a ``depth``, the per-module tree down to that depth (:func:`tree_grid`) takes the
    place of the per-call table."""
    report.sorted(sort)  # validate the options, also for an empty report
    check_top(top)
    check_depth(depth, sort, top, show_bytes)
    if not report.records:
        return Document((), (empty_message(report), *notes(report), *extra_notes), heading)
    if depth is not None:
        grids = [tree_grid(report, depth)]
    else:
        grids = [
            layer_grid(
                report,
                sort=sort,
                top=top,
                wide=wide,
                show_bytes=show_bytes,
                shared_settings=shared_settings,
            )
        ]
    if len(report.by_type()) > 1:
        grids.append(type_grid(report))
    return Document(tuple(grids), (*notes(report), *extra_notes), heading)


def _count_cell(value: int | None) -> str:
    return "" if value is None else format_count(value)


def _share_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def comparison_grid(summaries: Sequence[ModelSummary], *, wide: bool = True) -> Grid:
    """One row per model: parameters, Conv2d calls and ops, total ops, the published quality
    figure, the measured GMACs beside the published "GFLOPS" (the same convention: they agree
    when the sizes do), and a note saying why a model failed. The inputs get a column when
    they differ between models; a published figure measured at another size says it (``@600``,
    ``@?`` when torchvision does not say). Not ``wide`` (80 columns), the Conv2d calls are
    left out."""
    failed = any(summary.error for summary in summaries)
    measured = any(summary.coverage is not None for summary in summaries)
    various = len({summary.inputs for summary in summaries} - {""}) > 1  # failed ones: ""
    metrics = {summary.published.metric for summary in summaries} - {None}
    metric = metrics.pop() if len(metrics) == 1 else "Published" if metrics else "acc@1"
    columns = [Column("Model"), *([_shape("Input", 65)] if various else [])]
    columns += [_number("Params", 57), *([_number("Conv2d calls", 20)] if wide else [])]
    columns += [_number("Conv2d ops", 30), _number("Total ops", strong=True)]
    columns += [_number("Coverage", 70)] if measured else []
    # Models without published figures (timm, transformers, a user's) leave those out.
    published = any(s.published.value is not None or s.gflops for s in summaries)
    columns += [_number(metric, 80)] if published else []
    columns += [_number("GMACs", 58), *([_number("GFLOPS (pub.)", 59)] if published else [])]
    columns += [Column("Note", keep=75)] if failed else []
    rows = tuple(
        (
            summary.name,
            *([summary.inputs] if various else []),
            _count_cell(summary.params),
            *(["" if summary.conv_calls is None else str(summary.conv_calls)] if wide else []),
            _count_cell(summary.conv_ops),
            _count_cell(summary.total_ops),
            *([_share_cell(summary.coverage)] if measured else []),
            *([_metric_cell(summary.published, named=metric == "Published")] if published else []),
            "" if summary.macs is None else f"{summary.macs / 1e9:.2f}",
            *([_published_gflops(summary)] if published else []),
            *([summary.error or ""] if failed else []),
        )
        for summary in summaries
    )
    title = models_title(len(summaries), (summary.input_shape for summary in summaries))
    return Grid(columns=tuple(columns), rows=rows, title=None if various else title)


def _published_gflops(summary: ModelSummary) -> str:
    """torchvision's published "GFLOPS", with the size it was measured at when not this one."""
    return format_published(summary.gflops, summary.published_size, summary.input_shape) + (
        " @?" if summary.gflops and summary.published_size is None else ""
    )


def _metric_cell(published: PublishedMetrics, *, named: bool) -> str:
    """A published quality figure, with its name when the column mixes several."""
    if published.value is None:
        return ""
    return f"{published.metric} {published.value:.2f}" if named else f"{published.value:.2f}"


def ranks_grid(job: DistributedReport) -> Grid:
    """One row per rank of a distributed job (calls, ops, share of the total, flag) and the
    totals. A differing rank's flag is its reason; the reference rank's is ``reference``
    when some rank differs."""
    total, differences = job.total_ops, job.differences
    reference = job.reference_rank if differences else None
    rows = tuple(
        (
            str(rank),
            str(report.total_calls),
            format_count(report.total_ops),
            format_share(report.total_ops, total),
            differences.get(rank, "reference" if rank == reference else ""),
        )
        for rank, report in enumerate(job.reports)
    )
    totals = ("Total", str(job.total_calls), format_count(total), format_share(total, total), "")
    columns = (
        _number("Rank"), _number("Calls"), _number("Ops", strong=True), _number("Share", 90),
        Column("Flag"),
    )  # fmt: skip
    return Grid(columns, rows, footer=(totals,), title=plural(job.world_size, "rank"))
