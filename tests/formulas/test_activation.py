"""Activation formulas: hand-computed counts, and a brute force that evaluates each definition
on real values with a number type that counts its own arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import opscope.formulas.activation  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas import activation
from opscope.formulas.registry import formula_for, registered_types
from helpers import profiled_ops


# Operations per element, derived by hand in docs/formulas/activation.md (independently of the
# module's table), with a factory for a module of each type in non-default settings.
PER_ELEMENT: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "ReLU": (nn.ReLU, 1),  # 1 comparison
    "ReLU6": (nn.ReLU6, 2),  # 2 comparisons
    "Hardtanh": (lambda: nn.Hardtanh(-2.0, 3.0), 2),  # 2 comparisons
    "Threshold": (lambda: nn.Threshold(0.1, 20.0), 1),  # 1 comparison
    "Hardshrink": (lambda: nn.Hardshrink(0.7), 2),  # 2 comparisons
    "Softshrink": (lambda: nn.Softshrink(0.7), 3),  # 2 comparisons + 1 add
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), 2),  # 1 comparison + 1 mul
    "PReLU": (nn.PReLU, 2),  # 1 comparison + 1 mul
    "RReLU": (lambda: nn.RReLU(0.1, 0.3), 2),  # 1 comparison + 1 mul
    "ELU": (lambda: nn.ELU(alpha=0.5), 4),  # cmp, exp, sub, mul
    "CELU": (lambda: nn.CELU(alpha=2.0), 5),  # cmp, div, exp, sub, mul
    "SELU": (nn.SELU, 5),  # ELU + mul by scale
    "Sigmoid": (nn.Sigmoid, 3),  # exp, add, div
    "LogSigmoid": (nn.LogSigmoid, 3),  # exp, add, log
    "SiLU": (nn.SiLU, 4),  # sigmoid + mul
    "Softplus": (lambda: nn.Softplus(beta=2.0, threshold=5.0), 6),  # mul, cmp, exp, add, log, mul
    "Mish": (nn.Mish, 5),  # exp, add, log, tanh, mul
    "Tanh": (nn.Tanh, 1),  # tanh
    "Tanhshrink": (nn.Tanhshrink, 2),  # tanh, sub
    "Softsign": (nn.Softsign, 2),  # add, div
    "Hardsigmoid": (nn.Hardsigmoid, 4),  # 2 cmp, div, add
    "Hardswish": (nn.Hardswish, 5),  # 2 cmp, add, mul, div
    "GELU": (nn.GELU, 5),  # mul by 1/sqrt(2), erf, add, 2 mul
    "GELU tanh": (lambda: nn.GELU(approximate="tanh"), 9),  # cube (2 mul), mul, add, mul, tanh,
    #                                                         add, 2 mul
}

SOFTMAX_TYPES = {nn.Softmax, nn.Softmin, nn.Softmax2d, nn.LogSoftmax}


def test_every_registered_activation_is_tested() -> None:
    counts = (activation.count_elementwise, activation.count_softmax, activation.count_log_softmax)
    registered = {t for t in registered_types() if formula_for(t).count in counts}
    tested = {type(factory()) for factory, _ in PER_ELEMENT.values()} | {nn.GLU} | SOFTMAX_TYPES
    assert registered == tested


@pytest.mark.parametrize("name", PER_ELEMENT)
@pytest.mark.parametrize(
    "shape", [(2, 3, 4), (3, 4), (5,), (2, 3, 2, 2)], ids=["NCL", "NC", "C", "NCHW"]
)
def test_per_element_on_batched_and_unbatched_inputs(name: str, shape: tuple[int, ...]) -> None:
    factory, per_element = PER_ELEMENT[name]
    assert profiled_ops(factory(), torch.randn(shape)) == math.prod(shape) * per_element


@pytest.mark.parametrize(
    "module, shape, expected",
    [
        (nn.ReLU(), (2, 3, 4, 4), 2 * 3 * 4 * 4 * 1),  # 96 comparisons
        (nn.Sigmoid(), (3, 4, 4), 3 * 4 * 4 * 3),  # unbatched: 48 elements, 3 ops each
        (nn.GELU(), (4, 10), 4 * 10 * 5),
        (nn.GELU(approximate="tanh"), (4, 10), 4 * 10 * 9),
        (nn.Softplus(), (7,), 7 * 6),  # beta=1 still costs its two multiplications
        (nn.LeakyReLU(0.0), (7,), 7 * 2),  # a zero slope still costs its multiplication
        # PReLU: one weight per channel or one for all, the same comparison and product
        (nn.PReLU(num_parameters=3), (2, 3, 5), 2 * 3 * 5 * 2),
        (nn.PReLU(num_parameters=3), (5, 3), 5 * 3 * 2),  # (N, C): torch's channels are dim 1
        (nn.PReLU(), (2, 3, 5), 2 * 3 * 5 * 2),
        (nn.PReLU(), (7,), 7 * 2),  # 1-d: no channel dim, one weight
        # GLU halves the input along dim: 4 ops (sigmoid + product) per output element
        (nn.GLU(dim=-1), (2, 3, 8), 2 * 3 * 4 * 4),
        (nn.GLU(dim=0), (6, 5), 3 * 5 * 4),
        (nn.ReLU(), (0, 3), 0),  # an empty batch costs nothing
        (nn.Tanh(), (), 1),  # a 0-dimensional tensor is one element
    ],
)
def test_hand_computed(module: nn.Module, shape: tuple[int, ...], expected: int) -> None:
    assert profiled_ops(module, torch.randn(shape)) == expected


def test_gelu_approximations_differ() -> None:
    x = torch.randn(2, 8)
    assert profiled_ops(nn.GELU(approximate="tanh"), x) - profiled_ops(nn.GELU(), x) == 16 * 4


INPLACE = [
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Threshold, nn.LeakyReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU,
    nn.SiLU, nn.Mish, nn.Hardsigmoid, nn.Hardswish,
]  # fmt: skip


@pytest.mark.parametrize("module_type", INPLACE, ids=lambda t: t.__name__)
def test_inplace_counts_the_same(module_type: type[nn.Module]) -> None:
    args = (0.5, 1.0) if module_type is nn.Threshold else ()
    x = torch.randn(2, 3, 4)
    out_of_place = profiled_ops(module_type(*args), x.clone())
    in_place = profiled_ops(module_type(*args, inplace=True), x.clone())
    per_element = activation.OPS_PER_ELEMENT[module_type]
    assert in_place == out_of_place == 24 * per_element


def test_rrelu_counts_the_same_in_training_and_eval() -> None:
    module, x = nn.RReLU(), torch.randn(4, 6)
    training = profiled_ops(module.train(), x)
    assert training == profiled_ops(module.eval(), x) == 24 * 2


def test_counts_need_only_shapes() -> None:
    # On the meta device there are no values at all.
    x = torch.empty(8, 16, 32, device="meta")
    assert profiled_ops(nn.GELU(approximate="tanh"), x) == 8 * 16 * 32 * 9
    assert profiled_ops(nn.Softmax(dim=-1), x) == 8 * 16 * (3 * 32 - 1)


@given(
    name=st.sampled_from(sorted(PER_ELEMENT)),
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
)
@settings(max_examples=25, deadline=None)
def test_ops_are_per_element_cost_times_numel(name: str, shape: tuple[int, ...]) -> None:
    factory, per_element = PER_ELEMENT[name]
    x = torch.randn(shape)
    assert profiled_ops(factory(), x) == per_element * x.numel()


# -- Softmax family: hand-computed ------------------------------------------------------------

SOFTMAX_CASES = {
    # R rows of length S: softmax R * (3S - 1), log-softmax R * 3S
    "dim 1 of (2,5,3)": (nn.Softmax(dim=1), (2, 5, 3), 2 * 3 * (3 * 5 - 1)),
    "dim -1 of (2,5,3)": (nn.Softmax(dim=-1), (2, 5, 3), 2 * 5 * (3 * 3 - 1)),
    "dim 0 of (2,5,3)": (nn.Softmax(dim=0), (2, 5, 3), 5 * 3 * (3 * 2 - 1)),
    "unbatched vector": (nn.Softmax(dim=0), (4,), 1 * (3 * 4 - 1)),
    "rows of one": (nn.Softmax(dim=1), (6, 1), 6 * (3 * 1 - 1)),  # one exp, one division
    "scalar": (nn.Softmax(dim=0), (), 1 * (3 * 1 - 1)),
    "empty row": (nn.Softmax(dim=1), (2, 0, 3), 0),
    "empty batch": (nn.Softmax(dim=1), (0, 5), 0),
    "softmin": (nn.Softmin(dim=1), (2, 5, 3), 2 * 3 * (3 * 5 - 1)),  # -x is free
    "log dim 1": (nn.LogSoftmax(dim=1), (2, 5, 3), 2 * 3 * (3 * 5)),
    "log dim -1 unbatched": (nn.LogSoftmax(dim=-1), (7,), 1 * (3 * 7)),
    "log empty row": (nn.LogSoftmax(dim=1), (2, 0), 0),
    # Softmax2d normalises over the channels of (N, C, H, W) or (C, H, W)
    "softmax2d batched": (nn.Softmax2d(), (2, 3, 4, 5), 2 * 4 * 5 * (3 * 3 - 1)),
    "softmax2d unbatched": (nn.Softmax2d(), (3, 4, 5), 4 * 5 * (3 * 3 - 1)),
    # dim=None: torch's legacy rule, axis 0 for 0-, 1- and 3-d inputs, axis 1 otherwise
    "None, 0-d": (nn.Softmax(), (), 1 * (3 * 1 - 1)),
    "None, 1-d": (nn.Softmax(), (5,), 1 * (3 * 5 - 1)),
    "None, 2-d": (nn.Softmax(), (2, 5), 2 * (3 * 5 - 1)),
    "None, 3-d": (nn.Softmax(), (3, 2, 4), 2 * 4 * (3 * 3 - 1)),
    "None, 4-d": (nn.Softmax(), (2, 3, 4, 5), 2 * 4 * 5 * (3 * 3 - 1)),
    "None, 5-d": (nn.Softmax(), (2, 3, 1, 2, 2), 2 * 1 * 2 * 2 * (3 * 3 - 1)),
    "None, log 3-d": (nn.LogSoftmax(), (3, 2, 4), 2 * 4 * (3 * 3)),
    "None, softmin 2-d": (nn.Softmin(), (2, 5), 2 * (3 * 5 - 1)),
}


@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=list(SOFTMAX_CASES))
@pytest.mark.filterwarnings("ignore:Implicit dimension choice")
def test_softmax_hand_computed(case: str) -> None:
    module, shape, expected = SOFTMAX_CASES[case]
    assert profiled_ops(module, torch.randn(shape)) == expected


@pytest.mark.filterwarnings("ignore:Implicit dimension choice")
def test_softmax_config_records_dim() -> None:
    model = nn.Sequential(nn.Softmax(dim=2), nn.Softmax2d(), nn.LogSoftmax())
    with Profiler(model) as p:
        model(torch.randn(2, 3, 4, 5))
    assert [record.dim for record in p.records] == [2, -3, None]


# -- Brute force: evaluate each definition on counting numbers --------------------------------


@dataclass
class Tally:
    ops: int = 0


@dataclass(frozen=True)
class Num:
    """A float that counts each arithmetic operation, comparison and function applied to it.

    Constants stay plain floats, so arithmetic among constants is free, as in the convention;
    a sign flip and an absolute value are free too."""

    value: float
    tally: Tally = field(compare=False)

    def _new(self, value: float) -> Num:
        self.tally.ops += 1
        return Num(value, self.tally)

    def _compare(self, result: bool) -> bool:
        self.tally.ops += 1
        return result

    def __add__(self, other: Num | float) -> Num:
        return self._new(self.value + _value(other))

    __radd__ = __add__

    def __sub__(self, other: Num | float) -> Num:
        return self._new(self.value - _value(other))

    def __rsub__(self, other: float) -> Num:
        return self._new(other - self.value)

    def __mul__(self, other: Num | float) -> Num:
        return self._new(self.value * _value(other))

    __rmul__ = __mul__

    def __truediv__(self, other: Num | float) -> Num:
        return self._new(self.value / _value(other))

    def __rtruediv__(self, other: float) -> Num:
        return self._new(other / self.value)

    def __neg__(self) -> Num:
        return Num(-self.value, self.tally)

    def __abs__(self) -> Num:
        return Num(abs(self.value), self.tally)

    def __gt__(self, other: float) -> bool:
        return self._compare(self.value > other)

    def __ge__(self, other: float) -> bool:
        return self._compare(self.value >= other)

    def __lt__(self, other: float) -> bool:
        return self._compare(self.value < other)

    def __le__(self, other: float) -> bool:
        return self._compare(self.value <= other)


def _value(x: Num | float) -> float:
    return x.value if isinstance(x, Num) else x


def _function(f: Callable[[float], float]) -> Callable[[Num], Num]:
    return lambda x: x._new(f(x.value))


exp, log, tanh, erf = (_function(f) for f in (math.exp, math.log, math.tanh, math.erf))

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def sigmoid(x: Num) -> Num:
    return 1 / (1 + exp(-x))


def elu(x: Num, alpha: float) -> Num | float:
    return x if x > 0 else alpha * (exp(x) - 1)


# Each definition as torch's documentation writes it, evaluated only on the piece an element
# falls in: an element's tally is its exact cost, and the formula charges the costliest piece.
Definition = Callable[[nn.Module, Num], "Num | float"]
DEFINITIONS: dict[str, Definition] = {
    "ReLU": lambda m, x: x if x > 0 else 0.0,
    "ReLU6": lambda m, x: 0.0 if x < 0 else (6.0 if x > 6 else x),
    "Hardtanh": lambda m, x: m.min_val if x < m.min_val else (m.max_val if x > m.max_val else x),
    "Threshold": lambda m, x: x if x > m.threshold else m.value,
    "Hardshrink": lambda m, x: x if x > m.lambd else (x if x < -m.lambd else 0.0),
    "Softshrink": lambda m, x: x - m.lambd if x > m.lambd else (
        x + m.lambd if x < -m.lambd else 0.0
    ),
    "LeakyReLU": lambda m, x: x if x >= 0 else m.negative_slope * x,
    "PReLU": lambda m, x: x if x >= 0 else m.weight.item() * x,
    "RReLU": lambda m, x: x if x >= 0 else ((m.lower + m.upper) / 2) * x,  # eval mode
    "ELU": lambda m, x: elu(x, m.alpha),
    "CELU": lambda m, x: x if x > 0 else m.alpha * (exp(x / m.alpha) - 1),
    "SELU": lambda m, x: SELU_SCALE * elu(x, SELU_ALPHA),
    "Sigmoid": lambda m, x: sigmoid(x),
    "LogSigmoid": lambda m, x: -log(1 + exp(-x)),
    "SiLU": lambda m, x: x * sigmoid(x),
    "Softplus": lambda m, x: _softplus(x, m.beta, m.threshold),
    "Mish": lambda m, x: x * tanh(log(1 + exp(x))),
    "Tanh": lambda m, x: tanh(x),
    "Tanhshrink": lambda m, x: x - tanh(x),
    "Softsign": lambda m, x: x / (1 + abs(x)),
    "Hardsigmoid": lambda m, x: 0.0 if x <= -3 else (1.0 if x >= 3 else x / 6 + 0.5),
    "Hardswish": lambda m, x: 0.0 if x <= -3 else (x if x >= 3 else x * (x + 3) / 6),
    "GELU": lambda m, x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
    "GELU tanh": lambda m, x: 0.5 * x * (
        1 + tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x))
    ),
}


def _softplus(x: Num, beta: float, threshold: float) -> Num:
    scaled = beta * x  # shared by the test and the exponential
    return x if scaled > threshold else (1 / beta) * log(1 + exp(scaled))


def brute_force_elementwise(
    module: nn.Module, definition: Definition, x: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """The module's output, element by element from its definition, and the costliest
    element's count times the number of elements (the value-independent charge)."""
    values, costs = [], []
    for element in x.flatten().tolist():
        tally = Tally()
        values.append(_value(definition(module, Num(element, tally))))
        costs.append(tally.ops)
    return torch.tensor(values, dtype=x.dtype).reshape(x.shape), max(costs) * x.numel()


# Values in every piece of every definition: below -3 and above 3 (hard functions), inside
# and outside [-0.7, 0.7] (shrinks), above and below the Softplus threshold (beta*x > 5).
GRID = torch.linspace(-6.0, 6.0, 49, dtype=torch.float64).reshape(7, 7)


@pytest.mark.parametrize("name", DEFINITIONS)
def test_brute_force_definition(name: str) -> None:
    module = PER_ELEMENT[name][0]().double().eval()
    expected_out, brute_ops = brute_force_elementwise(module, DEFINITIONS[name], GRID)
    # The definitions really are the modules' functions...
    torch.testing.assert_close(module(GRID.clone()).detach(), expected_out)
    # ...and the formula charges every element the costliest piece's exact count.
    assert profiled_ops(module, GRID.clone()) == brute_ops
    assert brute_ops == PER_ELEMENT[name][1] * GRID.numel()


def test_brute_force_glu() -> None:
    x = torch.randn(3, 8, dtype=torch.float64)
    a, b = x.chunk(2, dim=1)
    expected, tally = [], Tally()
    for left, right in zip(a.flatten().tolist(), b.flatten().tolist()):
        expected.append((Num(left, tally) * sigmoid(Num(right, tally))).value)
    module = nn.GLU(dim=1)
    torch.testing.assert_close(module(x).flatten(), torch.tensor(expected, dtype=x.dtype))
    assert profiled_ops(module, x) == tally.ops == 3 * 4 * 4


def brute_force_softmax(
    x: torch.Tensor, axis: int, kind: type[nn.Module]
) -> tuple[torch.Tensor, int]:
    """Softmax/Softmin/LogSoftmax along ``axis``, row by row, counting every operation."""
    tally = Tally()
    rows = x.reshape(1) if x.dim() == 0 else x.movedim(axis, -1)
    if rows.shape[-1] == 0:  # empty rows: nothing to compute
        return x.clone(), 0
    out = []
    for row in rows.reshape(-1, rows.shape[-1]).tolist():
        numbers = [Num(v, tally) for v in row]
        exps = [exp(-v if kind is nn.Softmin else v) for v in numbers]
        total = exps[0]
        for e in exps[1:]:
            total = total + e
        if kind is nn.LogSoftmax:
            log_total = log(total)
            out.append([(v - log_total).value for v in numbers])
        else:
            out.append([(e / total).value for e in exps])
    result = torch.tensor(out, dtype=x.dtype).reshape(rows.shape)
    return (result.reshape(()) if x.dim() == 0 else result.movedim(-1, axis)), tally.ops


@st.composite
def softmax_calls(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor, int]:
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    ndim = len(shape)
    dim = draw(st.none() | st.integers(-max(ndim, 1), max(ndim, 1) - 1))
    kind = draw(st.sampled_from([nn.Softmax, nn.Softmin, nn.LogSoftmax]))
    # The axis torch uses, written out independently: 0 for 0-, 1- and 3-d inputs if dim is None
    axis = ({0: 0, 1: 0, 2: 1, 3: 0, 4: 1}[ndim] if dim is None else dim % max(ndim, 1))
    return kind(dim=dim), torch.randn(shape, dtype=torch.float64), axis


@given(softmax_calls())
@settings(max_examples=25, deadline=None)
@pytest.mark.filterwarnings("ignore:Implicit dimension choice")
def test_softmax_equals_a_brute_force_count(call: tuple[nn.Module, torch.Tensor, int]) -> None:
    module, x, axis = call
    expected_out, brute_ops = brute_force_softmax(x, axis, type(module))
    torch.testing.assert_close(module(x), expected_out)  # the brute force is a real softmax
    assert profiled_ops(module, x) == brute_ops
