"""Profiling inside multi-process ``torch.distributed`` jobs (DDP or plain data parallel).

Each rank profiles its own calls with an ordinary :class:`~opscope.Profiler`; :func:`reduce`
then gathers the ranks' reports through the job's existing process group and gives one rank
the per-rank and total view, as a :class:`DistributedReport`. Ranks whose per-layer profile
differs from the most common one (a rank that saw a smaller last batch, or one batch fewer)
are flagged, each with a one-line reason. See ``docs/distributed.md``.

Data only, like the report: :meth:`DistributedReport.print` imports the terminal view when
called.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from opscope.format import format_count
from opscope.report import Report

if TYPE_CHECKING:
    from rich.console import Console
    from torch.distributed import ProcessGroup

# A rank's per-layer profile: (layer name, calls, ops) per layer, sorted by name.
_Profile = tuple[tuple[str, int, int], ...]

_LISTED_LAYERS = 3  # layers named in a reason before the rest are only counted


def reduce(
    report: Report, *, group: ProcessGroup | None = None, dst: int = 0
) -> DistributedReport | None:
    """Gather every rank's report on rank ``dst``.

    A collective: every rank of ``group`` must call it, with its own report. The reports are
    pickled and sent with ``torch.distributed.gather_object`` (with NCCL, each rank must have
    selected its GPU with ``torch.cuda.set_device`` first, as for any object collective).

    Args:
        report: this rank's report (``Profiler.report``).
        group: the process group to gather over (default: the default process group).
        dst: the global rank that receives the result.

    Returns:
        On rank ``dst``, the :class:`DistributedReport` of the group's ranks; None elsewhere.

    Raises:
        RuntimeError: torch.distributed is not available, or no process group is initialized.
        TypeError: ``report`` is not a :class:`~opscope.report.Report`.
    """
    if not dist.is_available():
        raise RuntimeError("opscope reduce(): this build of torch has no torch.distributed")
    if not dist.is_initialized():
        raise RuntimeError(
            "opscope reduce(): torch.distributed is not initialized; call "
            "torch.distributed.init_process_group() first, then reduce() on every rank"
        )
    if not isinstance(report, Report):
        raise TypeError(f"reduce() expects an opscope Report, got {type(report).__name__}")
    receiving = dist.get_rank() == dst
    gathered: list[Any] | None = [None] * dist.get_world_size(group) if receiving else None
    dist.gather_object(report, gathered, dst=dst, group=group)
    return DistributedReport(tuple(gathered)) if gathered is not None else None


def _profile(report: Report) -> _Profile:
    """Calls and ops per layer name (a summary-mode report gives the same as a detailed one)."""
    per_layer: dict[str, tuple[int, int]] = {}
    for record in report.records:
        calls, ops = per_layer.get(record.name, (0, 0))
        per_layer[record.name] = (calls + record.calls, ops + record.ops)
    return tuple(sorted((name, calls, ops) for name, (calls, ops) in per_layer.items()))


def _fewer_or_more(delta: int) -> str:
    return "fewer" if delta < 0 else "more"


def _reason(report: Report, reference: Report, reference_rank: int) -> str:
    """Why ``report`` differs from ``reference``: ``2 fewer calls, 12.5% fewer ops than rank 0``."""
    parts = []
    calls = report.total_calls - reference.total_calls
    if calls:
        parts.append(f"{abs(calls)} {_fewer_or_more(calls)} calls")
    ops = report.total_ops - reference.total_ops
    if ops:
        # A share of the reference's ops, or an absolute count when the reference had none.
        if reference.total_ops:
            size = f"{100 * abs(ops) / reference.total_ops:.3g}%"
        else:
            size = format_count(abs(ops))
        parts.append(f"{size} {_fewer_or_more(ops)} ops")
    if parts:
        return f"{', '.join(parts)} than rank {reference_rank}"
    mine, theirs = set(_profile(report)), set(_profile(reference))
    layers = sorted({name or "(model)" for name, _, _ in mine ^ theirs})
    listed = ", ".join(layers[:_LISTED_LAYERS])
    more = f" and {len(layers) - _LISTED_LAYERS} more" if len(layers) > _LISTED_LAYERS else ""
    return f"same totals as rank {reference_rank}, but other calls or ops in {listed}{more}"


@dataclass(frozen=True)
class DistributedReport:
    """The reports of every rank of a distributed job, gathered by :func:`reduce`.

    Attributes:
        reports: one report per rank, indexed by rank in the gathering group.
    """

    reports: tuple[Report, ...]

    @property
    def world_size(self) -> int:
        """How many ranks reported."""
        return len(self.reports)

    @property
    def total_ops(self) -> int:
        """Exact operations of every rank together."""
        return sum(self.per_rank_ops)

    @property
    def total_calls(self) -> int:
        """Counted calls of every rank together."""
        return sum(report.total_calls for report in self.reports)

    @property
    def per_rank_ops(self) -> tuple[int, ...]:
        """Each rank's operations, by rank."""
        return tuple(report.total_ops for report in self.reports)

    @property
    def reference_rank(self) -> int:
        """The lowest rank whose per-layer profile (calls and ops per layer) is the most common
        one: the ranks are compared with it."""
        profiles = [_profile(report) for report in self.reports]
        # most_common keeps first-seen order among equal counts: the lowest rank wins a tie.
        majority = Counter(profiles).most_common(1)[0][0]
        return profiles.index(majority)

    @property
    def differences(self) -> dict[int, str]:
        """The ranks whose per-layer profile differs from the reference rank's, each with a
        one-line reason (``"16.7% fewer ops than rank 0"``), by rank."""
        reference = self.reference_rank
        expected = _profile(self.reports[reference])
        return {
            rank: _reason(report, self.reports[reference], reference)
            for rank, report in enumerate(self.reports)
            if _profile(report) != expected
        }

    @property
    def differing_ranks(self) -> tuple[int, ...]:
        """The ranks whose per-layer calls or ops differ from the most common profile
        (e.g. a rank that saw a smaller last batch)."""
        return tuple(self.differences)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the totals, one entry per rank and the differing ranks with a reason.

        ``{"world_size", "total_ops", "total_calls", "reference_rank", "ranks": [{"rank",
        "calls", "ops", "share", "differs"}, ...], "differing_ranks": [{"rank", "reason"}, ...]}``,
        ``share`` being the rank's fraction of the total ops (None when the total is 0). Each
        rank's full report is ``reports[rank].to_dict()``.
        """
        total, differences = self.total_ops, self.differences
        return {
            "world_size": self.world_size,
            "total_ops": total,
            "total_calls": self.total_calls,
            "reference_rank": self.reference_rank,
            "ranks": [
                {
                    "rank": rank,
                    "calls": report.total_calls,
                    "ops": report.total_ops,
                    "share": report.total_ops / total if total else None,
                    "differs": rank in differences,
                }
                for rank, report in enumerate(self.reports)
            ],
            "differing_ranks": [
                {"rank": rank, "reason": f"rank {rank}: {reason}"}
                for rank, reason in differences.items()
            ],
        }

    def print(self, console: Console | None = None) -> None:
        """Print one row per rank (calls, ops, share of the total, flag) and the totals, with
        rich. A differing rank's flag is its reason; the reference rank's is ``reference``
        when some rank differs.

        Args:
            console: where to print (default: a new rich Console on standard output).
        """
        from opscope.terminal import print_ranks

        print_ranks(self, console=console)
