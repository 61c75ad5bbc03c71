"""The report: the records of one profiled block, their totals and their exports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console

from opscope import render
from opscope.records import LayerRecord

SortOrder = Literal["order", "ops"]
SORT_ORDERS: tuple[SortOrder, ...] = ("order", "ops")


@dataclass(frozen=True)
class Report:
    """The records of one profiled block.

    Attributes:
        records: one record per counted call, in execution order.
        hooked_modules: how many modules of the model were hooked (had a formula), which
            tells "the model has no counted module" from "none of them ran".
        counted_types: names of the module types that have a formula.
    """

    records: tuple[LayerRecord, ...]
    hooked_modules: int
    counted_types: tuple[str, ...]

    @property
    def total_ops(self) -> int:
        """Exact operations of every recorded call."""
        return sum(record.ops for record in self.records)

    @property
    def total_params(self) -> int:
        """Parameters of the modules that ran, each module counted once however often it ran."""
        return sum(record.params for record in self.records if record.call_index == 1)

    def sorted(self, by: SortOrder = "order") -> tuple[LayerRecord, ...]:
        """The records in execution order, or by descending ops (ties keep execution order)."""
        if by not in SORT_ORDERS:
            raise ValueError(f"sort must be one of {', '.join(SORT_ORDERS)}; got {by!r}")
        if by == "ops":
            return tuple(sorted(self.records, key=lambda record: -record.ops))
        return self.records

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"total_ops": int, "total_params": int, "layers": [{...}, ...]}``.

        Every count is the exact integer; shapes and tuples are lists.
        """
        return {
            "total_ops": self.total_ops,
            "total_params": self.total_params,
            "layers": [record.to_dict() for record in self.records],
        }

    def print(
        self, *, sort: SortOrder = "order", top: int | None = None, console: Console | None = None
    ) -> None:
        """Print the per-layer table and its totals row with rich.

        Args:
            sort: ``"order"`` (execution order) or ``"ops"`` (heaviest first).
            top: show only the first ``top`` rows after sorting; the rest are summed in one row.
            console: where to print (default: a new rich Console on standard output).
        """
        (console or Console()).print(render.LayerTable(self, sort=sort, top=top))
