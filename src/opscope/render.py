"""Rendering a report with rich: readable numbers, shapes and the per-layer table.

This module reads reports only; it knows nothing of hooks or formulas.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from opscope.compare import ModelSummary
    from opscope.records import LayerRecord
    from opscope.report import Report, SortOrder

_PREFIXES = ("", "K", "M", "G", "T", "P", "E")


def format_count(value: int) -> str:
    """A count with three significant digits and an SI prefix.

    Example:
        >>> format_count(3_628_147_712), format_count(11_689_512), format_count(999)
        ('3.63 G', '11.7 M', '999')
    """
    scaled, prefix = float(value), 0
    while abs(scaled) >= 999.5 and prefix < len(_PREFIXES) - 1:
        scaled, prefix = scaled / 1000, prefix + 1
    if prefix == 0:
        return str(value)
    digits = 2 if abs(scaled) < 9.995 else 1 if abs(scaled) < 99.95 else 0
    return f"{scaled:.{digits}f} {_PREFIXES[prefix]}"


def format_time(nanoseconds: int) -> str:
    """A duration with three significant digits: ``1.23 ms``, ``45.6 µs``."""
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if nanoseconds >= scale:
            value = nanoseconds / scale
            return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f} {unit}"
    return f"{nanoseconds} ns"


_EIGHTHS = " ▏▎▍▌▋▊▉"


def share_bar(fraction: float, width: int = 10) -> str:
    """``fraction`` (0 to 1) as a bar of ``width`` characters, to an eighth of a character.

    Example:
        >>> share_bar(0.5, width=4), share_bar(0.0625, width=4)
        ('██', '▎')
    """
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    return "█" * (eighths // 8) + _EIGHTHS[eighths % 8].strip()


def format_shape(shape: tuple[int, ...]) -> str:
    """``(1, 64, 56, 56)`` as ``1×64×56×56``."""
    return "×".join(map(str, shape))


def format_share(part: int, total: int) -> str:
    """``part`` as a percentage of ``total`` with one decimal."""
    return f"{100 * part / total:.1f}%" if total else "-"


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


def _layer_label(record: LayerRecord, repeated: bool) -> str:
    name = record.name or "(model)"
    label = f"{name} #{record.call_index}" if repeated else name
    return f"{label} ×{record.calls}" if record.calls > 1 else label


def empty_message(report: Report) -> Text:
    """What an empty report prints instead of a table."""
    kinds = " or ".join(report.counted_types) if report.counted_types else "counted"
    if report.hooked_modules == 0:
        what = f"{kinds} module" if report.counted_types else "module with a formula"
        return Text(f"No counted modules: the model has no {what}.", style="yellow")
    return Text(
        f"No calls recorded: {report.hooked_modules} {kinds} module(s) were hooked, "
        "but none ran inside the profiled block.",
        style="yellow",
    )


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
    return Grid(headers=("Type", "Calls", "Ops", "Share"), rows=rows, title="By type")


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
            lines.append(
                f"Coverage: counted modules hold {coverage.share:.2%} of the block's "
                f"{format_count(coverage.total_flops)} matmul/convolution FLOPs "
                "(FlopCounterMode); the rest ran outside them (functional calls, x + y, ...)."
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
    if report.unhooked_modules:
        named = ", ".join(
            f"{name} ({module_type})" for name, module_type in report.unhooked_modules
        )
        lines.append(f"Not hooked, added after the profiler was entered: {named}.")
    return lines


@dataclass(frozen=True)
class Grid:
    """A table as plain text cells, which rich and markdown both render.

    Attributes:
        headers: the column names.
        rows: the body.
        footer: summary rows under a rule (rows cut by ``top``, then the totals).
        title: a line above the table, if any.
    """

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    footer: tuple[tuple[str, ...], ...] = ()
    title: str | None = None


_RIGHT_ALIGNED = {
    "Bytes", "Ops/B", "Time", "Spread", "Ops/s",
    "Groups", "Params", "Ops", "Share", "Calls", "Conv2d calls", "Conv2d ops", "Total ops", "acc@1",
    "GFLOPS (pub.)", "Coverage",
}  # fmt: skip
_CENTERED = {"Kernel", "Stride", "Bias"}
_NO_WRAP = {
    "Params",
    "Ops",
    "Share",
    "acc@1",
    "Conv2d ops",
    "Total ops",
    "Coverage",
    "Bytes",
    "Ops/B",
    "Time",
    "Ops/s",
}


def rich_table(grid: Grid) -> Table:
    """``grid`` as a rich Table: numbers right-aligned, the last footer row in bold."""
    table = Table(
        title=grid.title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    # The first column (names) folds only past 24 characters: short names stay whole.
    first_width = min(max([10, *(len(row[0]) for row in grid.rows)]), 24)
    for index, header in enumerate(grid.headers):
        table.add_column(
            header,
            justify="right"
            if header in _RIGHT_ALIGNED
            else "center"
            if header in _CENTERED
            else "left",
            no_wrap=header in _NO_WRAP or header == BAR_HEADER,
            overflow="fold",
            min_width=first_width if index == 0 else 10 if header == BAR_HEADER else None,
            style="bold" if header == "Ops" else None,
        )
    for row in grid.rows:
        table.add_row(*row)
    if grid.footer:
        table.add_section()
        for index, row in enumerate(grid.footer):
            table.add_row(*row, style="bold" if index == len(grid.footer) - 1 else "italic")
    return table


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "×": r"$\times$", "…": r"\ldots{}",
}  # fmt: skip


def _latex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(char, char) for char in text)


def latex_table(grid: Grid) -> str:
    """``grid`` as a LaTeX ``table`` with a booktabs ``tabular`` (``\\usepackage{booktabs}``):
    numbers right-aligned, the footer rows under a ``\\midrule``."""
    spec = "".join(
        "r" if h in _RIGHT_ALIGNED else "c" if h in _CENTERED else "l" for h in grid.headers
    )

    def row(cells: tuple[str, ...]) -> str:
        return " & ".join(map(_latex, cells)) + r" \\"

    lines = [r"\begin{table}[ht]", r"\centering"]
    if grid.title:
        lines.append(rf"\caption{{{_latex(grid.title)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", row(grid.headers), r"\midrule"]
    lines += [row(cells) for cells in grid.rows]
    if grid.footer:
        lines += [r"\midrule", *(row(cells) for cells in grid.footer)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def markdown_table(grid: Grid) -> str:
    """``grid`` as a GitHub-flavoured markdown table (footer rows in bold)."""

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    alignment = {"right": "---:", "center": ":---:", "left": "---"}
    rule = tuple(
        alignment["right" if h in _RIGHT_ALIGNED else "center" if h in _CENTERED else "left"]
        for h in grid.headers
    )
    footer = [tuple(f"**{cell}**" if cell else "" for cell in row) for row in grid.footer]
    lines = [f"**{grid.title}**", ""] if grid.title else []
    lines += [line(grid.headers), line(rule)]
    lines += [line(row) for row in (*grid.rows, *footer)]
    return "\n".join(lines) + "\n"


WIDE_LAYOUT_MIN_WIDTH = 120
"""Below this many columns the kernel, stride, groups and bias share one column."""
BAR_HEADER = "Relative"
SHARE_BAR_MIN_WIDTH = 100
"""From this many columns on, the terminal table draws each row's share as a bar."""


def _check_top(top: int | None) -> None:
    if top is not None and top < 1:
        raise ValueError(f"top must be a positive number of rows; got {top}")


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
) -> Grid:
    """The per-layer table of a non-empty report as cells.

    One row per call, a footer row summing the rows cut by ``top``, and a totals row.
    ``show_bytes`` adds the bytes each call moved and its operations per byte (arithmetic
    intensity); timed records add their time, its spread over repeated runs and the achieved
    operations per second. ``wide`` gives every column; the compact layout, for 80 columns,
    puts kernel, stride, groups and bias in one column (``3×3 s2 g32 +b``), turns a type
    column that would repeat one name into the title or, with several types, leaves out the
    input shape (normally the previous layer's output), and makes room for bytes and times by
    leaving out the shapes, settings and parameters. The wide layout and the exports keep all.
    """
    _check_top(top)
    records, total = report.sorted(sort), report.total_ops
    repeated = {record.name for record in records if record.call_index > 1}
    types = sorted({record.module_type for record in records})
    timed = any(record.time_ns is not None for record in records)
    spread = any(record.time_spread_ns is not None for record in records)
    show_types = wide or len(types) > 1
    show_details = wide or not (show_bytes or timed)  # output, settings, params
    show_inputs = wide or (show_details and not show_types)

    def cells(record: LayerRecord) -> list[str]:
        """The columns between the layer's name and its ops."""
        row = [record.module_type] if show_types else []
        row += [format_shape(record.input_shape)] if show_inputs else []
        if show_details:
            row.append(format_shape(record.output_shape))
            row += _settings(record) if wide else [_compact_settings(record)]
            row.append(format_count(record.params) if record.call_index == 1 else "shared")
        return row

    def measured(records: Sequence[LayerRecord]) -> list[str]:
        """Bytes and times of one or several records (blank spread for several)."""
        ops, row = sum(r.ops for r in records), []
        if show_bytes:
            row += _bytes_cells(ops, sum(r.bytes for r in records))
        if timed:
            nanoseconds = sum(r.time_ns or 0 for r in records)
            row.append(format_time(nanoseconds))
            if spread:
                single = records[0].time_spread_ns if len(records) == 1 else None
                row.append("" if single is None else format_time(single))
            row.append(format_count(round(ops / (nanoseconds * 1e-9))) if nanoseconds else "-")
        return row

    headers = ["Layer", *(["Type"] if show_types else []), *(["Input"] if show_inputs else [])]
    if show_details:
        headers += ["Output", *(["Kernel", "Stride", "Groups", "Bias"] if wide else ["Kernel"])]
        headers.append("Params")
    headers += ["Ops", "Share"]
    headers += ["Bytes", "Ops/B"] if show_bytes else []
    headers += ["Time", *(["Spread"] if spread else []), "Ops/s"] if timed else []

    def summary_row(label: str, rows: Sequence[LayerRecord], params: str) -> tuple[str, ...]:
        ops = sum(r.ops for r in rows)
        blanks = [""] * (len(cells(rows[0])) - show_details)
        return (
            label, *blanks, *([params] if show_details else []),
            format_count(ops), format_share(ops, total), *measured(rows),
        )  # fmt: skip

    shown = records if top is None else records[:top]
    rows = tuple(
        (
            _layer_label(record, record.name in repeated),
            *cells(record),
            format_count(record.ops),
            format_share(record.ops, total),
            *measured([record]),
        )
        for record in shown
    )
    hidden = records[len(shown) :]
    footer = [summary_row(f"… {len(hidden)} more", hidden, "")] if hidden else []
    footer.append(
        summary_row(
            f"Total ({report.total_calls} calls)", records, format_count(report.total_params)
        )
    )
    return Grid(
        headers=tuple(headers),
        rows=rows,
        footer=tuple(footer),
        title=None if show_types else f"{types[0]} calls",
    )


class LayerTable:
    """The per-layer table of a report, laid out for the width it is printed at.

    From ``WIDE_LAYOUT_MIN_WIDTH`` columns on, the wide layout of :func:`layer_grid`; below
    it, the compact one, so that 80 columns stay readable. An empty report renders as a
    one-line message instead.
    """

    def __init__(
        self,
        report: Report,
        *,
        sort: SortOrder = "order",
        top: int | None = None,
        show_bytes: bool = False,
    ):
        report.sorted(sort)  # validate the options now, not when printed
        _check_top(top)
        self.report, self.sort, self.top, self.show_bytes = report, sort, top, show_bytes

    def _with_share_bars(self, grid: Grid) -> Grid:
        """``grid`` with a bar of each shown row's ops, scaled to the heaviest call, so heavy
        layers stand out."""
        heaviest = max(record.ops for record in self.report.records)
        shown = self.report.sorted(self.sort)[: self.top]
        bars = [share_bar(record.ops / heaviest if heaviest else 0.0) for record in shown]
        return replace(
            grid,
            headers=(*grid.headers, BAR_HEADER),
            rows=tuple((*row, bar) for row, bar in zip(grid.rows, bars)),
            footer=tuple((*row, "") for row in grid.footer),
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.report.records:
            yield empty_message(self.report)
        else:
            wide = options.max_width >= WIDE_LAYOUT_MIN_WIDTH
            grid = layer_grid(
                self.report, sort=self.sort, top=self.top, wide=wide, show_bytes=self.show_bytes
            )
            if options.max_width >= SHARE_BAR_MIN_WIDTH:
                grid = self._with_share_bars(grid)
            yield rich_table(grid)
            if len({record.module_type for record in self.report.records}) > 1:
                yield rich_table(type_grid(self.report))
        for line in notes(self.report):
            yield Text(line, style="yellow")


def _published_gflops(summary: ModelSummary) -> str:
    if summary.gflops is None:
        return ""
    # torchvision measures at its weights' own size, which may differ from this run's input.
    at_size = summary.published_size not in (None, summary.input_shape[-1])
    return f"{summary.gflops:.2f}" + (f" @{summary.published_size}" if at_size else "")


def _count_cell(value: int | None) -> str:
    return "" if value is None else format_count(value)


def _share_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def comparison_grid(summaries: Sequence[ModelSummary], *, wide: bool = True) -> Grid:
    """One row per model: parameters, Conv2d calls and ops, published acc@1 and GFLOPS, and a
    note saying why a model failed. Not ``wide`` (80 columns), the Conv2d calls are left out."""
    failed = any(summary.error for summary in summaries)
    measured = any(summary.coverage is not None for summary in summaries)
    headers = ("Model", "Params", *(["Conv2d calls"] if wide else []), "Conv2d ops", "Total ops")
    headers += ("Coverage",) if measured else ()
    headers += ("acc@1", "GFLOPS (pub.)")
    rows = tuple(
        (
            summary.name,
            _count_cell(summary.params),
            *(["" if summary.conv_calls is None else str(summary.conv_calls)] if wide else []),
            _count_cell(summary.conv_ops),
            _count_cell(summary.total_ops),
            *([_share_cell(summary.coverage)] if measured else []),
            "" if summary.acc1 is None else f"{summary.acc1:.2f}",
            _published_gflops(summary),
            *([summary.error or ""] if failed else []),
        )
        for summary in summaries
    )
    shapes = {summary.input_shape for summary in summaries}
    title = f"{len(summaries)} models at {format_shape(shapes.pop())}" if len(shapes) == 1 else None
    return Grid(headers=(*headers, *(["Note"] if failed else [])), rows=rows, title=title)


class ComparisonTable:
    """The comparison for a terminal: :func:`comparison_grid`, compact below
    ``WIDE_LAYOUT_MIN_WIDTH`` columns so that 80 columns stay readable."""

    def __init__(self, summaries: Sequence[ModelSummary]):
        self.summaries = summaries

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = options.max_width >= WIDE_LAYOUT_MIN_WIDTH
        yield rich_table(comparison_grid(self.summaries, wide=wide))
