"""Reductions reached as ATen operators: sums, means, extrema, variances, norms, scans.

A reduction maps groups of ``R`` input elements to one output element each, so a call with
``numel(input)`` inputs and ``numel(output)`` outputs reduces groups of
``R = numel(input) / numel(output)``; every group costs the same, a function of ``R`` alone
(:data:`OPS_PER_GROUP`)::

    ops = numel(output) * per_group(R)        (0 for an empty group or an empty output)

``dim``, ``keepdim`` and ``dtype`` only decide the shapes, so they enter through them. The
per-group costs agree with the normalisations (``docs/formulas/norm.md``): a mean is ``R - 1``
additions and a division (``R``), a biased or corrected variance is a mean, ``R`` centring
subtractions, ``R`` squares, ``R - 1`` additions and a division (``4R``). Scans
(``cumsum``, ``cumprod``) keep the input's shape: each row of length ``R`` along ``dim``
costs ``R - 1`` operations. As in the softmax family, the maximum that ``logsumexp``
subtracts for numerical stability is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType

import torch

from opscope.formulas.registry import OpCall, aten_ops, register_op

aten = torch.ops.aten

PerGroup = Callable[[int], int]

OPS_PER_GROUP: Mapping[str, PerGroup] = MappingProxyType(
    {
        "sum": lambda r: r - 1,  # additions
        "nansum": lambda r: r - 1,
        "prod": lambda r: r - 1,  # multiplications
        "mean": lambda r: r,  # r - 1 additions, 1 division
        "amax": lambda r: r - 1,  # comparisons
        "amin": lambda r: r - 1,
        "max": lambda r: r - 1,  # max() and max(dim), values and indices
        "min": lambda r: r - 1,
        "argmax": lambda r: r - 1,
        "argmin": lambda r: r - 1,
        "aminmax": lambda r: 2 * (r - 1),
        "any": lambda r: r - 1,  # logical or
        "all": lambda r: r - 1,
        "count_nonzero": lambda r: 2 * r - 1,  # r comparisons, r - 1 additions
        "logsumexp": lambda r: 2 * r,  # r exp, r - 1 additions, 1 log
        "var": lambda r: 4 * r,  # mean r, centring r, squares r, r - 1 additions, 1 division
        "var_mean": lambda r: 4 * r,
        "std": lambda r: 4 * r + 1,  # the variance, then 1 square root
        "std_mean": lambda r: 4 * r + 1,
    }
)
"""Operations per group of ``R`` reduced elements, by ATen operator name."""


def reduction_ops(input_numel: int, output_numel: int, per_group: PerGroup) -> int:
    """Exact operations of reducing ``input_numel`` elements to ``output_numel`` groups::

        ops = output_numel * per_group(input_numel / output_numel)

    >>> reduction_ops(2 * 64 * 49, 2 * 64, OPS_PER_GROUP["mean"])  # a global average pool
    6272
    >>> reduction_ops(0, 3, OPS_PER_GROUP["sum"])  # sums of empty groups cost nothing
    0
    """
    if not output_numel or not input_numel:
        return 0
    return output_numel * max(per_group(input_numel // output_numel), 0)


def count_reduction(per_group: PerGroup, call: OpCall) -> int:
    """A reduction operator whose groups cost ``per_group(R)``: :func:`reduction_ops` on
    the call's input and (first) output."""
    return reduction_ops(math.prod(call.input), math.prod(call.output), per_group)


for _name, _per_group in OPS_PER_GROUP.items():
    register_op(*aten_ops(_name), family="reduction")(partial(count_reduction, _per_group))


def vector_norm_per_group(order: float) -> PerGroup:
    """Operations of the ``order``-norm of ``R`` values (absolute values are free):

    * ``0``: ``R`` comparisons with zero and ``R - 1`` additions;
    * ``1``: ``R - 1`` additions;
    * ``inf``, ``-inf``: ``R - 1`` comparisons;
    * ``2``: ``R`` squares, ``R - 1`` additions, 1 square root: ``2R``;
    * any other ``p``: ``R`` powers, ``R - 1`` additions, 1 power ``1/p``: ``2R``.

    >>> [vector_norm_per_group(p)(5) for p in (0, 1, 2, 3, float("inf"))]
    [9, 4, 10, 10, 4]
    """
    if order == 0:
        return lambda r: 2 * r - 1
    if order == 1 or math.isinf(order):
        return lambda r: r - 1
    return lambda r: 2 * r


@register_op(*aten_ops("linalg_vector_norm"), family="reduction")
def count_vector_norm(call: OpCall) -> int:
    """``linalg_vector_norm(self, ord=2, dim, keepdim)`` (what ``F.normalize`` and
    ``torch.linalg.vector_norm`` run): :func:`vector_norm_per_group` per output element."""
    return count_reduction(vector_norm_per_group(float(call.arg(1, "ord", 2))), call)


@register_op(aten.norm, family="reduction")
def count_norm(call: OpCall) -> int:
    """``norm(self, p=2, dim, keepdim)`` (``Tensor.norm``): as :func:`count_vector_norm`
    (``p=None`` is 2, the Frobenius norm of a matrix)."""
    order = call.arg(1, "p", 2)
    return count_reduction(vector_norm_per_group(2.0 if order is None else float(order)), call)


@register_op(*aten_ops("cumsum", "cumsum_", "cumprod", "cumprod_"), family="reduction")
def count_scan(call: OpCall) -> int:
    """``cumsum(self, dim)`` / ``cumprod``: each row of ``R`` elements along ``dim`` takes
    ``R - 1`` additions (multiplications): ``numel - numel / R`` in all.

    >>> from opscope.formulas.registry import TensorMeta
    >>> count_scan(OpCall((TensorMeta((4, 5), torch.float32), 1), (), ((4, 5),)))
    16
    """
    shape = call.input
    numel = math.prod(shape)
    length = shape[call.arg(1, "dim") % len(shape)] if shape else 1
    return numel - numel // length if length else 0
