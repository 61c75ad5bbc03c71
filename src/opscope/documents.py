"""The text-document views: markdown and LaTeX, of a grid or of a whole report.

What is shown is composed in :mod:`opscope.tables`; these functions only write it down.
"""

from __future__ import annotations

from collections.abc import Callable

from opscope.format import keep_indent
from opscope.tables import Document, Grid

_MARKDOWN_RULES = {"right": "---:", "center": ":---:", "left": "---"}
# GitHub-flavoured markdown leaves an underscore inside a word alone (``mobilenet_v3``).
_MARKDOWN_ESCAPES = {"|": "\\|", "*": "\\*", "`": "\\`", "<": "&lt;", ">": "&gt;"}


def _markdown(text: str) -> str:
    """``text`` as literal markdown: characters that would format or break a cell escaped,
    leading spaces (a tree's indentation, which a cell trims) as no-break spaces."""
    return keep_indent("".join(_MARKDOWN_ESCAPES.get(char, char) for char in text), "\u00a0")


def markdown_table(grid: Grid) -> str:
    """``grid`` as a GitHub-flavoured markdown table (footer rows in bold)."""

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(cells) + " |"

    escaped = [tuple(map(_markdown, row)) for row in grid.rows]
    footer = [tuple(f"**{_markdown(c)}**" if c else "" for c in row) for row in grid.footer]
    lines = [f"**{_markdown(grid.title)}**", ""] if grid.title else []
    lines += [line(tuple(map(_markdown, grid.headers)))]
    lines += [line(tuple(_MARKDOWN_RULES[column.align] for column in grid.columns))]
    lines += [line(row) for row in (*escaped, *footer)]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "×": r"$\times$", "…": r"\ldots{}",
}  # fmt: skip


def _latex(text: str) -> str:
    # leading spaces (a tree's indentation, which LaTeX ignores) as ties, which it keeps
    return keep_indent("".join(_LATEX_ESCAPES.get(char, char) for char in text), "~")


def latex_table(grid: Grid) -> str:
    """``grid`` as a LaTeX ``table`` with a booktabs ``tabular`` (``\\usepackage{booktabs}``):
    numbers right-aligned, the footer rows under a ``\\midrule``."""
    spec = "".join(column.align[0] for column in grid.columns)  # l, r or c

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


def _document(document: Document, table: Callable[[Grid], str], line: Callable[[str], str]) -> str:
    parts = [line(document.heading)] if document.heading else []
    parts += [table(grid) for grid in document.grids]
    parts += [line(note) for note in document.notes]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def markdown_document(document: Document) -> str:
    """A report's sections as markdown: the heading, the tables, the notes as paragraphs."""
    return _document(document, markdown_table, _markdown)


def latex_document(document: Document) -> str:
    """A report's sections as LaTeX: the tables, the heading and notes as comments (``%``)."""
    return _document(document, latex_table, lambda text: f"% {text}")
