"""Recurrent layers: RNN, LSTM, GRU and their cells, counted from PyTorch's documented equations.

One *cell evaluation* is the work of one time step of one sequence in one layer and one
direction. Its gate pre-activations follow PyTorch's two-bias form ``W_ih x + b_ih + W_hh h +
b_hh``: each of the two matrix-vector products is a dot product per output row (``K``
multiplications and ``K - 1`` additions for ``K`` pairs), each bias is one addition per row
when ``bias=True``, and adding the two halves is one more addition per row.

Elementwise work follows the convention that each evaluation of an elementary function counts 1
and each arithmetic operation counts 1:

* ``sigmoid(x) = 1 / (1 + exp(-x))`` is :data:`SIGMOID_OPS` = 3 (exp, add, divide; the negation
  is a sign flip, not arithmetic);
* ``tanh`` is :data:`TANH_OPS` = 1 (one elementary function);
* ``relu`` (the RNN's ``nonlinearity='relu'``) is :data:`RELU_OPS` = 1 (one comparison).

A whole call is ``cells * sum over layers and directions of cell_ops``, where ``cells`` is the
number of (time step, sequence) pairs: ``L * N`` for an ``(L, N, H_in)`` or ``(N, L, H_in)``
input, ``L`` for an unbatched ``(L, H_in)`` one, and ``sum(lengths)`` for a PackedSequence,
whose data is ``(sum(lengths), H_in)``. Every layer and direction sees every (step, sequence)
pair, so the product of the input's leading dimensions is exact in all three cases. An initial
state that is not given is zeros, and PyTorch computes with it all the same: the count does not
depend on whether ``h0``/``c0`` were passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from opscope.formulas.registry import Call, register

SIGMOID_OPS = 3
"""Operations of one ``sigmoid(x) = 1 / (1 + exp(-x))``: exp, add, divide."""

TANH_OPS = 1
"""Operations of one ``tanh``: a single elementary function evaluation."""

RELU_OPS = 1
"""Operations of one ``relu``: a single comparison."""

_ACTIVATION_OPS = {"tanh": TANH_OPS, "relu": RELU_OPS}
_CELLS = ("rnn", "lstm", "gru")
_CELL_OF_MODE = {"RNN_TANH": "rnn", "RNN_RELU": "rnn", "LSTM": "lstm", "GRU": "gru"}


@dataclass(frozen=True)
class RecurrentConfig:
    """The static settings of a recurrent module or cell, read once when it is hooked.

    ``cell`` is ``'rnn'``, ``'lstm'`` or ``'gru'``. ``nonlinearity`` is the plain RNN's
    activation (``'tanh'`` or ``'relu'``); LSTM and GRU always use tanh (and sigmoid gates) and
    record ``'tanh'``. Cells are recorded as one layer, one direction, no projection.
    ``batch_first`` is kept for the record only: ``L * N`` is the same either way round.
    """

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    bidirectional: bool
    proj_size: int
    nonlinearity: str

    @classmethod
    def from_module(cls, module: nn.Module) -> RecurrentConfig:
        """Read the settings of ``nn.RNN``/``LSTM``/``GRU`` or ``nn.RNNCell``/``LSTMCell``/
        ``GRUCell`` (or of a subclass)."""
        if isinstance(module, nn.RNNBase):
            return cls(
                cell=_CELL_OF_MODE[module.mode],
                input_size=int(module.input_size),
                hidden_size=int(module.hidden_size),
                num_layers=int(module.num_layers),
                bias=bool(module.bias),
                batch_first=bool(module.batch_first),
                bidirectional=bool(module.bidirectional),
                proj_size=int(module.proj_size),
                nonlinearity="relu" if module.mode == "RNN_RELU" else "tanh",
            )
        if isinstance(module, nn.RNNCellBase):
            cell = (
                "lstm"
                if isinstance(module, nn.LSTMCell)
                else "gru"
                if isinstance(module, nn.GRUCell)
                else "rnn"
            )
            return cls(
                cell=cell,
                input_size=int(module.input_size),
                hidden_size=int(module.hidden_size),
                num_layers=1,
                bias=bool(module.bias),
                batch_first=False,
                bidirectional=False,
                proj_size=0,
                nonlinearity=str(getattr(module, "nonlinearity", "tanh")),
            )
        raise TypeError(f"expected a recurrent module or cell, got {type(module).__name__}")


def _gates_ops(rows: int, input_size: int, state_size: int, bias: bool) -> int:
    """``rows`` pre-activations ``W_ih x + b_ih + W_hh h + b_hh``: two dot products
    (``2 * input_size - 1`` and ``2 * state_size - 1``), one addition joining them and, with
    bias, two bias additions."""
    return rows * (2 * input_size + 2 * state_size - 1 + (2 if bias else 0))


def cell_ops(
    *,
    cell: str,
    input_size: int,
    hidden_size: int,
    bias: bool,
    nonlinearity: str = "tanh",
    proj_size: int = 0,
) -> int:
    """Exact operations of one cell evaluation (one time step, one sequence), in integers.

    With ``I = input_size``, ``H = hidden_size``, ``P = proj_size``, ``b = 1`` with bias else 0,
    ``R = P`` when ``P > 0`` else ``H`` (the size of the recurrent state ``h``) and
    ``A = 1`` (tanh or relu)::

        rnn:  H * (2I + 2H - 1 + 2b) + A*H
        lstm: 4H * (2I + 2R - 1 + 2b) + 15H + [P * (2H - 1) when P > 0]
        gru:  3H * (2I + 2H - 1 + 2b) + 12H

    LSTM's ``15H``: sigmoids of i, f, o (``3 * 3``), tanh of g (1), ``c' = f*c + i*g`` (3),
    ``h' = o * tanh(c')`` (2). Its projection ``h' = W_hr h'`` has no bias: ``P`` dot products
    of ``H`` pairs. GRU's ``12H``: ``r * (W_hn h + b_hn)`` (1), sigmoids of r and z
    (``2 * 3``), tanh of n (1), ``h' = (1 - z) * n + z * h`` (4: subtract, two multiplies, add).

    Example (an LSTM cell, 3 inputs, 5 hidden, with bias: ``20 * (6 + 10 - 1 + 2) + 15 * 5``):
        >>> cell_ops(cell="lstm", input_size=3, hidden_size=5, bias=True)
        415
    """
    if cell not in _CELLS:
        raise ValueError(f"unknown recurrent cell {cell!r}; expected one of {_CELLS}")
    if proj_size and cell != "lstm":
        raise ValueError(f"proj_size is only defined for LSTM, got {proj_size} for {cell!r}")
    h = hidden_size
    if cell == "rnn":
        if nonlinearity not in _ACTIVATION_OPS:
            raise ValueError(f"unknown RNN nonlinearity {nonlinearity!r}; expected tanh or relu")
        return _gates_ops(h, input_size, h, bias) + h * _ACTIVATION_OPS[nonlinearity]
    if cell == "gru":
        reset_product = h  # r * (W_hn h + b_hn), inside the n gate
        activations = h * (2 * SIGMOID_OPS + TANH_OPS)  # r, z; n
        new_state = 4 * h  # (1 - z) * n + z * h
        return _gates_ops(3 * h, input_size, h, bias) + reset_product + activations + new_state
    activations = h * (3 * SIGMOID_OPS + TANH_OPS)  # i, f, o; g
    cell_update = 3 * h  # f * c + i * g
    hidden_update = h * (TANH_OPS + 1)  # o * tanh(c')
    projection = proj_size * (2 * h - 1)  # W_hr h', no bias (0 without projection)
    return (
        _gates_ops(4 * h, input_size, proj_size or h, bias)
        + activations
        + cell_update
        + hidden_update
        + projection
    )


def recurrent_ops(
    *,
    cell: str,
    cells: int,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    bias: bool = True,
    nonlinearity: str = "tanh",
    proj_size: int = 0,
) -> int:
    """Exact operations of one recurrent call: ``cells`` (time step, sequence) pairs run
    through every layer and direction.

    With ``D = 2`` when bidirectional else 1, layer 0 reads ``input_size`` features and every
    later layer reads the previous layer's output, ``D * (proj_size or hidden_size)``::

        ops = cells * D * sum over layers l of cell_ops(input_size = I_l)

    Example (a 2-layer GRU, 3 -> 4, on 6 cells, with bias: layer 0 is ``12 * 15 + 48 = 228``
    per cell, layer 1 reads 4 features, ``12 * 17 + 48 = 252``):
        >>> recurrent_ops(cell="gru", cells=6, input_size=3, hidden_size=4, num_layers=2)
        2880
    """
    directions = 2 if bidirectional else 1
    later_input_size = directions * (proj_size or hidden_size)
    per_cell = sum(
        cell_ops(
            cell=cell,
            input_size=input_size if layer == 0 else later_input_size,
            hidden_size=hidden_size,
            bias=bias,
            nonlinearity=nonlinearity,
            proj_size=proj_size,
        )
        for layer in range(num_layers)
    )
    return cells * directions * per_cell


@register(
    nn.RNN,
    nn.LSTM,
    nn.GRU,
    nn.RNNCell,
    nn.LSTMCell,
    nn.GRUCell,
    describe=RecurrentConfig.from_module,
)
def count_recurrent(config: RecurrentConfig, call: Call) -> int:
    """Operations of one recurrent module or cell call: :func:`recurrent_ops` on the real input.

    The input's features are its last dimension and every leading dimension is a (time step,
    sequence) pair: ``(L, N, H_in)``, ``(N, L, H_in)``, unbatched ``(L, H_in)``, a
    PackedSequence's data ``(sum(lengths), H_in)``, a cell's ``(N, H_in)`` or unbatched
    ``(H_in,)`` (one pair).
    """
    return recurrent_ops(
        cell=config.cell,
        cells=math.prod(call.input[:-1]),
        input_size=call.input[-1],
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        bidirectional=config.bidirectional,
        bias=config.bias,
        nonlinearity=config.nonlinearity,
        proj_size=config.proj_size,
    )
