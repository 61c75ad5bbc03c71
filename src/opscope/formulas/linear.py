"""Linear layers: exact multiplications plus additions, bias counted.

Each output element of ``nn.Linear`` is a dot product of ``in_features`` pairs:
``in_features`` multiplications, ``in_features - 1`` additions to sum them, and one more
addition when there is a bias (the Conv2d convention of ``docs/conventions.md`` with a 1x1
kernel). ``nn.Bilinear`` is evaluated as PyTorch contracts it, ``x1`` with the weight first,
then the result with ``x2``. See ``docs/formulas/linear.md``.

MACs (multiply-accumulates) are ``N * out * in`` for ``nn.Linear``, what ``FlopCounterMode``
counts (halved) for the ``mm``/``addmm`` it runs. ``nn.Bilinear`` has 0 MACs: its product runs
as ``aten._trilinear``, which ``FlopCounterMode`` has no formula for, and MACs are defined as
``FlopCounterMode``'s measure. For the same reason the matrix-vector and vector-vector
products ``mv`` and ``dot`` count operations but 0 MACs.

The matrix-multiply ATen operators (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``mv``, ``dot``,
``linear``, ``bilinear``...) are counted here too, with :func:`matmul_ops`. ``aten.matmul``
and ``aten.einsum`` are left to decompose into them: which of them ``matmul`` runs depends on
strides as well as shapes, and the views it adds cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op, vectors

aten = torch.ops.aten


def matmul_ops(rows: int, inner: int, cols: int) -> int:
    """Exact operations of a ``(rows, inner) @ (inner, cols)`` matrix product.

    Each of the ``rows * cols`` outputs is a dot product of ``inner`` pairs: ``inner``
    multiplications and ``inner - 1`` additions::

        ops = rows * cols * (2 * inner - 1)

    A dot product of no pairs is an empty sum: it costs nothing (not ``-1``).

    >>> matmul_ops(2, 3, 4)  # 8 dot products of 3 pairs: 3 products, 2 additions each
    40
    >>> matmul_ops(5, 0, 5)
    0
    """
    return rows * cols * max(2 * inner - 1, 0)


def linear_ops(*, batch: int, in_features: int, out_features: int, bias: bool) -> int:
    """Exact operations of one ``nn.Linear`` call over ``batch`` rows::

        with bias:    ops = N * out * 2 * in
        without bias: ops = N * out * (2 * in - 1)

    >>> linear_ops(batch=6, in_features=4, out_features=3, bias=True)  # 6 * 3 * (2 * 4)
    144
    >>> linear_ops(batch=6, in_features=4, out_features=3, bias=False)  # 6 * 3 * (2 * 4 - 1)
    126
    """
    bias_additions = batch * out_features if bias else 0
    return matmul_ops(batch, in_features, out_features) + bias_additions


def bilinear_ops(
    *, batch: int, in1_features: int, in2_features: int, out_features: int, bias: bool
) -> int:
    """Exact operations of one ``nn.Bilinear`` call, ``y_k = x1^T A_k x2 (+ b_k)``.

    Per output element, as PyTorch's ``_trilinear`` contracts it: ``t = x1^T A_k`` is
    ``in2`` dot products of ``in1`` pairs, then ``t . x2`` is one dot product of ``in2``
    pairs, then the bias::

        ops = N * out * (in2 * (2 * in1 - 1) + (2 * in2 - 1) [+ 1])
            = N * out * (2 * in1 * in2 + in2 - 1 [+ 1])

    >>> bilinear_ops(batch=2, in1_features=3, in2_features=5, out_features=7, bias=True)
    490
    """
    outputs = batch * out_features
    first = matmul_ops(outputs, in1_features, in2_features)  # x1^T A_k, for every (n, k)
    second = matmul_ops(outputs, in2_features, 1)  # (x1^T A_k) . x2
    return first + second + (outputs if bias else 0)


@dataclass(frozen=True)
class LinearConfig:
    """The static settings of an ``nn.Linear`` (a ``LazyLinear`` reads ``in_features=0``
    until its first call)."""

    in_features: int
    out_features: int
    bias: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> LinearConfig:
        """Read the settings of a ``torch.nn.Linear`` (or of a subclass)."""
        return cls(int(module.in_features), int(module.out_features), module.bias is not None)


@dataclass(frozen=True)
class BilinearConfig:
    """The static settings of an ``nn.Bilinear``."""

    in1_features: int
    in2_features: int
    out_features: int
    bias: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> BilinearConfig:
        """Read the settings of a ``torch.nn.Bilinear`` (or of a subclass)."""
        return cls(
            int(module.in1_features),
            int(module.in2_features),
            int(module.out_features),
            module.bias is not None,
        )


def linear_macs(config: LinearConfig, call: Call) -> int:
    """Multiply-accumulates of one ``Linear`` call: ``N * out * in`` (``FlopCounterMode / 2``).

    >>> linear_macs(LinearConfig(4, 3, True), Call(inputs=((6, 4),), outputs=((6, 3),)))
    72
    """
    return math.prod(call.input) * call.output[-1]


@register(nn.Linear, describe=LinearConfig.from_module, macs=linear_macs)
def count_linear(config: LinearConfig, call: Call) -> int:
    """Operations of one ``Linear`` call (also ``LazyLinear`` and
    ``NonDynamicallyQuantizableLinear``, which subclass it): :func:`linear_ops` with
    ``N`` = the product of all input dims but the last (1 for a 1-D input).

    Features come from the real shapes, so a lazy module is counted right on its first call.
    """
    return linear_ops(
        batch=math.prod(call.input[:-1]),
        in_features=call.input[-1],
        out_features=call.output[-1],
        bias=config.bias,
    )


@register(nn.Bilinear, describe=BilinearConfig.from_module)
def count_bilinear(config: BilinearConfig, call: Call) -> int:
    """Operations of one ``Bilinear(x1, x2)`` call: :func:`bilinear_ops` with ``N`` = the
    product of all output dims but the last (1 for 1-D inputs)."""
    input1, input2 = call.inputs[:2]
    return bilinear_ops(
        batch=math.prod(call.output[:-1]),
        in1_features=input1[-1],
        in2_features=input2[-1],
        out_features=call.output[-1],
        bias=config.bias,
    )


# -- ATen operators -----------------------------------------------------------------------


def _scaled_sum_ops(call: OpCall, outputs: int) -> int:
    """The operations of ``beta * self + alpha * product`` over ``outputs`` elements: one
    addition (none when ``beta == 0``: torch ignores ``self``), and one multiplication for each
    of ``beta`` and ``alpha`` that is not 1 (both keyword-only in every schema)."""
    beta = call.arg(3, "beta", 1)
    alpha = call.arg(4, "alpha", 1)
    if beta == 0:
        return outputs * int(alpha != 1)
    return outputs * (1 + int(beta != 1) + int(alpha != 1))


def _mm_sizes(call: OpCall, first: int) -> tuple[int, int, int, int]:
    """``(batch, rows, inner, cols)`` of the (batched) matrix product of the tensor arguments
    ``first`` and ``first + 1``: ``(B, M, K) @ (B, K, N)``, or ``(M, K) @ (K, N)`` with
    ``B = 1``."""
    left, right = call.args[first].shape, call.args[first + 1].shape
    return math.prod(left[:-2]), left[-2], left[-1], right[-1]


def count_mm(call: OpCall) -> int:
    """``mm(a, b)`` / ``bmm(a, b)``: ``B * M * N * (2K - 1)`` (:func:`matmul_ops`)."""
    batch, rows, inner, cols = _mm_sizes(call, 0)
    return batch * matmul_ops(rows, inner, cols)


def mm_macs(call: OpCall) -> int:
    """``B * M * N * K`` multiply-accumulates: ``FlopCounterMode``'s ``mm``/``bmm`` FLOPs / 2."""
    batch, rows, inner, cols = _mm_sizes(call, 0)
    return batch * rows * inner * cols


def addmm_macs(call: OpCall) -> int:
    """The product's ``B * M * N * K`` (the added ``self`` is no product)."""
    batch, rows, inner, cols = _mm_sizes(call, 1)
    return batch * rows * inner * cols


register_op(aten.mm, aten.bmm, family="matmul", macs=mm_macs)(count_mm)


@register_op(aten.addmm, aten.baddbmm, family="matmul", macs=addmm_macs)
def count_addmm(call: OpCall) -> int:
    """``addmm(self, a, b, beta=1, alpha=1)`` / ``baddbmm``: the product (:func:`count_mm`)
    plus ``beta * self + alpha * product`` per output element (:func:`_scaled_sum_ops`):
    ``nn.Linear``'s bias addition when ``beta == alpha == 1``."""
    batch, rows, inner, cols = _mm_sizes(call, 1)
    outputs = batch * rows * cols
    return batch * matmul_ops(rows, inner, cols) + _scaled_sum_ops(call, outputs)


@register_op(*aten_ops("mv", "dot", "vdot"), family="matmul")
def count_mv(call: OpCall) -> int:
    """``mv(A, x)``: ``M`` dot products of ``K`` pairs; ``dot(x, y)``: one. 0 MACs:
    ``FlopCounterMode`` does not count them."""
    first = call.input
    return matmul_ops(first[0] if len(first) == 2 else 1, first[-1], 1)


@register_op(*aten_ops("addmv"), family="matmul")
def count_addmv(call: OpCall) -> int:
    """``addmv(self, A, x, beta=1, alpha=1)``: :func:`count_mv` plus the scaled sum."""
    rows, inner = call.args[1].shape
    return matmul_ops(rows, inner, 1) + _scaled_sum_ops(call, rows)


def _linear_sizes(call: OpCall) -> tuple[int, int, tuple[int, ...]]:
    """``(N, in_features, weight shape)`` of a ``linear`` call: ``N`` rows of the input (of
    every component of a nested input)."""
    rows, in_features = vectors(call.args[0])
    return rows, in_features, call.args[1].shape


def linear_op_macs(call: OpCall) -> int:
    """``N * out * in`` for a 2-D weight; 0 for a 1-D weight, which torch multiplies with
    ``mv``/``dot`` (not counted by ``FlopCounterMode``)."""
    rows, in_features, weight = _linear_sizes(call)
    return rows * in_features * weight[0] if len(weight) == 2 else 0


@register_op(aten.linear, family="matmul", macs=linear_op_macs)
def count_linear_op(call: OpCall) -> int:
    """``linear(input, weight, bias=None)`` (``F.linear``): :func:`linear_ops`, with ``N``
    the product of the input's leading dims (summed over the components of a nested input)
    and a bias iff one is given, exactly the count of ``nn.Linear`` (a 1-D weight gives one
    output per row)."""
    rows, in_features, weight = _linear_sizes(call)
    return linear_ops(
        batch=rows,
        in_features=in_features,
        out_features=weight[0] if len(weight) == 2 else 1,
        bias=call.tensor(2, "bias") is not None,
    )


@register_op(aten.bilinear, family="matmul")
def count_bilinear_op(call: OpCall) -> int:
    """``bilinear(x1, x2, weight, bias=None)`` (``F.bilinear``): :func:`bilinear_ops`, the
    count of ``nn.Bilinear``; 0 MACs, as for the module."""
    weight = call.args[2].shape
    return bilinear_ops(
        batch=math.prod(call.output[:-1]),
        in1_features=weight[1],
        in2_features=weight[2],
        out_features=weight[0],
        bias=call.tensor(3, "bias") is not None,
    )


def _sumproduct_pair_ops(
    left: list[int], right: list[int], sum_dims: set[int]
) -> tuple[int, list[int]]:
    """Operations and output shape of torch's ``sumproduct_pair(left, right, sum_dims,
    keepdim=True)`` on two tensors of the same rank: a dim summed over that only one side has
    (size > 1) is summed on that side first (``size - 1`` additions per sum); then every output
    element is a dot product over the dims both sides have, ``K`` pairs (a plain product when
    ``K = 1``)."""
    left, right = list(left), list(right)
    ops, contracted = 0, 1
    for dim in sorted(sum_dims):
        if left[dim] != 1 and right[dim] != 1:
            contracted *= left[dim]
        else:
            side = left if left[dim] != 1 else right
            ops += math.prod(side) - math.prod(side) // side[dim]
            side[dim] = 1
    shape = [1 if dim in sum_dims else max(a, b) for dim, (a, b) in enumerate(zip(left, right))]
    return ops + math.prod(shape) * (2 * contracted - 1), shape


def trilinear_ops(
    shapes: Sequence[Sequence[int]],
    expands: Sequence[Sequence[int]],
    sumdim: Sequence[int],
    unroll_dim: int = 1,
) -> int:
    """Exact operations of ``_trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim,
    unroll_dim)``, the product of three tensors (each unsqueezed at its ``expand`` dims) summed
    over ``sumdim``, as torch evaluates it: for each of the ``U`` slices along ``unroll_dim``,
    ``i1 * i2`` summed over the ``sumdim`` dims ``i3`` lacks, then times ``i3`` summed over the
    others (:func:`_sumproduct_pair_ops` each); when ``unroll_dim`` is itself summed over, the
    ``U`` partial results are added (``(U - 1) * numel`` additions).

    ``nn.Bilinear``'s forward is ``_trilinear(x1, weight, x2, [1, 3], [0], [1, 2], [2, 3])``,
    :func:`bilinear_ops` without the bias; its backward runs ``_trilinear`` three times more,
    the gradient in place of one operand.

    >>> trilinear_ops([(2, 3), (7, 3, 5), (2, 5)], [[1, 3], [0], [1, 2]], [2, 3])  # Bilinear
    476
    >>> bilinear_ops(batch=2, in1_features=3, in2_features=5, out_features=7, bias=False)
    476
    """
    if any(not math.prod(shape) for shape in shapes):
        return 0
    total = len(shapes[0]) + len(expands[0])

    def unsqueezed(shape: Sequence[int], expand: Sequence[int]) -> list[int]:
        sizes = iter(shape)
        return [1 if dim in expand else next(sizes) for dim in range(total)]

    first, second, third = (unsqueezed(s, e) for s, e in zip(shapes, expands, strict=True))
    # the unrolled size, as torch reads it: from the last operand not expanded there
    unroll = next(
        o[unroll_dim] for o, e in zip((third, second, first), expands[::-1]) if unroll_dim not in e
    )
    for operand in (first, second, third):  # one slice along the unrolled dim
        operand[unroll_dim] = 1
    summed = set(sumdim) - {unroll_dim}
    left = {dim for dim in summed if dim in expands[2]}
    pair_ops, pair = _sumproduct_pair_ops(first, second, left)
    triple_ops, result = _sumproduct_pair_ops(pair, third, summed - left)
    accumulation = (unroll - 1) * math.prod(result) if unroll_dim in sumdim else 0
    return unroll * (pair_ops + triple_ops) + accumulation


@register_op(aten._trilinear, family="matmul")
def count_trilinear(call: OpCall) -> int:
    """``_trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim, unroll_dim=1)``, as
    ``bilinear`` calls it (``x1``, ``weight``, ``x2``: :func:`bilinear_ops` without the bias,
    which ``bilinear`` adds with a separate ``add``) and as its backward calls it:
    :func:`trilinear_ops`. 0 MACs."""
    return trilinear_ops(
        [meta.shape for meta in call.args[:3]],
        [call.arg(3, "expand1"), call.arg(4, "expand2"), call.arg(5, "expand3")],
        call.arg(6, "sumdim"),
        call.arg(7, "unroll_dim", 1),
    )
