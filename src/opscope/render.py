"""Rendering a report with rich: readable numbers, shapes and the per-layer table.

This module reads reports only; it knows nothing of hooks or formulas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
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
    return f"{name} #{record.call_index}" if repeated else name


def empty_message(report: Report) -> Text:
    """What an empty report prints instead of a table."""
    kinds = ", ".join(report.counted_types)
    if report.hooked_modules == 0:
        return Text(f"No counted modules: the model has no {kinds} module.", style="yellow")
    return Text(
        f"No calls recorded: {report.hooked_modules} {kinds} module(s) were hooked, "
        "but none ran inside the profiled block.",
        style="yellow",
    )


WIDE_LAYOUT_MIN_WIDTH = 120
"""Below this many columns the kernel, stride, groups and bias share one column."""


class LayerTable:
    """The per-layer table of a report, laid out for the width it is printed at.

    One row per call, an optional row summing the rows cut by ``top``, and a totals row.
    At ``WIDE_LAYOUT_MIN_WIDTH`` columns or more, kernel, stride, groups and bias each get a
    column; below it they share one (``3×3 s2 g32 +b``) so that 80 columns stay readable.
    An empty report renders as a one-line message instead.
    """

    def __init__(self, report: Report, *, sort: SortOrder = "order", top: int | None = None):
        if top is not None and top < 1:
            raise ValueError(f"top must be a positive number of rows; got {top}")
        self.report = report
        self.records = report.sorted(sort)
        self.top = top

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> RenderResult:
        if not self.records:
            yield empty_message(self.report)
        else:
            yield self.table(wide=options.max_width >= WIDE_LAYOUT_MIN_WIDTH)

    def table(self, *, wide: bool) -> Table:
        """The rich Table itself, in the wide or the compact layout."""
        records, total = self.records, self.report.total_ops
        repeated = {record.name for record in records if record.call_index > 1}
        settings_headers = ["Kernel", "Stride", "Groups", "Bias"] if wide else ["Kernel"]

        types = sorted({record.module_type for record in records})
        # A column repeating one type name costs a narrow console 8 columns: say it once.
        show_types = wide or len(types) > 1
        table = Table(
            title=None if show_types else f"{types[0]} calls",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        table.add_column("Layer", overflow="fold", min_width=10)
        if show_types:
            table.add_column("Type", overflow="fold")
        table.add_column("Input", overflow="fold")
        table.add_column("Output", overflow="fold")
        for header in settings_headers:
            table.add_column(header, justify="center", overflow="fold")
        table.add_column("Params", justify="right", no_wrap=True)
        table.add_column("Ops", justify="right", no_wrap=True, style="bold")
        table.add_column("Share", justify="right", no_wrap=True)
        # Type (when shown), Input, Output and the settings are blank in summary rows.
        blank_cells = [""] * (len(table.columns) - 4)

        shown = records if self.top is None else records[: self.top]
        for record in shown:
            table.add_row(
                _layer_label(record, record.name in repeated),
                *([record.module_type] if show_types else []),
                format_shape(record.input_shape),
                format_shape(record.output_shape),
                *(_settings(record) if wide else [_compact_settings(record)]),
                format_count(record.params) if record.call_index == 1 else "shared",
                format_count(record.ops),
                format_share(record.ops, total),
            )
        hidden = records[len(shown) :]
        if hidden:
            hidden_ops = sum(record.ops for record in hidden)
            table.add_row(
                Text(f"… {len(hidden)} more", style="italic"),
                *blank_cells, "",
                format_count(hidden_ops),
                format_share(hidden_ops, total),
            )  # fmt: skip
        table.add_section()
        table.add_row(
            f"Total ({len(records)} calls)",
            *blank_cells,
            format_count(self.report.total_params),
            format_count(total),
            format_share(total, total),
            style="bold",
        )  # fmt: skip
        return table
