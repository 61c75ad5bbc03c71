"""A report as pandas DataFrames (the optional ``pandas`` extra), for notebooks and analysis.

pandas is imported when a frame is made, never before; without it the error says how to
install it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from opscope.format import format_shape

if TYPE_CHECKING:
    from opscope.report import Report

INSTALL_HINT = "pip install 'opscope[pandas]'"
_INT64_MAX = 2**63 - 1


class FrameDependencyError(ImportError):
    """pandas is not installed; the message says how to install it."""


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as error:
        raise FrameDependencyError(
            f"DataFrames need pandas, which is not installed: {INSTALL_HINT}"
        ) from error
    return pandas


def _typed(frame: Any, integers: list[str]) -> Any:
    """Counts as int64 columns, or exact Python integers (object) past int64's range."""
    for column in integers:
        values = frame[column]
        if all(value is not None and abs(value) <= _INT64_MAX for value in values):
            frame[column] = values.astype("int64")
    return frame


def records_frame(report: Report) -> Any:
    """One row per record, in execution order: name, type, family, call index, calls, ops,
    MACs, params, bytes, shapes (``1×3×224×224``, the first input and output), time (when
    timed), why a call was not counted, if it was not, and its phase (``forward``,
    ``backward``, ``recompute``, ``step``)."""
    pandas = _pandas()
    rows = [
        {
            "name": record.name,
            "type": record.module_type,
            "family": record.family,
            "call_index": record.call_index,
            "calls": record.calls,
            "ops": record.ops,
            "macs": record.macs,
            "params": record.params,
            "bytes": record.bytes,
            "input_shape": format_shape(record.input_shape),
            "output_shape": format_shape(record.output_shape),
            "time_ns": record.time_ns,
            "uncounted": record.uncounted,
            "phase": record.phase,
        }
        for record in report.records
    ]
    columns = ["name", "type", "family", "call_index", "calls", "ops", "macs", "params", "bytes",
               "input_shape", "output_shape", "time_ns", "uncounted", "phase"]  # fmt: skip
    frame = pandas.DataFrame(rows, columns=columns)
    frame["time_ns"] = frame["time_ns"].astype("Int64")  # missing when not timed
    return _typed(frame, ["call_index", "calls", "ops", "macs", "params", "bytes"])


def modules_frame(report: Report, depth: int | None = None) -> Any:
    """The per-module tree (:meth:`~opscope.report.Report.by_module`) indexed by module path:
    type, depth, calls, ops, MACs, params and share of the total."""
    pandas = _pandas()
    nodes = [asdict(node) for node in report.by_module(depth)]
    columns = ["path", "module_type", "depth", "calls", "ops", "macs", "params"]
    frame = pandas.DataFrame(nodes, columns=columns).set_index("path")
    frame["share"] = frame["ops"] / report.total_ops if report.total_ops else 0.0
    return _typed(frame, ["depth", "calls", "ops", "macs", "params"])
