"""Linear layers: exact multiplications plus additions, bias counted.

Each output element of ``nn.Linear`` is a dot product of ``in_features`` pairs:
``in_features`` multiplications, ``in_features - 1`` additions to sum them, and one more
addition when there is a bias (the Conv2d convention of ``docs/conventions.md`` with a 1x1
kernel). ``nn.Bilinear`` is evaluated as PyTorch contracts it, ``x1`` with the weight first,
then the result with ``x2``. See ``docs/formulas/linear.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from opscope.formulas.registry import Call, register


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


@register(nn.Linear, describe=LinearConfig.from_module)
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
