"""The choices the command line offers and the library checks, importable without torch
(the command line parses its arguments before it loads torch)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

SortOrder = Literal["order", "ops"]
SORT_ORDERS: tuple[SortOrder, ...] = ("order", "ops")
"""How a report's rows are ordered: execution order, or heaviest first."""

CompareSort = Literal["ops", "params", "name", "acc"]
COMPARE_SORTS: tuple[CompareSort, ...] = ("ops", "params", "name", "acc")
"""How a comparison's rows are ordered."""

FORMATS = ("table", "json", "csv", "markdown", "latex", "html")
"""What ``--format`` writes."""

PLOT_FORMATS = ("png", "svg")
"""The picture files ``--plot`` writes, by suffix."""


def plot_format(path: str | os.PathLike[str]) -> str:
    """``"png"`` or ``"svg"``, from the file's suffix.

    Raises:
        ValueError: any other suffix.

    Example:
        >>> plot_format("resnet18.SVG")
        'svg'
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        shown = f"'.{suffix}'" if suffix else "no suffix"
        raise ValueError(f"a plot file must end in .png or .svg; {os.fspath(path)!r} has {shown}")
    return suffix
