"""Helpers shared by the test modules (on the path through pytest's ``pythonpath``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from opscope import Profiler


def profiled_ops(module: nn.Module, *args: Any, **kwargs: Any) -> int:
    """Operations of one call of ``module``, which must be the only counted call."""
    with Profiler(module) as p:
        module(*args, **kwargs)
    assert len(p.records) == 1
    return p.records[0].ops


class OpLog(TorchDispatchMode):
    """Logs every tensor operation that reaches the dispatcher: a hook that read data,
    copied, synchronised or called ``.item()`` would add operations to the log."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def hook_count(model: nn.Module) -> int:
    """Forward hooks and pre-hooks on the model's modules, the global module hooks, and the
    modules whose ``forward`` is an instance attribute (what opscope sets while a block
    lasts)."""
    from torch.nn.modules import module as modules

    own = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    tracked = sum("forward" in vars(m) for m in model.modules())
    return own + tracked + len(modules._global_forward_hooks) + len(modules._global_forward_pre_hooks)


def _has_matplotlib() -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    return matplotlib is not None


needs_matplotlib = pytest.mark.skipif(
    not _has_matplotlib(), reason="matplotlib is not installed (pip install 'opscope[plot]')"
)
