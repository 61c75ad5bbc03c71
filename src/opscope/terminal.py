"""The terminal view: tables drawn with rich, laid out for the width they are printed at.

What is shown is composed in :mod:`opscope.tables`; this module only draws it: numbers
right-aligned and never wrapped, the totals row in bold, notes in yellow, and from
:data:`SHARE_BAR_MIN_WIDTH` columns on a bar of each layer's ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from opscope.format import share_bar
from opscope.tables import (
    ALWAYS,
    WIDE_LAYOUT_MIN_WIDTH,
    WIDE_SETTINGS,
    Column,
    Document,
    Grid,
    check_depth,
    check_top,
    comparison_grid,
    ranks_grid,
    report_document,
)

if TYPE_CHECKING:
    from opscope.choices import SortOrder
    from opscope.compare import ModelSummary
    from opscope.distributed import DistributedReport
    from opscope.report import Report

BAR_HEADER = "Relative"
SHARE_BAR_MIN_WIDTH = 100
"""From this many columns on, the layer table draws each row's ops as a bar."""


NAME_WIDTH = 24
"""A name column folds only past this many characters: short names stay whole."""
TEXT_WIDTH = 12
"""The narrowest a wrapping text column (a type, a note) is made before columns are left out."""
GAP = 2  # spaces between two columns
MIN_TEXT_WIDTH = 4
"""The narrowest a text column is folded to when a terminal is too narrow for anything else."""


def _cells(grid: Grid, index: int) -> list[str]:
    return [grid.headers[index], *(row[index] for row in (*grid.rows, *grid.footer))]


def _least_width(grid: Grid, index: int) -> int:
    """The narrowest column ``index`` can be without cutting a number, a shape or a word:
    whole cells at their length, text wrapped down to a few characters, as rich measures it
    (never narrower than its longest word)."""
    cells = _cells(grid, index)
    longest = max(map(len, cells))
    if grid.columns[index].whole:
        return longest
    longest_word = max(map(_longest_word, cells))
    return max(longest_word, min(longest, NAME_WIDTH if index == 0 else TEXT_WIDTH))


def _longest_word(cell: str) -> int:
    """The longest word of ``cell``, its first counted with the indentation before it (a
    tree's nesting), which wrapping would otherwise cut."""
    words = cell.split() or [""]
    indent = len(cell) - len(cell.lstrip())
    return max(indent + len(words[0]), *map(len, words))


def fit(grid: Grid, width: int) -> Grid:
    """``grid`` without the columns that matter least (lowest ``keep``) until it fits in
    ``width`` characters, so that no number or shape is ever cut; then each column left out
    that fits beside the rest comes back, those that matter most first (a narrow one may fit
    where a wider one, left out before it, did not). Columns that are never left out stay
    even when that is not enough."""
    least = [_least_width(grid, i) for i in range(len(grid.columns))]

    def fits(kept: set[int]) -> bool:
        return sum(least[i] for i in kept) + GAP * (len(kept) - 1) <= width

    kept = set(range(len(grid.columns)))
    by_keep = sorted(range(len(grid.columns)), key=lambda i: grid.columns[i].keep)  # stable
    dropped = []
    for index in by_keep:
        if fits(kept) or grid.columns[index].keep >= ALWAYS:
            break
        kept.discard(index)
        dropped.append(index)
    for index in reversed(dropped):
        if fits(kept | {index}):
            kept.add(index)
    if len(kept) == len(grid.columns):
        return grid
    order = sorted(kept)
    return replace(
        grid,
        columns=tuple(grid.columns[i] for i in order),
        rows=tuple(tuple(row[i] for i in order) for row in grid.rows),
        footer=tuple(tuple(row[i] for i in order) for row in grid.footer),
    )


def _widths(grid: Grid, width: int) -> list[int]:
    """Each column's width in ``width`` characters: numbers and shapes their longest cell,
    text at least its longest word, then as much more of its longest cell as there is room
    for, in column order. Where even that does not fit, text gives up the indentation
    before its words, then its words are folded, before any number is cut."""
    longest = [max(map(len, _cells(grid, index))) for index in range(len(grid.columns))]
    widths = [_least_width(grid, index) for index in range(len(grid.columns))]
    spare = width - sum(widths) - GAP * (len(widths) - 1)
    text = [index for index, column in enumerate(grid.columns) if not column.whole]
    for index in text:
        if spare > 0:
            grown = min(longest[index], widths[index] + spare)
            spare -= grown - widths[index]
            widths[index] = grown
    for floor in (_longest_plain_word, lambda grid, index: MIN_TEXT_WIDTH):
        for index in text:
            if spare < 0:  # too narrow for all
                shrunk = max(min(floor(grid, index), widths[index]), widths[index] + spare)
                spare += widths[index] - shrunk
                widths[index] = shrunk
    return widths


def _longest_plain_word(grid: Grid, index: int) -> int:
    return max(len(word) for cell in _cells(grid, index) for word in [*cell.split(), ""])


def rich_table(grid: Grid, width: int | None = None) -> Table:
    """``grid`` as a rich Table: numbers right-aligned, numbers and shapes never wrapped, the
    last footer row in bold. Given the ``width`` it is printed at, the columns that matter
    least are left out until every number fits whole (:func:`fit`), and each column's width
    is set so (rich alone would squeeze numbers to fit long text)."""
    widths: list[int | None] = [None] * len(grid.columns)
    if width is not None:
        grid = fit(grid, width)
        widths = list(_widths(grid, width))
    table = Table(
        title=Text(grid.title, style="italic") if grid.title else None,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for index, column in enumerate(grid.columns):
        table.add_column(
            column.header,
            justify=column.align,
            no_wrap=column.whole,
            overflow="fold",
            min_width=widths[index] or _least_width(grid, index),
            width=widths[index],
            style="bold" if column.strong else None,
        )
    # Cells are text, never markup: a label such as "conv1 [backward]" is shown as it is.
    for row in grid.rows:
        table.add_row(*map(Text, row))
    if grid.footer:
        table.add_section()
        for index, row in enumerate(grid.footer):
            style = "bold" if index == len(grid.footer) - 1 else "italic"
            table.add_row(*map(Text, row), style=style)
    return table


def _with_share_bars(grid: Grid, ops: Sequence[int]) -> Grid:
    """``grid`` with a bar of each row's ``ops``, scaled to the heaviest call of the report,
    so heavy layers stand out."""
    heaviest = max(ops, default=0)
    bars = [share_bar(value / heaviest if heaviest else 0.0) for value in ops]
    return replace(
        grid,
        columns=(*grid.columns, Column(BAR_HEADER, whole=True, keep=10)),
        rows=tuple((*row, bar) for row, bar in zip(grid.rows, bars)),
        footer=tuple((*row, "") for row in grid.footer),
    )


class LayerTable:
    """A report for the terminal: its sections (:func:`opscope.tables.report_document`),
    wide from :data:`~opscope.tables.WIDE_LAYOUT_MIN_WIDTH` columns on, compact below so
    that 80 columns stay readable."""

    def __init__(
        self,
        report: Report,
        *,
        sort: SortOrder = "order",
        top: int | None = None,
        show_bytes: bool = False,
        heading: str | None = None,
        extra_notes: Sequence[str] = (),
        depth: int | None = None,
    ):
        report.sorted(sort)  # validate the options now, not when printed
        check_top(top)
        check_depth(depth, sort, top, show_bytes)
        self.report, self.sort, self.top, self.show_bytes = report, sort, top, show_bytes
        self.heading, self.extra_notes, self.depth = heading, extra_notes, depth

    def _document(self, wide: bool, shared_settings: bool = False) -> Document:
        return report_document(
            self.report,
            sort=self.sort,
            top=self.top,
            wide=wide,
            show_bytes=self.show_bytes,
            heading=self.heading,
            extra_notes=self.extra_notes,
            depth=self.depth,
            shared_settings=shared_settings,
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        wide = width >= WIDE_LAYOUT_MIN_WIDTH
        document = self._document(wide)
        if wide and document.grids and not _settings_fit(document.grids[0], width):
            # a column each for kernel, stride, groups and bias, or one for the four: never
            # some of them
            document = self._document(wide, shared_settings=True)
        if document.heading:
            yield Text(document.heading, style="bold")
        for position, grid in enumerate(document.grids):
            if position == 0 and self.depth is None and options.max_width >= SHARE_BAR_MIN_WIDTH:
                shown = self.report.sorted(self.sort)[: self.top]
                grid = _with_share_bars(grid, [record.ops for record in shown])
            yield rich_table(grid, options.max_width)
        for line in document.notes:
            yield Text(line, style="yellow")


class ComparisonTable:
    """The comparison for a terminal: :func:`~opscope.tables.comparison_grid`, compact below
    :data:`~opscope.tables.WIDE_LAYOUT_MIN_WIDTH` columns so that 80 columns stay readable."""

    def __init__(self, summaries: Sequence[ModelSummary]):
        self.summaries = summaries

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = options.max_width >= WIDE_LAYOUT_MIN_WIDTH
        yield rich_table(comparison_grid(self.summaries, wide=wide), options.max_width)


def _settings_fit(grid: Grid, width: int) -> bool:
    """Whether every settings column of the wide layout in ``grid`` fits in ``width``."""
    wanted = {column.header for column in grid.columns} & WIDE_SETTINGS.keys()
    return wanted <= {column.header for column in fit(grid, width).columns}


def standard_console() -> Console:
    """A console on standard output, 80 columns wide where ``COLUMNS`` says 0 or less (a
    console that wide prints nothing at all)."""
    console = Console()
    return console if console.width > 0 else Console(width=80)


def print_report(
    report: Report,
    *,
    sort: SortOrder = "order",
    top: int | None = None,
    show_bytes: bool = False,
    console: Console | None = None,
    depth: int | None = None,
) -> None:
    """Print ``report`` (see :meth:`opscope.report.Report.print`)."""
    table = LayerTable(report, sort=sort, top=top, show_bytes=show_bytes, depth=depth)
    (console or standard_console()).print(table)


def print_ranks(job: DistributedReport, console: Console | None = None) -> None:
    """Print a distributed job's ranks (see :meth:`opscope.distributed.DistributedReport.print`)."""
    (console or standard_console()).print(rich_table(ranks_grid(job)))
