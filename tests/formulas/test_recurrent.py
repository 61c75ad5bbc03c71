"""RNN, LSTM, GRU and their cells: hand-computed cases, FlopCounterMode identities, and an
independent reference that counts its own operations while reproducing torch's outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils.flop_counter import FlopCounterMode

import opscope.formulas.recurrent  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.recurrent import RecurrentConfig, cell_ops, recurrent_ops
from helpers import profiled_ops

pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN:UserWarning",
    "ignore:TF32 acceleration on top of oneDNN:UserWarning",
)


def packed(lengths: list[int], features: int) -> PackedSequence:
    padded = torch.randn(max(lengths), len(lengths), features)
    return pack_padded_sequence(padded, lengths, enforce_sorted=False)


# Per cell evaluation (one step of one sequence in one layer and direction), by hand:
# gate rows * (2I - 1 [W_ih x] + 2R - 1 [W_hh h] + 1 [join] + 2 [b_ih, b_hh, with bias])
# plus elementwise work: sigmoid 3, tanh 1, relu 1;
# RNN: + H activations; LSTM: + 15H (3 sigmoids, tanh g, f*c + i*g, o*tanh(c)) + P(2H - 1);
# GRU: + 12H (r*(W_hn h + b_hn), 2 sigmoids, tanh n, (1 - z)*n + z*h).
HAND_COMPUTED: dict[str, tuple[nn.Module, Callable[[], tuple[object, ...]], int]] = {
    # I=3, H=4, bias; 5 steps x 2 sequences = 10 cells
    "rnn tanh": (nn.RNN(3, 4), lambda: (torch.randn(5, 2, 3),), 10 * (4 * (6 + 8 - 1 + 2) + 4)),
    # relu, no bias, unbatched: 5 cells
    "rnn relu unbatched": (
        nn.RNN(3, 4, nonlinearity="relu", bias=False),
        lambda: (torch.randn(5, 3),),
        5 * (4 * (6 + 8 - 1) + 4),
    ),
    # I=3, H=5, bias: 4 steps x 2 sequences
    "lstm": (nn.LSTM(3, 5), lambda: (torch.randn(4, 2, 3),), 8 * (20 * (6 + 10 - 1 + 2) + 15 * 5)),
    # projection to P=2, no bias, batch_first (2 sequences x 4 steps): the recurrent state is
    # P wide, and the projection is 2 dot products of 5 pairs
    "lstm proj batch_first": (
        nn.LSTM(3, 5, proj_size=2, bias=False, batch_first=True),
        lambda: (torch.randn(2, 4, 3),),
        8 * (20 * (6 + 4 - 1) + 15 * 5 + 2 * (2 * 5 - 1)),
    ),
    # 2 layers, bidirectional, H=2: layer 1 reads 2 * 2 = 4 features; 3 cells, 2 directions
    "lstm bidirectional 2 layers": (
        nn.LSTM(3, 2, num_layers=2, bidirectional=True),
        lambda: (torch.randn(3, 1, 3),),
        3 * 2 * ((8 * (6 + 4 + 1) + 15 * 2) + (8 * (8 + 4 + 1) + 15 * 2)),
    ),
    # given (h0, c0) with a projection: the same count as zeros
    "lstm given state": (
        nn.LSTM(3, 5, proj_size=2),
        lambda: (torch.randn(4, 2, 3), (torch.randn(1, 2, 2), torch.randn(1, 2, 5))),
        8 * (20 * (6 + 4 + 1) + 15 * 5 + 2 * (2 * 5 - 1)),
    ),
    # I=3, H=4, bias: 6 cells
    "gru": (nn.GRU(3, 4), lambda: (torch.randn(2, 3, 3),), 6 * (12 * (6 + 8 + 1) + 12 * 4)),
    "gru no bias": (
        nn.GRU(3, 4, bias=False),
        lambda: (torch.randn(2, 3, 3),),
        6 * (12 * (6 + 8 - 1) + 12 * 4),
    ),
    # packed sequences of lengths 3 and 1: 4 cells, not 2 x 3
    "gru packed": (nn.GRU(3, 4), lambda: (packed([3, 1], 3),), 4 * (12 * (6 + 8 + 1) + 12 * 4)),
    # packed, bidirectional: each direction runs the 3 + 1 + 2 = 6 cells
    "rnn packed bidirectional": (
        nn.RNN(2, 3, bidirectional=True),
        lambda: (packed([3, 1, 2], 2),),
        6 * 2 * (3 * (4 + 6 + 1) + 3),
    ),
    # docs/formulas/recurrent.md's worked example: layer 0 is 313 per cell, layer 1 is 353
    "docs worked example": (
        nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2),
        lambda: (torch.randn(4, 2, 3),),
        8 * 2 * ((20 * (6 + 4 + 1) + 75 + 18) + (20 * (8 + 4 + 1) + 75 + 18)),
    ),
    "rnn cell": (nn.RNNCell(3, 4), lambda: (torch.randn(2, 3),), 2 * (4 * (6 + 8 + 1) + 4)),
    "rnn cell relu unbatched no bias": (
        nn.RNNCell(3, 4, bias=False, nonlinearity="relu"),
        lambda: (torch.randn(3),),
        4 * (6 + 8 - 1) + 4,
    ),
    "lstm cell": (nn.LSTMCell(3, 5), lambda: (torch.randn(2, 3),), 2 * (20 * (6 + 10 + 1) + 75)),
    "lstm cell given state": (
        nn.LSTMCell(3, 5),
        lambda: (torch.randn(2, 3), (torch.randn(2, 5), torch.randn(2, 5))),
        2 * (20 * (6 + 10 + 1) + 75),
    ),
    "gru cell unbatched no bias": (
        nn.GRUCell(3, 4, bias=False),
        lambda: (torch.randn(3),),
        12 * (6 + 8 - 1) + 12 * 4,
    ),
}


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, make_args, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, *make_args()) == expected


def test_initial_state_and_batch_layout_do_not_change_the_count() -> None:
    lstm = nn.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    state = (torch.randn(2, 2, 4), torch.randn(2, 2, 4))
    first = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    assert (
        profiled_ops(lstm, x)
        == profiled_ops(lstm, x, state)
        == profiled_ops(first, x.transpose(0, 1))
        == 10 * ((16 * (6 + 8 + 1) + 60) + (16 * (8 + 8 + 1) + 60))
    )


def test_dropout_between_layers_is_not_counted() -> None:
    gru = nn.GRU(3, 4, num_layers=2, dropout=0.5)
    x = torch.randn(2, 1, 3)
    assert profiled_ops(gru.train(), x) == profiled_ops(gru.eval(), x)


def test_config() -> None:
    config = RecurrentConfig.from_module(
        nn.LSTM(3, 5, num_layers=2, bias=False, batch_first=True, bidirectional=True, proj_size=2)
    )
    assert config == RecurrentConfig(
        cell="lstm", input_size=3, hidden_size=5, num_layers=2, bias=False, batch_first=True,
        bidirectional=True, proj_size=2, nonlinearity="tanh",
    )
    assert RecurrentConfig.from_module(nn.RNN(2, 3, nonlinearity="relu")).nonlinearity == "relu"
    cell = RecurrentConfig.from_module(nn.GRUCell(2, 3, bias=False))
    assert (cell.cell, cell.num_layers, cell.bidirectional, cell.bias) == ("gru", 1, False, False)
    assert RecurrentConfig.from_module(nn.RNNCell(2, 3, nonlinearity="relu")).nonlinearity == "relu"
    gru = nn.GRU(2, 3)
    with Profiler(gru) as p:
        gru(torch.randn(1, 2))
    assert p.records[0].config == RecurrentConfig.from_module(gru)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="unknown recurrent cell"):
        cell_ops(cell="qrnn", input_size=1, hidden_size=1, bias=True)
    with pytest.raises(ValueError, match="proj_size"):
        cell_ops(cell="gru", input_size=1, hidden_size=2, bias=True, proj_size=1)
    with pytest.raises(ValueError, match="nonlinearity"):
        cell_ops(cell="rnn", input_size=1, hidden_size=1, bias=True, nonlinearity="gelu")


@pytest.mark.parametrize("bias", [True, False])
def test_moduleprofiler_relation(bias: bool) -> None:
    # moduleprofiler's cells, in integers: LSTMCell 8NH(I + H + 3.875 [2.875]) and GRUCell
    # 6NH(I + H + 3.5 [2.5]); it counts tanh as 7 operations where opscope counts 1, and an
    # LSTM cell has 2 tanh per hidden unit, a GRU cell 1.
    n, i, h = 3, 5, 7
    b = 1 if bias else 0
    lstm = recurrent_ops(cell="lstm", cells=n, input_size=i, hidden_size=h, bias=bias)
    gru = recurrent_ops(cell="gru", cells=n, input_size=i, hidden_size=h, bias=bias)
    assert lstm + n * h * 2 * 6 == n * h * (8 * (i + h) + 23 + 8 * b)
    assert gru + n * h * 1 * 6 == n * h * (6 * (i + h) + 15 + 6 * b)


# -- random configurations -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A random recurrent module and how to call it."""

    mode: str  # 'RNN_TANH', 'RNN_RELU', 'LSTM' or 'GRU'
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    bidirectional: bool
    proj_size: int
    form: str  # 'batched', 'unbatched' or 'packed'
    lengths: tuple[int, ...]  # one per sequence; all equal unless packed
    with_state: bool

    def module(self) -> nn.RNNBase:
        kwargs: dict[str, Any] = dict(
            num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
            bidirectional=self.bidirectional,
        )
        if self.mode == "LSTM":
            module = nn.LSTM(self.input_size, self.hidden_size, proj_size=self.proj_size, **kwargs)
        elif self.mode == "GRU":
            module = nn.GRU(self.input_size, self.hidden_size, **kwargs)
        else:
            nonlinearity = "relu" if self.mode == "RNN_RELU" else "tanh"
            module = nn.RNN(self.input_size, self.hidden_size, nonlinearity=nonlinearity, **kwargs)
        return module.double()

    @property
    def cells(self) -> int:
        """(time step, sequence) pairs, counted from the lengths the case was built with."""
        return sum(self.lengths)

    def arguments(self) -> tuple[object, ...]:
        batch, steps = len(self.lengths), max(self.lengths)
        shape = (batch, steps) if self.batch_first else (steps, batch)
        x = torch.randn(*shape, self.input_size, dtype=torch.float64)
        if self.form == "unbatched":
            x = x.select(0 if self.batch_first else 1, 0)  # unbatched ignores batch_first
        elif self.form == "packed":
            x = pack_padded_sequence(
                x, list(self.lengths), batch_first=self.batch_first, enforce_sorted=False
            )
        if not self.with_state:
            return (x,)
        directions = 2 if self.bidirectional else 1
        leading = (self.num_layers * directions,) + (() if self.form == "unbatched" else (batch,))
        h0 = torch.randn(*leading, self.proj_size or self.hidden_size, dtype=torch.float64)
        if self.mode != "LSTM":
            return (x, h0)
        return (x, (h0, torch.randn(*leading, self.hidden_size, dtype=torch.float64)))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    mode = draw(st.sampled_from(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]))
    hidden_size = draw(st.integers(1, 4))
    proj_size = draw(st.integers(0, hidden_size - 1)) if mode == "LSTM" else 0
    form = draw(st.sampled_from(["batched", "unbatched", "packed"]))
    if form == "packed":
        lengths = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    else:
        batch = 1 if form == "unbatched" else draw(st.integers(1, 3))
        lengths = (draw(st.integers(1, 4)),) * batch
    return Case(
        mode=mode,
        input_size=draw(st.integers(1, 4)),
        hidden_size=hidden_size,
        num_layers=draw(st.integers(1, 2)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        proj_size=proj_size,
        form=form,
        lengths=lengths,
        with_state=draw(st.booleans()),
    )


# Combinations every run must see, whatever hypothesis draws.
EXAMPLES = (
    Case("GRU", 2, 3, 2, True, False, True, 0, "unbatched", (3,), False),
    Case("LSTM", 3, 4, 2, False, True, True, 2, "packed", (3, 1, 2), True),
    Case("LSTM", 2, 3, 1, True, False, False, 1, "unbatched", (2,), True),
    Case("RNN_RELU", 2, 3, 2, True, True, False, 0, "batched", (2, 2), True),
    Case("RNN_TANH", 1, 2, 1, False, False, True, 0, "packed", (1, 4), False),
)


def with_examples(test: Callable[[Case], None]) -> Callable[[Case], None]:
    for case in EXAMPLES:
        test = hypothesis.example(case)(test)
    return test


def unmatmul_ops(mode: str, hidden: int, proj: int, bias: bool) -> int:
    """Per cell evaluation, opscope's count minus FlopCounterMode's ``2 * MACs``, by hand.

    Each gate row's two dot products are ``2I - 1 + 2R - 1`` operations against the ``2I + 2R``
    FlopCounterMode counts, and the row adds the join and both biases: ``2b - 1`` per row.
    The projection's dot products are each 1 short: ``-P``.
    """
    per_row = (2 if bias else 0) - 1
    if mode == "LSTM":
        return 4 * hidden * per_row + 15 * hidden - proj
    if mode == "GRU":
        return 3 * hidden * per_row + 12 * hidden
    return hidden * per_row + hidden  # tanh or relu: 1 each


@hypothesis.settings(max_examples=25, deadline=None)
@given(cases())
@with_examples
def test_flop_counter_identity(case: Case) -> None:
    module = case.module()
    arguments = case.arguments()
    # oneDNN's fused CPU LSTM is one aten op that FlopCounterMode cannot see into.
    with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
        ops = profiled_ops(module, *arguments)
    directions = 2 if case.bidirectional else 1
    unseen = unmatmul_ops(case.mode, case.hidden_size, case.proj_size, case.bias)
    assert counter.get_total_flops() > 0
    assert ops == counter.get_total_flops() + case.cells * case.num_layers * directions * unseen


@pytest.mark.parametrize("module_type", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_flop_counter_identity(module_type: type[nn.RNNCellBase], bias: bool) -> None:
    module = module_type(3, 4, bias=bias)
    mode = {nn.RNNCell: "RNN_TANH", nn.LSTMCell: "LSTM", nn.GRUCell: "GRU"}[module_type]
    with FlopCounterMode(display=False) as counter:
        ops = profiled_ops(module, torch.randn(5, 3))
    assert ops == counter.get_total_flops() + 5 * unmatmul_ops(mode, 4, 0, bias)


# -- an independent reference: the documented equations, counting as they compute ------------


class CountingMath:
    """Tensor operations that count each scalar operation they perform: one per element of
    each result, and for a matrix-vector product its products and the additions summing them."""

    def __init__(self) -> None:
        self.ops = 0

    def _counted(self, result: torch.Tensor) -> torch.Tensor:
        self.ops += result.numel()
        return result

    def add(self, a: torch.Tensor | float, b: torch.Tensor) -> torch.Tensor:
        return self._counted(a + b)

    def sub(self, a: torch.Tensor | float, b: torch.Tensor) -> torch.Tensor:
        return self._counted(a - b)

    def mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._counted(a * b)

    def div(self, a: float, b: torch.Tensor) -> torch.Tensor:
        return self._counted(a / b)

    def exp(self, x: torch.Tensor) -> torch.Tensor:
        return self._counted(torch.exp(x))

    def tanh(self, x: torch.Tensor) -> torch.Tensor:
        return self._counted(torch.tanh(x))

    def relu(self, x: torch.Tensor) -> torch.Tensor:
        return self._counted(torch.where(x > 0, x, 0.0))  # one comparison

    def sigmoid(self, x: torch.Tensor) -> torch.Tensor:
        return self.div(1.0, self.add(1.0, self.exp(-x)))  # the negation is a sign flip

    def matvec(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        products = weight * x  # (rows, K): every multiplication, written out
        self.ops += products.numel()
        result = products.sum(-1)
        self.ops += products.numel() - result.numel()  # K - 1 additions per row
        return result

    def affine(
        self, weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        result = self.matvec(weight, x)
        return result if bias is None else self.add(result, bias)


@dataclass(frozen=True)
class Weights:
    """One layer and direction's parameters (a bias or projection is None when absent)."""

    w_ih: torch.Tensor
    w_hh: torch.Tensor
    b_ih: torch.Tensor | None
    b_hh: torch.Tensor | None
    w_hr: torch.Tensor | None

    @classmethod
    def of(cls, module: nn.Module, suffix: str = "") -> Weights:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        return cls(*(getattr(module, name + suffix, None) for name in names))


State = tuple[torch.Tensor, torch.Tensor]  # (h, c); c is unused outside LSTM


def reference_cell(
    counting: CountingMath, mode: str, w: Weights, x: torch.Tensor, state: State
) -> State:
    """One step of one sequence, from PyTorch's documented equations (gate order: LSTM i f g o,
    GRU r z n)."""
    h, c = state
    gi = counting.affine(w.w_ih, x, w.b_ih)
    gh = counting.affine(w.w_hh, h, w.b_hh)
    if mode in ("RNN_TANH", "RNN_RELU"):
        pre = counting.add(gi, gh)
        return (counting.tanh(pre) if mode == "RNN_TANH" else counting.relu(pre)), c
    if mode == "GRU":
        (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3), gh.chunk(3)
        r = counting.sigmoid(counting.add(i_r, h_r))
        z = counting.sigmoid(counting.add(i_z, h_z))
        n = counting.tanh(counting.add(i_n, counting.mul(r, h_n)))
        return counting.add(counting.mul(counting.sub(1.0, z), n), counting.mul(z, h)), c
    i, f, g, o = counting.add(gi, gh).chunk(4)
    i, f, g, o = counting.sigmoid(i), counting.sigmoid(f), counting.tanh(g), counting.sigmoid(o)
    c = counting.add(counting.mul(f, c), counting.mul(i, g))
    h = counting.mul(o, counting.tanh(c))
    return (h if w.w_hr is None else counting.matvec(w.w_hr, h)), c


def reference_sequence(
    counting: CountingMath, module: nn.RNNBase, x: torch.Tensor, states: list[State]
) -> tuple[torch.Tensor, list[State]]:
    """One sequence ``x`` of shape ``(L, H_in)`` through every layer and direction;
    ``states[layer * D + direction]`` is the initial state, returned updated."""
    directions = 2 if module.bidirectional else 1
    final = list(states)
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            weights = Weights.of(module, f"_l{layer}" + ("_reverse" if direction else ""))
            state, ys = states[index], [torch.empty(0)] * len(x)
            steps = range(len(x)) if direction == 0 else reversed(range(len(x)))
            for t in steps:
                state = reference_cell(counting, module.mode, weights, x[t], state)
                ys[t] = state[0]
            outputs.append(torch.stack(ys))
            final[index] = state
        x = torch.cat(outputs, dim=-1)
    return x, final


def split_output(case: Case, output: object) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Torch's result as (output sequence, [h_n, (c_n)]) per sequence, trimmed to its length."""
    y, state = output
    finals = list(state) if isinstance(state, tuple) else [state]
    if case.form == "unbatched":
        return [(y, finals)]
    if isinstance(y, PackedSequence):
        y, _ = pad_packed_sequence(y, batch_first=case.batch_first)
    return [
        ((y[b] if case.batch_first else y[:, b])[:length], [s[:, b] for s in finals])
        for b, length in enumerate(case.lengths)
    ]


def sequence_inputs(
    case: Case, arguments: tuple[object, ...]
) -> list[tuple[torch.Tensor, list[State]]]:
    """Each sequence of the call, trimmed to its length, with its initial state per layer and
    direction (zeros when the call gave none, as torch does)."""
    x = arguments[0]
    if isinstance(x, PackedSequence):
        x, _ = pad_packed_sequence(x, batch_first=case.batch_first)
    if case.form == "unbatched":
        x = x[None]
    elif not case.batch_first:
        x = x.transpose(0, 1)  # now (batch, steps, features) in every form
    stacked, batch = case.num_layers * (2 if case.bidirectional else 1), len(case.lengths)
    h0 = torch.zeros(stacked, batch, case.proj_size or case.hidden_size, dtype=torch.float64)
    c0 = torch.zeros(stacked, batch, case.hidden_size, dtype=torch.float64)
    if case.with_state:
        given = arguments[1] if case.mode == "LSTM" else (arguments[1],)
        h0, *rest = (state.reshape(stacked, batch, -1) for state in given)  # unbatched: batch 1
        c0 = rest[0] if rest else c0
    return [
        (x[b, :length], [(h0[k, b], c0[k, b]) for k in range(stacked)])
        for b, length in enumerate(case.lengths)
    ]


@hypothesis.settings(max_examples=25, deadline=None)
@given(cases())
@with_examples
def test_reference_counts_and_outputs(case: Case) -> None:
    module = case.module()
    arguments = case.arguments()
    with torch.no_grad(), Profiler(module) as p:
        output = module(*arguments)

    counting = CountingMath()
    inputs = sequence_inputs(case, arguments)
    for (x, states), (want_y, want_finals) in zip(inputs, split_output(case, output), strict=True):
        with torch.no_grad():
            y, finals = reference_sequence(counting, module, x, states)
        torch.testing.assert_close(y, want_y)
        torch.testing.assert_close(torch.stack([h for h, _ in finals]), want_finals[0])
        if case.mode == "LSTM":
            torch.testing.assert_close(torch.stack([c for _, c in finals]), want_finals[1])
    assert p.records[0].ops == counting.ops


@pytest.mark.parametrize("module_type", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_cell_reference(module_type: type[nn.RNNCellBase], bias: bool, batched: bool) -> None:
    module = module_type(3, 4, bias=bias).double()
    mode = {nn.RNNCell: "RNN_TANH", nn.LSTMCell: "LSTM", nn.GRUCell: "GRU"}[module_type]
    x = torch.randn(*((2,) if batched else ()), 3, dtype=torch.float64)
    with torch.no_grad(), Profiler(module) as p:
        output = module(x)
    counting = CountingMath()
    rows = x if batched else x[None]
    zeros = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        weights = Weights.of(module)
        results = [reference_cell(counting, mode, weights, row, (zeros, zeros)) for row in rows]
    want = output[0] if mode == "LSTM" else output
    got = torch.stack([h for h, _ in results])
    torch.testing.assert_close(got if batched else got[0], want)
    assert p.records[0].ops == counting.ops
