"""Capture: everything that runs inside the forward pass.

The module tracker (which module of the model runs, and the calls of the counted ones), the
dispatch mode that sees the ATen operators run outside counted modules, the log of what both
saw, the per-call timer and the coverage probe. No hook is put on the user's modules: their
fast paths (a transformer layer's fused kernel) stay as they are without profiling. They only read ``.shape``, ``.dtype`` and the device type of tensors and append one
number per call: they never read tensor data, never make a device wait and never keep a
reference to a tensor. Turning the log into counts is :mod:`opscope.counting`'s job, when
results are read.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import torch.jit._trace as _jit_trace
from torch import nn
from torch._C import _current_autograd_node
from torch._C import _get_dispatch_stack_at as _dispatch_stack_at
from torch._C import _get_tracing_state as _tracing_state
from torch._C import _len_torch_dispatch_stack as _len_dispatch_stack
from torch._C import _pop_torch_dispatch_stack as _pop_dispatch_mode
from torch._C import _push_on_torch_dispatch_stack as _push_dispatch_mode
from torch._C import is_grad_enabled as _grad_enabled
from torch._C._functorch import (
    get_unwrapped,
    is_batchedtensor,
    is_gradtrackingtensor,
    maybe_current_level,
    maybe_get_bdim,
    maybe_get_level,
)
from torch.nn.modules.loss import _Loss
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from opscope.dispatch import DispatchMode
from opscope.formulas.registry import (
    OPAQUE_TYPES,
    OpaqueMeta,
    OpCall,
    coarsened,
    op_formula_for,
)

AccumulateGrad = torch._C._functions.AccumulateGrad  # a parameter's node: no module to import

try:
    from torch._guards import TracingContext
    from torch.compiler import is_dynamo_compiling, is_exporting

    def _exporting() -> bool:
        """Whether torch.export traces the model in this thread (with fake tensors): not a
        forward pass of the user's; strict export traces the followed modules' forwards with
        dynamo, so they are then the modules' own. Export's flag is the process's, set while
        any thread exports: this thread's export runs dynamo or has a tracing context."""
        return is_exporting() and (is_dynamo_compiling() or TracingContext.try_get() is not None)

except ImportError:  # a torch older than torch.export's flag: nothing exports

    def _exporting() -> bool:
        return False


ShapeAndDtype = tuple[torch.Size, torch.dtype]
"""What a hook reads of a tensor: its shape and dtype."""
LoggedCall = tuple[int, tuple[ShapeAndDtype, ...], tuple[ShapeAndDtype, ...], bool, int, int]
"""All a hook keeps of one counted call: (site index, input metadata, output metadata,
training, vmap batch: how many calls ``torch.vmap`` made it stand for, 1 outside vmap,
phase: :data:`FORWARD`, or :data:`RECOMPUTE` for a forward recomputed in the backward)."""


FORWARD, BACKWARD, RECOMPUTE, STEP = range(4)
"""What a logged call belongs to, as an index into :data:`opscope.records.PHASES`."""


@dataclass(frozen=True, slots=True)
class LoggedOp:
    """All the dispatch mode keeps of one ATen operator call outside counted modules.

    Attributes:
        scope: the number of the innermost module that was running (:class:`ModuleTracker`), or
            :data:`OUTSIDE` when no module of the model was.
        op: the operator.
        call: its arguments' and outputs' metadata, as its formula reads them; None when
            they could not be read (a tensor without a single shape).
        out_dtypes: the dtypes of its tensor outputs, in the order of ``call.outputs``.
        phase: :data:`FORWARD`, :data:`BACKWARD`, :data:`RECOMPUTE` or :data:`STEP`; in the
            backward pass, ``scope`` is the module (a scope, or a site's code) whose forward
            made the autograd node running the operator.
    """

    scope: int
    op: torch._ops.OpOverload
    call: OpCall | None
    out_dtypes: tuple[torch.dtype, ...]
    phase: int = FORWARD


OUTSIDE = -1
"""The scope of operators that ran inside the block but outside every module of the model."""
OPTIMIZER = -2
"""The scope of operators an optimizer's ``step()`` ran inside the block."""


def tensor_metas(value: Any) -> tuple[ShapeAndDtype, ...]:
    """The shape and dtype of every tensor in ``value`` (nested containers included); a
    nested tensor has no single shape: nothing to read."""
    return tuple((t.shape, t.dtype) for t in _tensors(value) if not t.is_nested)


_SCOPE_CALL_SHIFT = 32  # up to 2**32 distinct calls, and 2**31 calls of one scope


def _kept(call: LoggedCall | LoggedOp) -> LoggedCall | LoggedOp:
    """``call`` as the log keeps it: a module call's shapes as plain tuples, not torch.Size.
    Equal and of equal hash, so lookups with sizes find it; but a tuple of plain tuples, ints
    and dtypes is one the garbage collector stops tracking, so a block's log does not bring on
    the full collections that walk every object of the process (100 ms and more once torch
    is imported)."""
    if isinstance(call, LoggedOp):
        return call
    index, inputs, outputs, *rest = call
    return (
        index,
        tuple([(tuple(shape), dtype) for shape, dtype in inputs]),
        tuple([(tuple(shape), dtype) for shape, dtype in outputs]),
        *rest,
    )  # type: ignore[return-value]


class CallLog:
    """The calls a profiler saw, kept compactly.

    Each distinct call (module, shapes, mode) is stored once and numbered; then either the
    number of every call is appended to an array of machine integers (8 bytes a call, and
    nothing for the garbage collector to walk, which a list of tuples would make it do over
    and over), or, in summary mode, one count per distinct call is kept. Forward passes may
    run in several threads: numbering and counting take a lock, appending is atomic.
    """

    def __init__(self, summary: bool) -> None:
        self._codes: dict[LoggedCall | LoggedOp, int] = {}
        # Per call, its number and, in the high bits, which call of its scope an op ran in:
        # one append, which is atomic, so threads need no lock to log.
        self._order = array("q")
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._summary = summary

    def code(self, call: LoggedCall | LoggedOp) -> int:
        """The number of a distinct call (numbered when first seen)."""
        code = self._codes.get(call)
        return self.number(_kept(call)) if code is None else code

    def number(self, kept: LoggedCall | LoggedOp) -> int:
        """The number of a distinct call given as the log keeps it (see :func:`_kept`),
        numbered if new: one lookup, where :meth:`code` makes two."""
        with self._lock:
            return self._codes.setdefault(kept, len(self._codes))

    def keep(self, call: LoggedCall | LoggedOp, scope_call: int = 0) -> None:
        """Log one call; ``scope_call`` numbers the call of the op's scope it ran in."""
        self.keep_code(self.code(call), scope_call)

    def keep_code(self, code: int, scope_call: int = 0) -> None:
        """Log one call of the distinct call numbered ``code`` (see :meth:`code`)."""
        if self._summary:
            with self._lock:
                self._counts[code] = self._counts.get(code, 0) + 1
        else:
            self._order.append(code | scope_call << _SCOPE_CALL_SHIFT)

    def __len__(self) -> int:
        """How many calls were logged."""
        return sum(self._counts.values()) if self._summary else len(self._order)

    def snapshot(self) -> tuple[list[LoggedCall | LoggedOp], list[tuple[int, int, int]]]:
        """The distinct calls by number, and ``(number, calls, scope call)`` triples in
        execution order: one per call, or in summary mode one per distinct call (scope
        call 0)."""
        with self._lock:
            distinct = list(self._codes)
            if self._summary:
                return distinct, [(code, count, 0) for code, count in self._counts.items()]
            order = self._order[:]
        low = (1 << _SCOPE_CALL_SHIFT) - 1
        return distinct, [(entry & low, 1, entry >> _SCOPE_CALL_SHIFT) for entry in order]


def _on_cuda(module: nn.Module, args: tuple[Any, ...]) -> bool:
    """Whether the call runs on CUDA: its first tensor argument, or else the module's first
    parameter, is a CUDA tensor (a device attribute, never data)."""
    for value in args:
        if isinstance(value, torch.Tensor):
            return value.is_cuda
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            return value[0].is_cuda  # a list of images, as detection models take
    parameter = next(module.parameters(), None)
    return parameter is not None and parameter.is_cuda


Elapsed = int | tuple[Any, Any]
"""A duration as measured: nanoseconds, or a pair of CUDA events not yet resolved."""


class CallTimer:
    """The duration of every logged call, in the order the calls were logged, and the
    backward pass's time per module that owns autograd nodes: monotonic nanoseconds on the
    CPU; on CUDA, a pair of events recorded on the current stream (nothing waits), resolved
    after one synchronisation when results are read."""

    def __init__(self) -> None:
        self._times: list[Elapsed] = []
        self._backward: dict[int, list[Elapsed]] = {}
        self._lock = threading.Lock()

    def start(self, module: nn.Module, args: tuple[Any, ...]) -> Any:
        """The start of a module's call: a CUDA event recorded on the current stream for a
        call on CUDA (nothing waits), else the monotonic clock in nanoseconds."""
        return self._now(_on_cuda(module, args))

    def start_node(self, grad_outputs: Any) -> Any:
        """The start of an autograd node, on CUDA when its first gradient is."""
        first = next(_tensors(grad_outputs), None)
        return self._now(first is not None and first.is_cuda)

    @staticmethod
    def _now(cuda: bool) -> Any:
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter_ns()

    @staticmethod
    def _elapsed(begun: Any) -> Elapsed:
        if isinstance(begun, int):
            return time.perf_counter_ns() - begun
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        return (begun, end)

    def keep(self, begun: Any, keep: Callable[[], object]) -> None:
        """The call that began at ``begun`` ends: keep its time, and run ``keep`` (which logs
        the call) under the same lock, so that calls of other threads cannot come between."""
        elapsed = self._elapsed(begun)
        with self._lock:
            self._times.append(elapsed)
            keep()

    def keep_node(self, owner: int, begun: Any) -> None:
        """An autograd node of ``owner``'s that began at ``begun`` ends: add its time."""
        elapsed = self._elapsed(begun)
        with self._lock:
            self._backward.setdefault(owner, []).append(elapsed)

    def durations(self, count: int) -> list[int]:
        """The first ``count`` durations in nanoseconds (CUDA events resolved after one
        synchronisation)."""
        times = self._times[:count]
        self._synchronize(times)
        return [_nanoseconds(t) for t in times]

    def backward_durations(self) -> dict[int, int]:
        """Each owner's time in the backward pass so far: the sum of its nodes' durations."""
        with self._lock:
            spans = {owner: list(times) for owner, times in self._backward.items()}
        self._synchronize([t for times in spans.values() for t in times])
        return {owner: sum(map(_nanoseconds, times)) for owner, times in spans.items()}

    @staticmethod
    def _synchronize(times: list[Elapsed]) -> None:
        if any(not isinstance(t, int) for t in times):
            torch.cuda.synchronize()


def _nanoseconds(elapsed: Elapsed) -> int:
    return elapsed if isinstance(elapsed, int) else round(elapsed[0].elapsed_time(elapsed[1]) * 1e6)


class CoverageProbe:
    """``torch.utils.flop_counter.FlopCounterMode`` around the block, and the FLOPs each
    counted call adds to its total (whatever name the counter gives the module), so that the
    share of the block's FLOPs in work opscope counted is known."""

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

    def begin(self) -> int:
        """The counter's total at the start of a counted call."""
        return self.total_flops if self._active else 0

    def end(self, begun: int) -> None:
        """A counted call that began at ``begun`` ends: its FLOPs were in counted work."""
        if self._active:
            self.counted_flops += self.total_flops - begun


class _Tensor:
    """Marks a tensor's metadata in a fingerprint: equal to no argument value."""


def _fingerprint(value: Any, coarse: bool = False) -> Any:
    """What tells an operator's arguments or outputs apart as its formula and the byte counts
    see them, cheaply built: each tensor's shape and dtype, every list or tuple as a tuple,
    a dict as its items, an opaque object (a TorchBind object, a storage, a generator) as its
    class, every NaN as one NaN, every other value as it is, or, when ``coarse``, as
    :func:`~opscope.formulas.registry.coarsened` makes it.

    Raises:
        TypeError: a nested tensor (its shape is read the slow way, by :class:`OpCall`);
            reading a shape may raise too (an uninitialised lazy parameter's).
    """
    if isinstance(value, torch.Tensor):
        if value.is_nested:
            raise TypeError("a nested tensor has no single shape")
        return (_Tensor, value.shape, value.dtype)
    if isinstance(value, (tuple, list)):
        return tuple([_fingerprint(item, coarse) for item in value])
    if isinstance(value, dict):
        return tuple([(name, _fingerprint(item, coarse)) for name, item in value.items()])
    if isinstance(value, OPAQUE_TYPES):  # a new one at each call: a marker's, a batch's storage
        return OpaqueMeta.of(value)
    if coarse:
        value = coarsened(value)
    if isinstance(value, (float, complex)) and value != value:  # a NaN equals no value
        return math.nan
    return value


def _output_fingerprint(out: Any) -> tuple[Any, ...]:
    """The shapes and dtypes of the tensors in an operator's output, flattened in order: all
    that is kept of an output. A scalar's value (an ``.item()``'s) is not, so that a new value
    is not a new key: the keys stay as few as the distinct calls.

    Raises:
        TypeError: a nested tensor (its shape is read the slow way, by :class:`OpCall`).
    """
    if isinstance(out, torch.Tensor):
        return (_fingerprint(out),)
    if isinstance(out, (tuple, list)):
        return tuple(tensor for item in out for tensor in _output_fingerprint(item))
    return ()


_DESCRIPTIONS_KEPT = 1024
_descriptions: dict[tuple[Any, ...], tuple[OpCall | None, tuple[torch.dtype, ...]]] = {}
"""The description of each distinct operator call by its fingerprint, shared by every block of
the process, so that profiling a model again describes none of its operators again. Shapes
and plain values only, never a tensor; emptied when full (models of ever new shapes)."""


def _description(
    fingerprint: tuple[Any, ...] | None, args: Any, kwargs: Any, out: Any
) -> tuple[OpCall | None, tuple[torch.dtype, ...]]:
    """An operator call's :class:`OpCall` (None when its tensors cannot be read: counted as an
    operator that has no formula) and its outputs' dtypes, from the process's descriptions
    when ``fingerprint`` (None: it has none) is there."""
    described = _descriptions.get(fingerprint) if fingerprint is not None else None
    if described is None:
        try:
            call: OpCall | None = OpCall.of(args, kwargs, out)
        except Exception:  # noqa: BLE001 - a tensor without shape must not break the forward
            call = None
        described = (call, _dtypes(out))
        if fingerprint is not None:
            if len(_descriptions) >= _DESCRIPTIONS_KEPT:
                _descriptions.clear()
            _descriptions[fingerprint] = described
    return described


def _dtypes(out: Any) -> tuple[torch.dtype, ...]:
    """The dtypes of the tensors in an operator's output, flattened in order."""
    if isinstance(out, torch.Tensor):
        return (out.dtype,)
    if isinstance(out, (tuple, list)):
        return tuple(dtype for item in out for dtype in _dtypes(item))
    return ()


_SITES = -3  # counted site i is -3 - i: its operators are counted by its formula


def _bound(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The call's arguments in the order of the forward's signature, keywords included, so
    that a formula finds ``query, key, value`` whatever the order they were given in."""
    signature = _signature(type(module))
    if signature is None:
        return (*args, *kwargs.values())
    try:
        bound = signature.bind(module, *args, **kwargs)
    except TypeError:
        return (*args, *kwargs.values())
    return tuple(bound.arguments.values())[1:]  # without self


@cache
def _signature(module_type: type[nn.Module]) -> inspect.Signature | None:
    try:
        return inspect.signature(module_type.forward)
    except (TypeError, ValueError):
        return None


def _vmap_batch(value: Any) -> int:
    """How many calls a call under ``torch.vmap`` stands for: the product of the batch sizes
    of the vmap levels that any of its tensors is batched at (1 outside vmap; an unbatched
    tensor takes part in each call), read from metadata through the wrappers of the
    transforms between levels (``grad``, ``jacrev``)."""
    sizes: dict[int, int] = {}
    for tensor in _tensors(value):
        while is_batchedtensor(tensor) or is_gradtrackingtensor(tensor):
            inner = get_unwrapped(tensor)
            if is_batchedtensor(tensor):
                sizes[maybe_get_level(tensor)] = inner.shape[maybe_get_bdim(tensor)]
            tensor = inner
    return math.prod(sizes.values())


_DATACLASS_DEPTH = 4  # dataclasses within dataclasses: a tree's back-references end there


def _tensors(value: Any, dataclasses_in: int = 0) -> Iterator[torch.Tensor]:
    """Every tensor in ``value``, looking into tuples, lists, dicts and dataclass instances
    (fields not set yet skipped; a few levels of dataclasses deep, for those that refer to
    each other)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item, dataclasses_in)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, dataclasses_in)
    elif (
        dataclasses.is_dataclass(value)
        and not isinstance(value, type)
        and dataclasses_in < _DATACLASS_DEPTH
    ):
        for field in dataclasses.fields(value):
            yield from _tensors(getattr(value, field.name, None), dataclasses_in + 1)


def _boundary(args: tuple[Any, ...], kwargs: dict[str, Any]) -> set[int]:
    """Before a module call, when the backward pass is followed (the operators' mode is on,
    and gradients are recorded): the ids of the autograd nodes that made its inputs, where
    :meth:`ModuleTracker.claim` stops (read before the call, since an in-place operator such
    as ``ReLU(inplace=True)`` gives its input a new node)."""
    return {id(t.grad_fn) for t in _tensors((args, kwargs)) if t.grad_fn is not None}


def _no_mode() -> None:
    """No operators' mode: operators are not counted."""


class _ThreadState(threading.local):
    """One thread's view of the running modules."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, Any]] = []  # (scope or site code, call number or start)
        self.owner: int | None = None  # in the backward pass: whose autograd node runs
        self.nodes: list[Any] = []  # when timing: the starts of the nodes running
        self.stepping = False  # inside an optimizer's step()


class ModuleTracker:
    """Follows the calls of the model's modules, per thread.

    Each module of the model gets, for as long as the block lasts, a thin ``forward`` of its
    own (an instance attribute over the class's, removed when the block ends) that says when
    it starts and ends. Unlike a hook, it keeps PyTorch's fast module-call path and the fast
    paths that refuse hooked modules (a transformer layer's fused kernel); other hooks run as
    ever.

    A counted module (a *site*) has its calls logged: the shapes of its inputs and outputs,
    its mode and, under ``torch.vmap``, how many calls the call stands for. Every other module
    of the model is a *scope*: an operator run outside counted modules is attributed to the
    innermost scope that ran it. Operators run while no module of the model runs belong to
    the block itself, :data:`OUTSIDE` the model. Calls made in the backward pass (a recomputed
    checkpoint) are not the forward's and are not logged.
    """

    def __init__(self, log: CallLog, timer: CallTimer | None, probe: CoverageProbe | None) -> None:
        self.names: list[tuple[str, str]] = []  # (qualified name, type name) per scope
        self._calls: list[int] = []  # calls of each scope so far
        self._log = log
        self._timer = timer
        self._probe = probe
        self._threads = _ThreadState()
        self._owners: dict[int, int] = {}  # id(parameter): the site it belongs to
        self.used_by: dict[int, int] = {}  # site: the first scope whose operators used it
        self.tied: dict[int, set[int]] = {}  # site: the other sites holding one of its parameters
        self._holders: dict[int, list[int]] = {}  # id(parameter): the sites holding it as their own
        self._wrapped: list[_Followed] = []
        # The operators' mode, when counting them; held weakly, since the mode holds the
        # tracker: without a cycle, a profiler's log is freed as soon as it is dropped, not
        # left to the garbage collector.
        self.mode: Callable[[], TorchDispatchMode | None] = _no_mode
        self._claimed: set[int] = set()  # ids of the autograd nodes claimed in this forward
        # A parameter's gradient accumulator outlives the forward that reached it: every
        # forward of a training loop reaches the same one. It is claimed once a block (held,
        # so that its id stays its own: a parameter's, which lives as long as the model; an
        # input's is not held, nor its tensor), and every hook set on a node is removed when
        # the block ends: none runs after it, none piles up during it.
        self._accumulators: dict[int, AccumulateGrad] = {}
        self._node_hooks: list[RemovableHandle] = []
        self._followed: set[int] = set()  # ids of the forwards given to followed modules
        # (site, input shape and dtype, output shape and dtype, training): the log's number
        # of a site's plain call, one tensor in and one out, in a forward pass
        self.site_codes: dict[tuple[Any, ...], int] = {}

    def phase(self) -> tuple[int, int, int]:
        """Where an operator that runs now belongs: ``(scope, scope call, phase)``. In the
        backward pass, the module whose autograd node runs (a forward recomputed there, by
        checkpointing, is its own phase); in an optimizer's step, :data:`OPTIMIZER`."""
        threads = self._threads
        if _current_autograd_node() is not None:
            if threads.stack:
                return (*threads.stack[-1], RECOMPUTE)
            owner = threads.owner
            return (OUTSIDE if owner is None else owner), 0, BACKWARD
        if threads.stack:
            return (*threads.stack[-1], FORWARD)
        return (
            (OPTIMIZER if threads.stepping else OUTSIDE),
            0,
            STEP if threads.stepping else FORWARD,
        )

    def claim(self, code: int, boundary: set[int], output: Any) -> None:
        """Make the autograd nodes a module call created (from its output back to the
        ``boundary`` nodes that made its inputs) say, when the backward pass runs them, that
        they are ``code``'s: a node's own hooks set and clear the owner, so nothing holds the
        graph. The nodes of inner modules, claimed before, keep their owner."""
        pending = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
        seen: set[int] = set()
        threads, timer = self._threads, self._timer

        def start(grad_outputs: Any) -> None:
            threads.owner = code
            if timer is not None:
                threads.nodes.append(timer.start_node(grad_outputs))

        def end(grad_inputs: Any, grad_outputs: Any) -> None:
            threads.owner = None
            if timer is not None and threads.nodes:
                timer.keep_node(code, threads.nodes.pop())

        while pending:
            node = pending.pop()
            if node is None or id(node) in seen or id(node) in boundary:
                continue
            seen.add(id(node))
            if type(node) is AccumulateGrad and isinstance(node.variable, nn.Parameter):
                fresh = id(node) not in self._accumulators
                self._accumulators[id(node)] = node
            else:
                fresh = id(node) not in self._claimed
                self._claimed.add(id(node))
            if fresh:
                self._node_hooks += (node.register_prehook(start), node.register_hook(end))
            pending += [next_node for next_node, _ in node.next_functions]

    def new_forward(self) -> None:
        """A forward pass of the model begins: the nodes of the last one are not reached
        again (their ids may be reused), and the hooks of those freed since are let go."""
        self._claimed.clear()
        if self._node_hooks:
            self._node_hooks = [
                handle for handle in self._node_hooks if handle.hooks_dict_ref() is not None
            ]

    def optimizer_hooks(self) -> list[RemovableHandle]:
        """Global optimizer hooks that tell an optimizer's step from the rest of the block."""
        threads = self._threads

        def begin(optimizer: Any, args: Any, kwargs: Any) -> None:
            threads.stepping = True

        def finish(optimizer: Any, args: Any, kwargs: Any) -> None:
            threads.stepping = False

        return [
            register_optimizer_step_pre_hook(begin),
            register_optimizer_step_post_hook(finish),
        ]

    def current(self) -> tuple[int, int]:
        """The innermost running scope (or site code) of this thread and which of its calls
        it is; :data:`OUTSIDE` when no module of the model runs."""
        stack = self._threads.stack
        return stack[-1] if stack else (OUTSIDE, 0)

    def add_scope(self, name: str, module: nn.Module) -> None:
        """Make ``module`` a scope: its operators are attributed to ``name``."""
        self.names.append((name, type(module).__name__))
        self._calls.append(0)
        self._install(_ScopeForward(self, module, len(self.names) - 1))

    def plain_children(self, module: nn.Module) -> bool:
        """Whether nothing but ``module``'s children, each followed, runs between them when
        it calls them, so that its own operators' mode can be left: decided at each call,
        since during the block a child may be added (``insert``), given a forward or a
        forward hook (a pruning mask's product), and global forward hooks may be set; their
        operators must be seen."""
        if _global_forward_hooks or _global_forward_pre_hooks:
            return False
        followed = self._followed
        for child in module._modules.values():
            if child is None:
                return False
            attributes = child.__dict__  # read directly: this runs at each call
            if (
                attributes.get("_forward_hooks")
                or attributes.get("_forward_pre_hooks")
                or id(attributes.get("forward")) not in followed  # by id: any may be unhashable
                or type(child).__call__ is not _PLAIN_CALL
            ):
                return False
        return True

    def number_site_call(
        self,
        index: int,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output: Any,
        key: tuple[Any, ...] | None,
    ) -> int:
        """The log's number of a call of site ``index``; a plain call's (``key``, see
        :attr:`site_codes`) is logged as its key says, and kept under it."""
        if key is None:
            phase = RECOMPUTE if _current_autograd_node() is not None else FORWARD
            return self._log.code(_logged(index, module, args, kwargs, output, phase))
        # as plain tuples, which the garbage collector stops tracking
        _, in_shape, in_dtype, out_shape, out_dtype, training = key
        meta_in, meta_out = (tuple(in_shape), in_dtype), (tuple(out_shape), out_dtype)
        code = self._log.number((index, (meta_in,), (meta_out,), training, 1, FORWARD))
        self.site_codes[(index, *meta_in, *meta_out, training)] = code
        return code

    def add_site(self, index: int, module: nn.Module) -> None:
        """Log ``module``'s calls as site ``index``; its operators are counted by its formula."""
        for parameter in module._parameters.values():
            if parameter is not None:
                self._owners.setdefault(id(parameter), index)
                # Tied weights (an embedding and a language model's head) are a module's
                # own parameters, held by each of the modules that share them.
                holders = self._holders.setdefault(id(parameter), [])
                for other in holders:
                    self.tied.setdefault(other, set()).add(index)
                    self.tied.setdefault(index, set()).add(other)
                holders.append(index)
        if module._modules:  # its children's, which its formula may count
            for parameter in module.parameters():
                self._owners.setdefault(id(parameter), index)
        self._install(_SiteForward(self, module, index))

    def _install(self, tracked: _Followed) -> None:
        """Give ``tracked.module`` the ``forward`` ``tracked`` until :meth:`detach`."""
        tracked.module.__dict__["forward"] = tracked
        self._wrapped.append(tracked)
        self._followed.add(id(tracked))

    def detach(self) -> None:
        """Give every module its own ``forward`` back (the last wrapped first)."""
        self._followed.clear()
        for handle in self._node_hooks:
            handle.remove()
        self._node_hooks.clear()
        self._accumulators.clear()
        while self._wrapped:
            tracked = self._wrapped.pop()
            # A shallow copy of the module made during the block (copy.copy) shares this
            # forward and keeps it: from now on it runs the module's own and logs nothing.
            tracked.__class__ = _RELEASED[type(tracked)]
            module = tracked.module
            current = module.__dict__.get("forward")
            if current is tracked:
                if tracked.own is None:
                    del module.__dict__["forward"]
                else:
                    module.__dict__["forward"] = tracked.own
                continue
            # Another profiler's forward, set after this one's, is still there (its block
            # ends later): this one is taken out of the chain of forwards it runs.
            while isinstance(current, _Followed):
                if current.own is tracked:
                    current.own, current.__wrapped__ = tracked.own, tracked.__wrapped__
                    break
                current = current.own

    def note_parameters(self, args: tuple[Any, ...], scope: int) -> None:
        """Remember which counted modules' parameters an operator of ``scope`` used (a Linear
        whose weight a block passes to ``F.linear``: it ran, without being called)."""
        owners = self._owners
        for value in args:
            # By id alone: a parameter of the model lives as long as the block, so its id is
            # its own (isinstance(value, nn.Parameter) costs more than the whole lookup).
            site = owners.get(id(value))
            if site is not None:
                self.used_by.setdefault(site, scope)


class _Followed:
    """The ``forward`` a followed module has for the block: it runs the module's own
    (``__wrapped__``, which ``inspect.signature`` sees) and tells the tracker about the call.
    One object per module, holding what each call needs, instead of a closure and its cells:
    entering creates a few objects per module, which the garbage collector keeps track of
    (and, promoted while the block runs, brings its full collections sooner)."""

    __slots__ = ("__wrapped__", "module", "own", "tracker")

    def __init__(self, tracker: ModuleTracker, module: nn.Module) -> None:
        # the instance's own forward, if someone set one: kept, and put back after the block
        self.own: Callable[..., Any] | None = module.__dict__.get("forward")
        self.__wrapped__ = self.own if self.own is not None else module.forward
        self.module = module
        self.tracker = tracker

    def __getattr__(self, name: str) -> Any:
        # Anything else is the module's own forward's (its __code__, which torch.export reads,
        # its __self__ and __func__), as for the bound method it stands for.
        # __wrapped__ not set yet: no recursion; and no __signature__, which would stop
        # inspect.signature at the function's own, self included, before the bound method
        if name in ("__wrapped__", "__signature__"):
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy of the module made in the block (copy.deepcopy, pickle, torch.save) is not
        # followed: it gets the forward the module has without the block, its own.
        # Only the standard library's callables: loading a saved model needs no opscope.
        if self.own is not None:
            return operator.itemgetter(0), ((self.own,),)
        return getattr, (self.module, "forward")


class _ScopeForward(_Followed):
    """A scope's forward: its operators are attributed to it."""

    __slots__ = ("scope", "sequential")

    def __init__(self, tracker: ModuleTracker, module: nn.Module, scope: int) -> None:
        super().__init__(tracker, module)
        self.scope = scope
        # A plain nn.Sequential runs no operator of its own, only its children: the mode is
        # left while it runs, so that its counted children need not leave it one by one
        # (each leaving costs more than a call's logging); its other children come back.
        self.sequential = type(module).forward is nn.Sequential.forward and self.own is None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _exporting():
            return self.__wrapped__(*args, **kwargs)
        tracker, scope = self.tracker, self.scope
        stack = tracker._threads.stack
        if not stack:  # a new forward pass of the model
            tracker.new_forward()
        calls = tracker._calls
        calls[scope] += 1
        stack.append((scope, calls[scope]))
        # A scope inside a counted module (a child its formula does not account for): the
        # operators' mode, left for the counted module, is back for the scope.
        mode = tracker.mode()
        boundary = None if mode is None or not _grad_enabled() else _boundary(args, kwargs)
        quiet = mode is not None and self.sequential and tracker.plain_children(self.module)
        # left only when it is the next to see an operator; back only when it is not on the
        # stack at all (under another mode, such as a FlopCounterMode entered in the block,
        # it sees every operator already)
        switched = mode is not None and (_on_top(mode) if quiet else not _on_stack(mode))
        if switched:
            if quiet:
                _pop_dispatch_mode(None)
            else:
                _push_dispatch_mode(mode)
        try:
            output = self.__wrapped__(*args, **kwargs)
        finally:
            if switched:
                if quiet:
                    _push_dispatch_mode(mode)
                else:
                    _pop_dispatch_mode(None)
            stack.pop()
        if boundary is not None:
            tracker.claim(scope, boundary, output)
        return output


class _SiteForward(_Followed):
    """A counted module's forward: its calls are logged, its operators counted by its
    formula."""

    __slots__ = ("index",)

    def __init__(self, tracker: ModuleTracker, module: nn.Module, index: int) -> None:
        super().__init__(tracker, module)
        self.index = index

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _exporting():
            return self.__wrapped__(*args, **kwargs)
        tracker, module, index = self.tracker, self.module, self.index
        timer, probe = tracker._timer, tracker._probe
        begun = timer.start(module, args) if timer is not None else 0
        flops = probe.begin() if probe is not None else 0
        stack = tracker._threads.stack
        if not stack:  # a new forward pass of the model (a counted module alone)
            tracker.new_forward()
        stack.append((_SITES - index, 0))
        # Its formula counts its operators: the mode is left while it runs, so that they cost
        # nothing to profile (a dispatch mode costs tens of µs per operator).
        mode = tracker.mode()
        boundary = None if mode is None or not _grad_enabled() else _boundary(args, kwargs)
        popped = mode is not None and _on_top(mode)
        if popped:
            _pop_dispatch_mode(None)
        try:
            output = self.__wrapped__(*args, **kwargs)
        finally:
            if popped:
                _push_dispatch_mode(mode)
            stack.pop()
        if probe is not None:
            probe.end(flops)
        if _jit_tracing():  # its shapes are traced values (an export returned above)
            return output
        # The hot path, a plain tensor in and out of a forward pass: the call's number is
        # found by a flat key of what it read, without building the logged call.
        code = key = None
        if (
            len(args) == 1
            and not kwargs
            and type(output) is torch.Tensor
            and type(args[0]) is torch.Tensor
            and _current_autograd_node() is None
            and maybe_current_level() is None
        ):
            first = args[0]
            try:
                key = (index, first.shape, first.dtype, output.shape, output.dtype, module.training)
            except RuntimeError:  # a nested tensor has no single shape
                key = None
            else:
                code = tracker.site_codes.get(key)
        if code is None:
            code = tracker.number_site_call(index, module, args, kwargs, output, key)
        log = tracker._log
        if timer is None:
            log.keep_code(code)
        else:
            timer.keep(begun, lambda: log.keep_code(code))
        if boundary is not None:
            tracker.claim(_SITES - index, boundary, output)
        return output


class _Released(_Followed):
    """A followed module's forward after its block: only the module's own runs."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)


# Each kind of forward, released: the same slots, so that an object can become one.
_RELEASED: dict[type[_Followed], type[_Followed]] = {
    kind: type(f"_Released{kind.__name__}", (_Released, kind), {"__slots__": ()})
    for kind in (_ScopeForward, _SiteForward)
}


_MODULE_CALL = nn.Module._call_impl.__code__
_PLAIN_CALL = nn.Module.__call__  # a module whose __call__ is overridden may run operators in it


def _in_a_module_call(tracker: ModuleTracker) -> bool:
    """Whether a call of a module foreign to ``tracker``'s model runs in this thread. Asked
    only for operators that run while no module of the model does (rare): then they may be
    another model's, whose work is not this model's. Not foreign: a module of the model (its
    own forward hooks run after its forward), a loss module (``nn.CrossEntropyLoss``), and a
    module without state of its own (a loss written as a plain ``nn.Module``, a transform):
    their work is the block's own, like ``F.cross_entropy``'s. Reads the Python stack,
    nothing else."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is _MODULE_CALL:
            module = frame.f_locals.get("self")
            own_work = isinstance(module, _Loss) or _followed_by(module, tracker)
            if not own_work and _has_state(module):
                return True
        frame = frame.f_back
    return False


def _has_state(module: nn.Module) -> bool:
    """Whether ``module`` holds what a model does: parameters or buffers (a teacher keeping
    its weights in buffers), or children other than loss modules (a quantized teacher's
    layers hold neither)."""
    if next(module.parameters(), None) is not None or next(module.buffers(), None) is not None:
        return True
    return any(not isinstance(child, _Loss) for child in module.children())


def _followed_by(module: nn.Module, tracker: ModuleTracker) -> bool:
    """Whether ``module`` is one of the modules ``tracker`` follows (its forward is
    ``tracker``'s, or runs it through other profilers' forwards set after it)."""
    forward = getattr(module, "__dict__", {}).get("forward")
    while isinstance(forward, _Followed):
        if forward.tracker is tracker:
            return True
        forward = forward.own
    return False


def _on_top(mode: TorchDispatchMode) -> bool:
    """Whether ``mode`` is the innermost dispatch mode, the next to see an operator."""
    depth = _len_dispatch_stack()
    return depth > 0 and _dispatch_stack_at(depth - 1) is mode


def _jit_tracing() -> bool:
    """Whether ``torch.jit.trace`` runs the model: tracing it (its shapes are traced values),
    or checking the trace (running the model and the traced graph again), not the user's
    forward passes."""
    return _tracing_state() is not None or _jit_trace._trace_module_map is not None


def _on_stack(mode: TorchDispatchMode) -> bool:
    """Whether ``mode`` is on this thread's dispatch mode stack, where every operator reaches
    it (through the modes above it)."""
    for depth in range(_len_dispatch_stack() - 1, -1, -1):  # innermost first: most often there
        if _dispatch_stack_at(depth) is mode:
            return True
    return False


def _logged(
    index: int,
    module: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    output: Any,
    phase: int,
) -> LoggedCall:
    """What the log keeps of a counted call: shapes, mode, vmap batch and phase."""
    # The hot path: the common single-tensor call is read inline.
    first = args[0] if len(args) == 1 and not kwargs else None
    if isinstance(first, torch.Tensor) and not first.is_nested:
        inputs: tuple[ShapeAndDtype, ...] = ((first.shape, first.dtype),)
    else:
        inputs = tensor_metas(_bound(module, args, kwargs) if kwargs else args)
    if isinstance(output, torch.Tensor) and not output.is_nested:
        outputs: tuple[ShapeAndDtype, ...] = ((output.shape, output.dtype),)
    else:
        outputs = tensor_metas(output)
    # under vmap, its parameters may be batched too (an ensemble's, by functional_call)
    batch = _vmap_batch((args, kwargs, module._parameters)) if _vmap_active() else 1
    return (index, inputs, outputs, module.training, batch, phase)


def _vmap_active() -> bool:
    """Whether some ``torch.vmap`` is running (a cheap check before looking at tensors)."""
    return maybe_current_level() is not None


class OpCapture(DispatchMode):
    """A dispatch mode that logs every ATen operator run inside the block but outside counted
    modules, under the innermost running module.

    An operator that has no formula is decomposed, as ``FlopCounterMode`` does, so that a
    composite (``einsum``, ``linear`` under ``no_grad``) is counted through the operators it
    runs; one that has neither is logged too, and listed as uncounted when results are read.
    With a coverage probe, the FlopCounterMode FLOPs of the operators logged here count as
    covered.
    """

    def __init__(self, log: CallLog, tracker: ModuleTracker, probe: CoverageProbe | None) -> None:
        super().__init__()
        self._log = log
        self._tracker = tracker
        self._probe = probe
        self._codes: dict[tuple[Any, ...], int] = {}  # fingerprint: the log's number

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        scope, scope_call, phase = self._tracker.phase()
        if (
            (phase != BACKWARD and scope <= _SITES)
            or (scope == OUTSIDE and phase == FORWARD and _in_a_module_call(self._tracker))
            or _jit_tracing()  # its shapes are traced values
            or _exporting()
        ):
            # Counted by a formula (in the forward: the backward of a counted module is
            # counted by operators); or a module foreign to the model (profiling part of
            # what runs): not this model's work.
            return func(*args, **kwargs)
        formula = op_formula_for(func)
        if formula is None:
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        probe = self._probe
        before = probe.total_flops if probe is not None else 0
        out = func(*args, **kwargs)
        if probe is not None and formula is not None:
            probe.counted_flops += probe.total_flops - before
        # an optimizer's step: its learning rate is not read
        coarse = formula is None or formula.coarse_scalars
        self._log.keep_code(self._code(func, scope, phase, args, kwargs, out, coarse), scope_call)
        if phase == FORWARD:
            self._tracker.note_parameters(args, scope)
        return out

    def _code(
        self,
        func: torch._ops.OpOverload,
        scope: int,
        phase: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        out: Any,
        coarse: bool,
    ) -> int:
        """The log's number of this operator call. Found by a cheap fingerprint of the call's
        metadata (its numbers ``coarse``-ly read): the :class:`LoggedOp` is built only for a
        call not seen before in the block, and its :class:`OpCall` only for one not seen
        before in the process, since building one costs several times the lookup."""
        try:
            described = (
                func,
                _fingerprint(args, coarse),
                _fingerprint(kwargs, coarse),
                _output_fingerprint(out),
            )
            key: tuple[Any, ...] | None = (scope, phase, described)
            code = self._codes.get(key)
        except Exception:  # noqa: BLE001 - a nested tensor, an uninitialised parameter, an
            described, key, code = None, None, None  # argument that cannot be a key
        if code is None:
            if coarse:
                args, kwargs = coarsened(args), coarsened(kwargs)
            call, out_dtypes = _description(described, args, kwargs, out)
            code = self._log.number(LoggedOp(scope, func, call, out_dtypes, phase))
            if key is not None:
                self._codes[key] = code
        return code
