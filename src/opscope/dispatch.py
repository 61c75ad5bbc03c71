"""The base of opscope's dispatch modes: one that ``torch.compile`` leaves alone at no cost;
and torch's own lazily disabled functions, disabled without importing ``torch._dynamo``.

``TorchDispatchMode`` wraps each subclass's ``__torch_dispatch__`` in ``torch._dynamo.disable``
(so that a model compiled while the mode is on never traces the mode's own frames). That
wrapper imports ``torch._dynamo`` at the mode's first operator, about 1.7 s on 2 cores in a
process that has not imported it, and costs about 1 µs per operator. :class:`DispatchMode`
gets the same protection from dynamo's frame-evaluation API in ``torch._C`` instead: the
method's code is marked, once, as never compiled, it and every frame it calls.
"""

from __future__ import annotations

import gc
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def skipped_by_dynamo(function: Callable[..., Any]) -> bool:
    """Mark ``function``'s frames, and every frame they call, as never compiled by
    ``torch.compile``, as ``torch._dynamo.disable(recursive=True)`` does, without importing
    ``torch._dynamo``. False where that API is missing (an older torch), nothing marked."""
    eval_frame = getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None)
    try:
        skip = eval_frame._FrameAction.SKIP  # type: ignore[union-attr]
        strategy = eval_frame._FrameExecStrategy(skip, skip)  # type: ignore[union-attr]
        eval_frame.set_code_exec_strategy(function.__code__, strategy)  # type: ignore[union-attr]
    except (AttributeError, TypeError):
        return False
    return True


class DispatchMode(TorchDispatchMode):
    """A ``TorchDispatchMode`` whose ``__torch_dispatch__`` is marked skipped by dynamo when
    the subclass is made, instead of wrapped. Where marking is not possible (an older torch,
    a decorated method), torch's wrapper stays."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        dispatch = cls.__dict__.get("__torch_dispatch__")
        # Only a method's own code: a decorated one's is its decorator's wrapper's, shared by
        # every function that decorator wraps, which would all be marked.
        own_code = getattr(getattr(dispatch, "__code__", None), "co_name", None)
        cls._marked_skipped = own_code == "__torch_dispatch__" and skipped_by_dynamo(dispatch)
        super().__init_subclass__(**kwargs)  # asks _should_skip_dynamo whether to wrap

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return not cls.__dict__.get("_marked_skipped", False)


def lazy_dynamo_disables() -> tuple[types.FunctionType, ...]:
    """The wrappers ``torch._disable_dynamo`` made in this process (torch's Python meta
    kernels, ``cat``, ``stack``, ``mean``, ``mul`` ..., are such): each imports
    ``torch._dynamo``, about 1.6 s on 2 cores, at its first call, to wrap the function it
    stands for in ``torch._dynamo.disable``. Found among the objects the garbage collector
    tracks (not those frozen by ``gc.freeze``); none where torch has no such wrapper."""
    try:
        from torch._compile import _disable_dynamo

        code = _disable_dynamo(lambda: None).__code__
    except (ImportError, AttributeError):  # a torch without it
        return ()
    return tuple(
        item
        for item in gc.get_objects()
        if type(item) is types.FunctionType and item.__code__ is code
    )


def disable_without_dynamo(wrappers: Sequence[types.FunctionType]) -> None:
    """Give the function each of ``wrappers`` stands for what ``torch._dynamo.disable``
    would give it, without importing dynamo: its code marked never compiled, with every
    frame it calls (:func:`skipped_by_dynamo`), kept where the wrapper looks for it first.

    Only for a process that never compiles (one of :func:`opscope.compare.compare`'s
    workers): a compiled function would trace through the marked one, where it would have
    found a disabled wrapper. A wrapper of another form, or not recursive, is left as it is.
    """
    for wrapper in wrappers:
        cells = dict(zip(wrapper.__code__.co_freevars, wrapper.__closure__ or ()))
        try:
            function, recursive = cells["fn"].cell_contents, cells["recursive"].cell_contents
        except (KeyError, ValueError):  # another form, or a cell still empty
            continue
        if (
            recursive is True
            and getattr(function, "__dynamo_disable", None) is None
            and skipped_by_dynamo(function)
        ):
            function.__dynamo_disable = function
