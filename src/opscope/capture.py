"""Capture: everything that runs inside the forward pass.

The forward hook of a counted module, the log of the calls it saw, the per-call timer and the
coverage probe. A hook only reads ``.shape``, ``.dtype`` and the device type of the call's
tensors and appends one number: it never reads tensor data, never makes a device wait and
never keeps a reference to a tensor. Turning the log into counts is :mod:`opscope.counting`'s
job, when results are read.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

TensorMeta = tuple[torch.Size, torch.dtype]
"""What a hook reads of a tensor: its shape and dtype."""
LoggedCall = tuple[int, tuple[TensorMeta, ...], tuple[TensorMeta, ...], bool]
"""All a hook keeps of one call: (site index, input metadata, output metadata, training)."""


def _collect_metas(value: Any, metas: list[TensorMeta]) -> None:
    """Append the shape and dtype of every tensor in ``value``, looking into tuples, lists,
    dicts and dataclass instances."""
    if isinstance(value, torch.Tensor):
        if not value.is_nested:  # a nested tensor has no single shape: nothing to read
            metas.append((value.shape, value.dtype))
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect_metas(item, metas)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_metas(item, metas)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _collect_metas(getattr(value, field.name), metas)


def tensor_metas(value: Any) -> tuple[TensorMeta, ...]:
    """The shape and dtype of every tensor in ``value`` (nested containers included)."""
    metas: list[TensorMeta] = []
    _collect_metas(value, metas)
    return tuple(metas)


class CallLog:
    """The calls a profiler saw, kept compactly.

    Each distinct call (module, shapes, mode) is stored once and numbered; then either the
    number of every call is appended to an array of machine integers (8 bytes a call, and
    nothing for the garbage collector to walk, which a list of tuples would make it do over
    and over), or, in summary mode, one count per distinct call is kept. Forward passes may
    run in several threads: numbering and counting take a lock, appending is atomic.
    """

    def __init__(self, summary: bool) -> None:
        self._codes: dict[LoggedCall, int] = {}
        self._order = array("q")
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self.keep: Callable[[LoggedCall], None] = self._count if summary else self._append
        self._summary = summary

    def _code(self, call: LoggedCall) -> int:
        code = self._codes.get(call)
        if code is None:
            with self._lock:
                code = self._codes.setdefault(call, len(self._codes))
        return code

    def _append(self, call: LoggedCall) -> None:
        self._order.append(self._code(call))

    def _count(self, call: LoggedCall) -> None:
        code = self._code(call)
        with self._lock:
            self._counts[code] = self._counts.get(code, 0) + 1

    def __len__(self) -> int:
        """How many calls were logged."""
        return sum(self._counts.values()) if self._summary else len(self._order)

    def snapshot(self) -> tuple[list[LoggedCall], list[tuple[int, int]]]:
        """The distinct calls by number, and ``(number, calls)`` pairs in execution order:
        one pair per call, or in summary mode one per distinct call."""
        with self._lock:
            distinct = list(self._codes)
            if self._summary:
                return distinct, list(self._counts.items())
            order = self._order[:]
        return distinct, [(code, 1) for code in order]


def forward_hook(index: int, keep: Callable[[LoggedCall], None]) -> Callable[..., None]:
    """The forward hook (``with_kwargs=True``) of the counted module numbered ``index``: it
    keeps the call's input and output metadata and the module's training flag."""

    # The hot path: runs once per counted call, so only the common single-tensor case is
    # handled inline; everything else (several inputs, keywords, tuples) is looked into.
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        first = args[0] if len(args) == 1 and not kwargs else None
        if isinstance(first, torch.Tensor) and not first.is_nested:
            inputs: tuple[TensorMeta, ...] = ((first.shape, first.dtype),)
        else:
            inputs = tensor_metas(args) + tensor_metas(kwargs)
        if isinstance(output, torch.Tensor) and not output.is_nested:
            outputs: tuple[TensorMeta, ...] = ((output.shape, output.dtype),)
        else:
            outputs = tensor_metas(output)
        keep((index, inputs, outputs, module.training))

    return hook


def _on_cuda(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the call runs on CUDA: its first tensor argument, or else the module's first
    parameter, is a CUDA tensor (a device attribute, never data)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.is_cuda
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            return value[0].is_cuda  # a list of images, as detection models take
    parameter = next(module.parameters(), None)
    return parameter is not None and parameter.is_cuda


class CallTimer:
    """The duration of every logged call, in the order the calls were logged: monotonic
    nanoseconds on the CPU; on CUDA, a pair of events recorded on the current stream in the
    hooks (nothing waits) and resolved after one synchronisation when results are read."""

    def __init__(self) -> None:
        self._times: list[int | tuple[Any, Any]] = []
        self._lock = threading.Lock()

    def timed(
        self, keep: Callable[[LoggedCall], None]
    ) -> tuple[Callable[..., None], Callable[[LoggedCall], None]]:
        """A forward pre-hook (``with_kwargs=True``) that starts a module's call, and ``keep``
        that also keeps its time. The call and its time are kept together under one lock, so
        calls of other modules in other threads cannot come between them."""
        starts: list[Any] = []  # a stack: a module may call itself (recursion)

        def start(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if _on_cuda(module, args, kwargs):
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                starts.append(event)
            else:
                starts.append(time.perf_counter_ns())

        def keep_timed(call: LoggedCall) -> None:
            begun = starts.pop()
            if isinstance(begun, int):
                elapsed: Any = time.perf_counter_ns() - begun
            else:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                elapsed = (begun, end)
            with self._lock:
                self._times.append(elapsed)
                keep(call)

        return start, keep_timed

    def durations(self, count: int) -> list[int]:
        """The first ``count`` durations in nanoseconds (CUDA events resolved after one
        synchronisation)."""
        times = self._times[:count]
        if any(not isinstance(t, int) for t in times):
            torch.cuda.synchronize()
        return [t if isinstance(t, int) else round(t[0].elapsed_time(t[1]) * 1e6) for t in times]


class CoverageProbe:
    """``torch.utils.flop_counter.FlopCounterMode`` around the block, and hooks that add up
    the FLOPs each counted module's call adds to its total (whatever name the counter gives
    the module), so that the share of the block's FLOPs inside counted modules is known."""

    def __init__(self) -> None:
        self._counter = FlopCounterMode(display=False)
        self._active = False
        self.counted_flops = 0

    @property
    def total_flops(self) -> int:
        """The counter's FLOPs of the whole block so far."""
        return self._counter.get_total_flops()

    def start(self) -> None:
        """Enter the counter's mode: every operation from here on is counted."""
        self._counter.__enter__()
        self._active = True

    def stop(self) -> None:
        """Leave the counter's mode."""
        self._active = False
        self._counter.__exit__(None, None, None)

    def watch(self, module: nn.Module) -> list[RemovableHandle]:
        """Hook ``module`` so that its calls' FLOPs add to :attr:`counted_flops`."""
        starts: list[int] = []

        def start(module: nn.Module, args: tuple[Any, ...]) -> None:
            starts.append(self.total_flops if self._active else 0)

        def stop(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._active and starts:
                self.counted_flops += self.total_flops - starts.pop()

        return [module.register_forward_pre_hook(start), module.register_forward_hook(stop)]
