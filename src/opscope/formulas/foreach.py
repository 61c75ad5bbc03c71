"""Lists of tensors: the ``_foreach_*`` operators, and the fused optimizer steps.

``torch._foreach_add_(params, grads, alpha=-lr)`` applies one element-wise operator to each
tensor of its lists: it costs what the operator costs on each tensor, summed. Every
``_foreach_<name>`` (and in-place ``_foreach_<name>_``) is counted with the formula of
``aten.<name>`` (:mod:`opscope.formulas.elementwise`, :mod:`~opscope.formulas.activation`,
:mod:`~opscope.formulas.reduction`, :mod:`~opscope.formulas.memory`), applied to each tensor's
call: the ``i``-th tensor of every list argument, the ``i``-th number of a list of scalars, a
scalar or a single tensor as given. So ``alpha`` and ``value`` multiply as the element-wise
family counts them (``add(x, y, alpha=2)``: 2 per element; ``addcdiv(x, a, b, value=v)``: 3
when ``v != 1``); a scale given as a tensor (``_foreach_addcdiv_.Tensor``'s ``scalars``) is a
number opscope does not read, so it always multiplies. ``_foreach_norm`` and ``_foreach_max``
reduce each tensor to one number.

This is what the optimizers run (``torch.optim.SGD``, ``Adam``, ``AdamW``... with
``foreach=True``, the default on CUDA); their for-loop versions (``foreach=False``) run the
same operators tensor by tensor (``add_``, ``mul_``, ``lerp_``, ``addcdiv_``, ``sqrt``...),
already counted by their families, and count the same. The ``fused=True`` steps
(``_fused_adam_``, ``_fused_adamw_``) are one kernel over all the lists, counted per element as
the kernel evaluates the update: see :func:`adam_step_ops_per_element` and
``docs/formulas/optimizer.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch

from opscope.formulas import activation, elementwise, memory, reduction  # noqa: F401  (registered first)
from opscope.formulas.registry import (
    OTHER_NUMBER,
    OpCall,
    OpCountFn,
    OpFormula,
    TensorMeta,
    aten_ops,
    register_op,
    registered_ops,
)

aten = torch.ops.aten

UNREAD_SCALE = OTHER_NUMBER
"""A scale opscope does not read (a per-tensor number held in a tensor): not 1, so a
formula counts its multiplication (the registry's "another number")."""

REDUCTIONS = frozenset({"max", "norm"})
"""The ``_foreach_<name>`` operators that reduce each tensor to one number."""


def element_output(base: str, tensors: list[TensorMeta]) -> tuple[int, ...]:
    """The output shape of ``aten.<base>`` on one tensor of each list: one number for a
    reduction (:data:`REDUCTIONS`), ``(M, N)`` for ``mm`` of ``(M, K)`` by ``(K, N)``, else the
    broadcast shape of the tensors (element-wise)."""
    if base in REDUCTIONS:
        return ()
    if base == "mm":
        return (tensors[0].shape[0], tensors[1].shape[1])
    return tuple(torch.broadcast_shapes(*(t.shape for t in tensors)))


def _element(value: Any, index: int) -> Any:
    """The ``index``-th entry of a list argument (of tensors or scalars); anything else as
    given."""
    return value[index] if isinstance(value, tuple) else value


def _list_length(call: OpCall) -> int:
    """The number of tensors in the call's lists (the first list argument's length)."""
    for value in (*call.args, *(value for _, value in call.kwargs)):
        if isinstance(value, tuple):
            return len(value)
    return 0


def element_calls(call: OpCall, base: str) -> Iterable[OpCall]:
    """The call of ``aten.<base>`` on each tensor of a ``_foreach_<base>`` call: the ``i``-th
    entry of every list argument, the others as given, and the output of
    :func:`element_output`.

    >>> x, y = TensorMeta((2, 3), torch.float32), TensorMeta((4,), torch.float32)
    >>> [c.args for c in element_calls(OpCall(((x, y), 2.0), (("alpha", 3),)), "add")]
    [(TensorMeta(shape=(2, 3), dtype=torch.float32), 2.0), (TensorMeta(shape=(4,), dtype=torch.float32), 2.0)]
    """
    for index in range(_list_length(call)):
        args = tuple(_element(value, index) for value in call.args)
        kwargs = tuple((name, _element(value, index)) for name, value in call.kwargs)
        tensors = [v for v in (*args, *(v for _, v in kwargs)) if isinstance(v, TensorMeta)]
        yield OpCall(args, kwargs, (element_output(base, tensors),))


def count_foreach(element: OpCountFn, base: str, call: OpCall) -> int:
    """A ``_foreach_<base>`` call: ``element``, the formula of ``aten.<base>``, summed over
    the tensors of its lists (:func:`element_calls`)."""
    return sum(element(each) for each in element_calls(call, base))


def count_foreach_tensor_scale(element: OpCountFn, call: OpCall) -> int:
    """``_foreach_addcmul(self, tensor1, tensor2, scalars)`` / ``_foreach_addcdiv`` with the
    per-tensor ``scalars`` in a tensor: each multiplication by its scale counted
    (:data:`UNREAD_SCALE`)."""
    args = (*call.args[:3], UNREAD_SCALE)
    return count_foreach(element, "addcmul", OpCall(args, call.kwargs, call.outputs))


def _foreach_names() -> list[str]:
    """The names of the ``_foreach_*`` operators this torch has."""
    schemas = torch._C._jit_get_all_schemas()
    return sorted(
        {s.name[len("aten::") :] for s in schemas if s.name.startswith("aten::_foreach_")}
    )


def _element_formula(name: str) -> OpFormula | None:
    """The formula of ``aten.<base>`` (or of its in-place ``<base>_``) for ``_foreach_<base>``
    (``_foreach_<base>_``), or None when it has none."""
    base = name[len("_foreach_") :].removesuffix("_")
    registered = registered_ops()
    for candidate in aten_ops(base, base + "_"):
        formula = registered.get(candidate)
        if formula is not None:
            return formula
    return None


FOREACH_OPS: dict[str, str] = {}
"""Every ``_foreach_*`` operator counted, and the family of the element-wise operator whose
formula counts it."""

for _name in _foreach_names():
    _formula = _element_formula(_name)
    _packet = getattr(aten, _name)
    if _formula is None:
        continue
    _base = _name[len("_foreach_") :].removesuffix("_")
    # the numbers are read as the element's formula reads them (a norm's ord exactly)
    _register = partial(register_op, family="foreach", coarse_scalars=_formula.coarse_scalars)
    _register(_packet)(partial(count_foreach, _formula.count, _base))
    FOREACH_OPS[_name] = _base
    if _base in ("addcmul", "addcdiv") and "Tensor" in _packet.overloads():
        _register(_packet.Tensor)(partial(count_foreach_tensor_scale, _formula.count))


# -- fused optimizer steps ------------------------------------------------------------------

ADAM_OPS_PER_ELEMENT = 13
"""One Adam update of an element, as the fused kernel (and the foreach and for-loop paths)
evaluate it: ``m = beta1 * m + (1 - beta1) * g`` (3: the foreach ``lerp``), ``v = beta2 * v +
(1 - beta2) * g * g`` (4), ``sqrt(v) / sqrt(bias_correction2) + eps`` (3), ``p - step_size * m
/ denom`` (3: the foreach ``addcdiv``). The bias corrections and the step size are per-tensor
numbers worked out from the step count, not per element."""


def adam_step_ops_per_element(
    *, decoupled: bool, weight_decay: float, amsgrad: bool, grad_scale: bool = False
) -> int:
    """Operations per parameter element of one Adam (``decoupled=False``) or AdamW step::

        13                    (ADAM_OPS_PER_ELEMENT)
        + 2 for Adam's weight decay     g + weight_decay * p
        + 1 for AdamW's weight decay    p * (1 - lr * weight_decay)
        + 1 with amsgrad                max(v_max, v)
        + 1 with a grad scale           g / scale (fused kernels, under AMP)

    >>> adam_step_ops_per_element(decoupled=True, weight_decay=0.01, amsgrad=False)
    14
    """
    decay = 0 if not weight_decay else (1 if decoupled else 2)
    return ADAM_OPS_PER_ELEMENT + decay + int(amsgrad) + int(grad_scale)


def count_fused_adam(decoupled: bool, call: OpCall) -> int:
    """``_fused_adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *,
    lr, beta1, beta2, weight_decay, eps, amsgrad, maximize, grad_scale, found_inf)`` (and
    ``_fused_adamw_``): :func:`adam_step_ops_per_element` for every element of the parameters
    (``maximize`` only flips a sign; the step counts are incremented by a separate
    ``_foreach_add_``)."""
    per_element = adam_step_ops_per_element(
        decoupled=decoupled,
        weight_decay=float(call.arg(99, "weight_decay", 0.0)),
        amsgrad=bool(call.arg(99, "amsgrad", False)),
        grad_scale=call.tensor(99, "grad_scale") is not None,
    )
    return per_element * sum(math.prod(meta.shape) for meta in call.args[0])


# A fused step reads its numbers coarsely: a weight decay or none, a momentum or none.
_register_step = partial(register_op, family="foreach", coarse_scalars=True)
_register_step(*aten_ops("_fused_adam_", "_fused_adam"))(partial(count_fused_adam, False))
_register_step(*aten_ops("_fused_adamw_", "_fused_adamw"))(partial(count_fused_adam, True))


def sgd_step_ops_per_element(
    *,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    first_step: bool,
    grad_scale: bool = False,
) -> int:
    """Operations per parameter element of one SGD step, as the fused kernel, the foreach
    and the for-loop paths evaluate it::

        2                                       p - lr * g
        + 2 with weight decay                   g + weight_decay * p
        + 2 with momentum, after the first step b = momentum * b + (1 - dampening) * g
          + 1 when dampening is not 0           (a multiplication by 1 is not counted, as
                                                 for the element-wise family's alpha)
        + 2 with nesterov                       g + momentum * b
        + 1 with a grad scale                   g / scale (fused kernels, under AMP)

    The first step copies the gradient into the momentum buffer: free.

    >>> sgd_step_ops_per_element(weight_decay=0.0, momentum=0.9, dampening=0.0,
    ...                          nesterov=True, first_step=False)
    6
    """
    ops = 2 + (2 if weight_decay else 0) + int(grad_scale)
    if momentum:
        ops += 0 if first_step else 2 + int(dampening != 0)
        ops += 2 if nesterov else 0
    return ops


@_register_step(*aten_ops("_fused_sgd_", "_fused_sgd"))
def count_fused_sgd(call: OpCall) -> int:
    """``_fused_sgd_(params, grads, momentum_buffer_list, *, weight_decay, momentum, lr,
    dampening, nesterov, maximize, is_first_step, grad_scale, found_inf)``:
    :func:`sgd_step_ops_per_element` for every element of the parameters."""
    per_element = sgd_step_ops_per_element(
        weight_decay=float(call.arg(99, "weight_decay", 0.0)),
        momentum=float(call.arg(99, "momentum", 0.0)),
        dampening=float(call.arg(99, "dampening", 0.0)),
        nesterov=bool(call.arg(99, "nesterov", False)),
        first_step=bool(call.arg(99, "is_first_step", False)),
        grad_scale=call.tensor(99, "grad_scale") is not None,
    )
    return per_element * sum(math.prod(meta.shape) for meta in call.args[0])
