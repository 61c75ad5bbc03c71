"""A brute-force oracle: scalars that count every operation done on them.

A formula's definition, written with :class:`Counted` values and evaluated once per output
element, both computes the value (compared with torch's, so the definition is the right one)
and counts its operations by the project convention: arithmetic and comparisons 1 each, each
elementary function 1, sign flips and absolute values free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


class Tally:
    """The running count of one evaluation."""

    def __init__(self) -> None:
        self.ops = 0


@dataclass
class Counted:
    value: float
    tally: Tally

    def _lift(self, other: Any) -> float:
        return other.value if isinstance(other, Counted) else float(other)

    def _op(self, value: float) -> Counted:
        self.tally.ops += 1
        return Counted(value, self.tally)

    def __add__(self, other: Any) -> Counted:
        return self._op(self.value + self._lift(other))

    __radd__ = __add__

    def __sub__(self, other: Any) -> Counted:
        return self._op(self.value - self._lift(other))

    def __rsub__(self, other: Any) -> Counted:
        return self._op(self._lift(other) - self.value)

    def __mul__(self, other: Any) -> Counted:
        return self._op(self.value * self._lift(other))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Counted:
        return self._op(self.value / self._lift(other))

    def __rtruediv__(self, other: Any) -> Counted:
        return self._op(self._lift(other) / self.value)

    def __gt__(self, other: Any) -> bool:
        self.tally.ops += 1
        return self.value > self._lift(other)

    def __lt__(self, other: Any) -> bool:
        self.tally.ops += 1
        return self.value < self._lift(other)

    def __ge__(self, other: Any) -> bool:
        self.tally.ops += 1
        return self.value >= self._lift(other)

    def __le__(self, other: Any) -> bool:
        self.tally.ops += 1
        return self.value <= self._lift(other)

    def __neg__(self) -> Counted:  # a sign flip: free
        return Counted(-self.value, self.tally)

    def __abs__(self) -> Counted:  # free
        return Counted(abs(self.value), self.tally)

    def apply(self, function: Callable[[float], float]) -> Counted:
        """One elementary function evaluation."""
        return self._op(function(self.value))


def evaluate(
    definition: Callable[..., Counted | float], operands: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """``definition`` evaluated at every element of the operands' broadcast shape: the result
    and the operations it took."""
    tally = Tally()
    shape = torch.broadcast_shapes(*(operand.shape for operand in operands))
    expanded = [operand.expand(shape).reshape(-1).tolist() for operand in operands]
    values = []
    for scalars in zip(*expanded):
        result = definition(*(Counted(float(s), tally) for s in scalars))
        values.append(result.value if isinstance(result, Counted) else float(result))
    return torch.tensor(values).reshape(shape), tally.ops


def evaluate_costliest(
    definition: Callable[..., Counted | float], operands: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """``definition`` evaluated at every element of the operands' broadcast shape, each
    element with its own tally: the result (float64), and the costliest element's count times
    the number of elements, what a piecewise definition is charged whatever the values."""
    shape = torch.broadcast_shapes(*(operand.shape for operand in operands))
    expanded = [operand.expand(shape).reshape(-1).tolist() for operand in operands]
    values, costs = [], [0]
    for scalars in zip(*expanded):
        tally = Tally()
        result = definition(*(Counted(float(s), tally) for s in scalars))
        values.append(result.value if isinstance(result, Counted) else float(result))
        costs.append(tally.ops)
    result = torch.tensor(values, dtype=torch.float64).reshape(shape)
    return result, max(costs) * math.prod(shape)


def elementary(function: Callable[[float], float]) -> Callable[[Counted], Counted]:
    """``function`` as one counted evaluation."""
    return lambda x: x.apply(function)


exp, log, sqrt, floor, tanh, erf, log1p = map(
    elementary, (math.exp, math.log, math.sqrt, math.floor, math.tanh, math.erf, math.log1p)
)


def maximum(a: Counted, b: Any) -> Counted:
    """One comparison, whichever wins."""
    return a.apply(lambda value: max(value, a._lift(b)))


def minimum(a: Counted, b: Any) -> Counted:
    """One comparison, whichever wins."""
    return a.apply(lambda value: min(value, a._lift(b)))


def evaluate_groups(
    definition: Callable[[list[Counted]], Counted | list[Counted]], x: torch.Tensor, dim: int
) -> tuple[torch.Tensor, int]:
    """``definition`` applied to every group of elements along ``dim`` (a reduction returns
    one value per group, a scan one per element): the values, and the operations they took."""
    tally = Tally()
    rows = x.movedim(dim, -1).reshape(-1, x.shape[dim]).tolist()
    values = []
    for row in rows:
        result = definition([Counted(float(v), tally) for v in row])
        results = result if isinstance(result, list) else [result]
        values.append([r.value for r in results])
    return torch.tensor(values), tally.ops


def total(values: list[Counted]) -> Counted:
    """A sum: ``len(values) - 1`` additions."""
    result = values[0]
    for value in values[1:]:
        result = result + value
    return result


def largest(values: list[Counted]) -> Counted:
    """A maximum: ``len(values) - 1`` comparisons."""
    result = values[0]
    for value in values[1:]:
        result = maximum(result, value)
    return result


def norm(values: list[Counted], order: float) -> Counted:
    """The ``order``-norm of ``values`` as its definition evaluates it (absolute values free):
    ``0`` counts the nonzero values (a comparison each, then a sum), ``1`` sums, ``±inf`` takes
    the largest (smallest) magnitude, ``2`` sums squares and takes a root, any other order
    sums powers and takes a power ``1 / order``."""
    magnitudes = [abs(value) for value in values]
    if order == 0:
        return total([Counted(float(m > 0), m.tally) for m in magnitudes])
    if order == 1:
        return total(magnitudes)
    if math.isinf(order):  # the smallest magnitude is minus the largest negated one
        return largest(magnitudes) if order > 0 else -largest([-m for m in magnitudes])
    if order == 2:
        return sqrt(total([m * m for m in magnitudes]))
    return total([m.apply(lambda v: v**order) for m in magnitudes]).apply(
        lambda v: v ** (1 / order)
    )
