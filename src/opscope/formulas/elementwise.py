"""Point-wise arithmetic, comparisons and elementary functions reached as ATen operators.

``x + y`` residuals, ``x * scale``, ``torch.exp``, ``x > 0``, ``clamp``... are counted per
*output* element, so broadcasting is accounted for: adding a ``(C,)`` bias to an ``(N, C)``
tensor is ``N * C`` additions. Each output element costs the operations of its scalar
definition, by the project convention (one per multiply, add, subtract, divide, compare, or
elementary-function evaluation), with the activation family's rules
(``docs/formulas/activation.md``):

* sign flips and absolute values are free (``neg``, ``abs``: 0);
* a scalar argument that multiplies is counted when it is not 1: ``add(x, y, alpha=2)`` is
  ``x + 2 * y``, two operations per element; ``addcmul(x, a, b, value=v)`` three;
* ``pow`` with any exponent, ``sqrt``, ``exp``, ``log``, ``sin``, ``erf``, rounding
  (``floor``, ``round``, ...) are one elementary function each; ``rsqrt`` is a square root and a
  division (2), as the normalisations count it.

In-place variants (``add_``, ``mul_``...) count as their out-of-place operator. Activations
(``relu``, ``sigmoid``, ``tanh``...) are in :mod:`opscope.formulas.activation`; selections by a
given mask (``where``, ``masked_fill``) move data and are in :mod:`opscope.formulas.memory`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from types import MappingProxyType

import torch

from opscope.formulas.activation import elementwise_ops, per_element, with_inplace
from opscope.formulas.registry import OpCall, aten_ops, register_op

aten = torch.ops.aten

# Every formula here reads a number argument only as 1 or not (alpha, value) or given or not
# (a clamp's bounds): the calls are logged with numbers coarsened.
_register = partial(register_op, family="elementwise", coarse_scalars=True)

OPS_PER_OUTPUT_ELEMENT: Mapping[str, int] = MappingProxyType(
    {
        # One arithmetic operation.
        "mul": 1, "multiply": 1, "true_divide": 1, "reciprocal": 1, "square": 1,
        # One comparison (or one logical/bitwise operation, which compares bits).
        "eq": 1, "ne": 1, "lt": 1, "le": 1, "gt": 1, "ge": 1, "greater": 1, "greater_equal": 1,
        "less": 1, "less_equal": 1, "not_equal": 1, "maximum": 1, "minimum": 1, "fmax": 1,
        "fmin": 1, "clamp_min": 1, "clamp_max": 1, "isnan": 1, "isinf": 1, "isfinite": 1,
        "isposinf": 1, "isneginf": 1, "signbit": 1, "logical_not": 1, "logical_and": 1,
        "logical_or": 1, "logical_xor": 1, "bitwise_not": 1, "bitwise_and": 1,
        "bitwise_or": 1, "bitwise_xor": 1,
        # sign(x): x > 0 and x < 0 pick -1, 0 or 1.
        "sign": 2, "sgn": 2,
        # One elementary function.
        "exp": 1, "exp2": 1, "expm1": 1, "log": 1, "log2": 1, "log10": 1, "log1p": 1,
        "sqrt": 1, "sin": 1, "cos": 1, "tan": 1, "asin": 1, "acos": 1, "atan": 1, "atan2": 1,
        "sinh": 1, "cosh": 1, "asinh": 1, "acosh": 1, "atanh": 1, "erf": 1, "erfc": 1,
        "erfinv": 1, "lgamma": 1, "digamma": 1, "pow": 1, "float_power": 1, "floor": 1,
        "ceil": 1, "round": 1, "trunc": 1, "fix": 1,
        # Compositions.
        "rsqrt": 2,  # 1 / sqrt(x)
        "frac": 2,  # x - trunc(x)
        "floor_divide": 2,  # floor(x / y)
        "xlogy": 2,  # x * log(y)
        "remainder": 4, "fmod": 4,  # x - y * floor(x / y) (trunc for fmod)
        "hypot": 4,  # sqrt(x * x + y * y)
        "lerp": 3,  # x + w * (y - x)
        # Sign flips and absolute values: free.
        "neg": 0, "negative": 0, "positive": 0, "abs": 0, "absolute": 0, "conj_physical": 0,
    }
)  # fmt: skip
"""Operations per output element of each point-wise operator (and its in-place ``name_``)."""

for _name, _cost in OPS_PER_OUTPUT_ELEMENT.items():
    _register(*with_inplace(_name))(per_element(_cost))


def _scaled(call: OpCall, index: int, name: str) -> int:
    """1 when the scalar argument ``name`` multiplies (is not 1), else 0."""
    return int(call.arg(index, name, 1) != 1)


@_register(*with_inplace("add", "sub", "subtract", "rsub"))
def count_add(call: OpCall) -> int:
    """``add(self, other, alpha=1)`` (``sub``, ``rsub`` alike): one addition per output
    element, plus one multiplication by ``alpha`` when it is not 1.

    >>> from opscope.formulas.registry import TensorMeta
    >>> x, b = TensorMeta((4, 3), torch.float32), TensorMeta((3,), torch.float32)
    >>> count_add(OpCall((x, b), (), ((4, 3),))), count_add(OpCall((x, b, 2), (), ((4, 3),)))
    (12, 24)
    """
    return elementwise_ops(call.output, 1 + _scaled(call, 2, "alpha"))


@_register(*with_inplace("div", "divide"))
def count_div(call: OpCall) -> int:
    """``div(self, other, rounding_mode=None)``: one division per output element, plus the
    rounding (``'floor'`` or ``'trunc'``) when there is one."""
    return elementwise_ops(call.output, 1 + int(call.arg(2, "rounding_mode") is not None))


@_register(*with_inplace("clamp", "clip"))
def count_clamp(call: OpCall) -> int:
    """``clamp(self, min=None, max=None)``: one comparison per output element for each bound
    given."""
    bounds = sum(call.arg(index, name) is not None for index, name in ((1, "min"), (2, "max")))
    return elementwise_ops(call.output, bounds)


@_register(*with_inplace("addcmul", "addcdiv"))
def count_addcmul(call: OpCall) -> int:
    """``addcmul(self, t1, t2, value=1)``: ``self + value * t1 * t2`` per output element, one
    multiplication (``addcdiv``: division), one addition, and one multiplication by ``value``
    when it is not 1."""
    return elementwise_ops(call.output, 2 + _scaled(call, 3, "value"))


@_register(aten.max.other, aten.min.other)
def count_binary_extremum(call: OpCall) -> int:
    """``max(self, other)`` / ``min(self, other)``, the element-wise overloads: one comparison
    per output element (the reductions ``max(self, dim)`` are in the reduction family)."""
    return elementwise_ops(call.output, 1)


@_register(*aten_ops("nonzero", "nonzero_static", "argwhere"))
def count_nonzero_positions(call: OpCall) -> int:
    """``nonzero(self)``: one comparison with zero per *input* element (the output lists the
    positions found, its size is not the work)."""
    return math.prod(call.input)
