"""Helpers shared by the test modules (on the path through pytest's ``pythonpath``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from opscope import Profiler


def profiled_ops(module: nn.Module, *args: Any, **kwargs: Any) -> int:
    """Operations of one call of ``module``, which must be the only counted call."""
    with Profiler(module) as p:
        module(*args, **kwargs)
    assert len(p.records) == 1
    return p.records[0].ops
