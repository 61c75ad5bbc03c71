"""A report or a comparison as one self-contained HTML page: the tables, the totals and,
when matplotlib is installed, the chart inlined as SVG.

The page loads nothing (no script, no stylesheet, font or image from elsewhere), so it opens
offline. What is shown is composed in :mod:`opscope.tables`, as for every other view, so the
sections, columns and numbers match.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opscope import plots
from opscope.format import format_count, keep_indent, plural
from opscope.tables import Grid, comparison_grid, report_document
from opscope.version import __version__

if TYPE_CHECKING:
    from opscope.choices import SortOrder
    from opscope.compare import ModelSummary
    from opscope.report import Report

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: #1f2328; margin: 2em auto; max-width: 1200px; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
.subtitle { color: #59636e; margin-top: 0; }
dl.totals { display: flex; flex-wrap: wrap; gap: 0.5em 2.5em; margin: 1.2em 0; }
dl.totals div { display: flex; flex-direction: column; }
dl.totals dt { color: #59636e; font-size: 0.85em; }
dl.totals dd { margin: 0; font-size: 1.4em; font-weight: 600; }
dl.totals .exact { font-size: 0.6em; font-weight: normal; color: #59636e; }
figure { margin: 1.5em 0; }
figure svg { width: 100%; max-width: 1100px; height: auto; }
.note { color: #9a6700; }
.plot-missing { color: #59636e; font-style: italic; }
table { border-collapse: collapse; margin: 1em 0 2em; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.4em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #d1d9e0; white-space: nowrap; }
th { background: #f6f8fa; text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
tfoot td { font-style: italic; border-top: 2px solid #afb8c1; }
tfoot tr:last-child td { font-style: normal; font-weight: 600; }
.right { text-align: right; }
.center { text-align: center; }
footer { color: #59636e; font-size: 0.85em; margin-top: 2em; }
"""


def report_html(
    report: Report,
    *,
    title: str,
    model: str | None = None,
    sort: SortOrder = "order",
    top: int | None = None,
    show_bytes: bool = False,
    heading: str | None = None,
    extra_notes: Sequence[str] = (),
    depth: int | None = None,
) -> str:
    """``report`` as one HTML page: the totals, the per-layer chart (inline SVG, when
    matplotlib is installed), then the report's sections (:func:`opscope.tables.report_document`).

    Args:
        title: the page's heading and title.
        model: the model's name, shown under the heading.
        sort, top, show_bytes: as for the table (:func:`opscope.tables.layer_grid`); the
            chart always shows every layer in execution order.
        heading: what was profiled (model, input, device), shown under the title.
        extra_notes: lines after the report's own notes.
    """
    document = report_document(
        report,
        sort=sort,
        top=top,
        show_bytes=show_bytes,
        heading=heading,
        extra_notes=extra_notes,
        depth=depth,
    )
    parts = [f"<h1>{_text(title)}</h1>"]
    if model:
        parts.append(f'<p class="subtitle">Model: <strong>{_text(model)}</strong></p>')
    if document.heading:
        parts.append(f'<p class="subtitle">{_text(document.heading)}</p>')
    if report.records:
        parts.append(
            _totals(
                [
                    ("Total ops", report.total_ops),
                    ("Parameters", report.total_params),
                    ("Counted calls", report.total_calls),
                ]
            )
        )
        parts.append(_chart(lambda: plots.layers_svg(report, title=model or title)))
    parts += [_table(grid) for grid in document.grids]
    parts += [f'<p class="note">{_text(line)}</p>' for line in document.notes]
    return _page(title, parts)


def report_fragment(report: Report) -> str:
    """The report's sections (:func:`opscope.tables.report_document`) as HTML to embed, as a
    Jupyter notebook shows a report: no page, no style, no chart."""
    document = report_document(report)
    parts = [_table(grid) for grid in document.grids]
    parts += [f"<p>{_text(line)}</p>" for line in document.notes]
    return "\n".join(parts)


def comparison_html(summaries: Sequence[ModelSummary], *, title: str) -> str:
    """A comparison as one HTML page: the chart of published acc@1 against total ops (inline
    SVG, when matplotlib is installed) and the comparison table."""
    parts = [f"<h1>{_text(title)}</h1>"]
    counted = [s for s in summaries if s.total_ops is not None]
    failed = len(summaries) - len(counted)
    parts.append(
        f'<p class="subtitle">{plural(len(summaries), "model")}'
        + (f", {failed} failed" if failed else "")
        + "</p>"
    )
    if counted:
        lightest = min(counted, key=lambda s: s.total_ops or 0)
        heaviest = max(counted, key=lambda s: s.total_ops or 0)
        parts.append(
            _totals(
                [
                    (f"Fewest ops: {lightest.name}", lightest.total_ops or 0),
                    (f"Most ops: {heaviest.name}", heaviest.total_ops or 0),
                ]
            )
        )
    parts.append(_chart(lambda: plots.comparison_svg(summaries)))
    parts.append(_table(comparison_grid(summaries)))
    return _page(title, parts)


def _text(value: str) -> str:
    # leading spaces (a tree's indentation, which HTML collapses) as no-break spaces
    return keep_indent(html.escape(value, quote=True), "&nbsp;")


def _totals(items: list[tuple[str, int]]) -> str:
    """Headline counts: readable, with the exact integer underneath."""
    cells = "".join(
        f"<div><dt>{_text(label)}</dt><dd>{_text(format_count(value))}"
        f'<br><span class="exact">{value:,}</span></dd></div>'
        for label, value in items
    )
    return f'<dl class="totals">{cells}</dl>'


def _chart(draw: Callable[[], tuple[str, plots.PlotData]]) -> str:
    """The chart as inline SVG, or a note saying how to get it."""
    try:
        svg, _ = draw()
    except plots.PlotDependencyError:
        return (
            '<p class="plot-missing">No chart: matplotlib is not installed '
            f"(<code>{_text(plots.INSTALL_HINT)}</code>).</p>"
        )
    return f"<figure>{svg}</figure>"


def _table(grid: Grid) -> str:
    """``grid`` as an HTML table: the title as caption, the footer in ``<tfoot>``."""
    classes = [f' class="{c.align}"' if c.align != "left" else "" for c in grid.columns]

    def row(cells: tuple[str, ...], tag: str = "td") -> str:
        padded = (*cells, *("",) * (len(classes) - len(cells)))
        return (
            "<tr>"
            + "".join(f"<{tag}{cls}>{_text(cell)}</{tag}>" for cls, cell in zip(classes, padded))
            + "</tr>"
        )

    lines = ["<table>"]
    if grid.title:
        lines.append(f"<caption>{_text(grid.title)}</caption>")
    lines.append("<thead>" + row(grid.headers, "th") + "</thead>")
    lines.append("<tbody>")
    lines += [row(cells) for cells in grid.rows]
    lines.append("</tbody>")
    if grid.footer:
        lines.append("<tfoot>" + "".join(row(cells) for cells in grid.footer) + "</tfoot>")
    lines.append("</table>")
    return "\n".join(lines)


def _page(title: str, parts: list[str]) -> str:
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n"
        f"<footer>Made by opscope {_text(__version__)}: exact operation counts, "
        "from the shapes that ran.</footer>\n"
        "</body>\n</html>\n"
    )
