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

MACs are the gate products, ``rows * (K_ih + K_hh)`` per cell evaluation (plus LSTM's
projection): what ``FlopCounterMode`` counts (halved) for the ``mm``/``addmm`` an RNN runs as
when torch decomposes it (on the meta device opscope counts on, and GRU/RNN on CPU). The fused
kernels (``mkldnn_rnn_layer`` for LSTM on CPU, ``_cudnn_rnn`` on CUDA) have no
``FlopCounterMode`` formula, which then reports 0 for them; opscope counts them like their
decomposition.

The ATen recurrent operators are counted with the same formulas: the whole-sequence ``lstm``,
``gru``, ``rnn_tanh``, ``rnn_relu`` (``.input`` and packed ``.data``), the cells
``lstm_cell``, ``gru_cell``, ``rnn_tanh_cell``, ``rnn_relu_cell``, the fused kernels
``mkldnn_rnn_layer`` (one layer, one direction) and ``_cudnn_rnn``, and CUDA's fused cell
element-wise parts ``_thnn_fused_lstm_cell`` / ``_thnn_fused_gru_cell`` (their gate products
run before them as ``mm``, counted by the matmul family).

One known difference: when torch decomposes a GRU (``torch.no_grad`` rather than
``torch.inference_mode``), it computes ``h' = n + z * (h - n)``, 3 operations per element,
where the documented ``(1 - z) * n + z * h`` counted here takes 4, so the decomposed
operators count ``H`` fewer per cell evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op

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


def cell_macs(
    *, cell: str, input_size: int, hidden_size: int, proj_size: int = 0, **_: object
) -> int:
    """Multiply-accumulates of one cell evaluation: the gate products, ``G * H`` rows of
    ``input_size + R`` pairs (``G`` = 1, 4, 3 gates for rnn, lstm, gru; ``R`` the recurrent
    state size), and LSTM's projection, ``P * H``. Other keyword arguments of :func:`cell_ops`
    are accepted and ignored.

    >>> cell_macs(cell="lstm", input_size=3, hidden_size=5)
    160
    """
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    return gates * hidden_size * (input_size + (proj_size or hidden_size)) + proj_size * hidden_size


def _over_layers(
    per_cell: Callable[..., int],
    *,
    cells: int,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    proj_size: int = 0,
    **settings: object,
) -> int:
    """``cells * D * sum over layers of per_cell(input_size = I_l, ...)``, as in
    :func:`recurrent_ops`."""
    directions = 2 if bidirectional else 1
    later_input_size = directions * (proj_size or hidden_size)
    per_step = sum(
        per_cell(
            input_size=input_size if layer == 0 else later_input_size,
            hidden_size=hidden_size,
            proj_size=proj_size,
            **settings,
        )
        for layer in range(num_layers)
    )
    return cells * directions * per_step


def recurrent_macs(**arguments: object) -> int:
    """Multiply-accumulates of one recurrent call: :func:`cell_macs` summed as
    :func:`recurrent_ops` sums :func:`cell_ops` (the same keyword arguments).

    Example (the 2-layer GRU of :func:`recurrent_ops`: ``3 * 4 * (3 + 4)`` and
    ``3 * 4 * (4 + 4)`` per cell):
        >>> recurrent_macs(cell="gru", cells=6, input_size=3, hidden_size=4, num_layers=2)
        1080
    """
    return _over_layers(cell_macs, **arguments)  # type: ignore[arg-type]


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
    return _over_layers(
        cell_ops, cell=cell, cells=cells, input_size=input_size, hidden_size=hidden_size,
        num_layers=num_layers, bidirectional=bidirectional, bias=bias,
        nonlinearity=nonlinearity, proj_size=proj_size,
    )  # fmt: skip


def _module_arguments(config: RecurrentConfig, call: Call) -> dict[str, object]:
    return {
        "cell": config.cell,
        "cells": math.prod(call.input[:-1]),
        "input_size": call.input[-1],
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "bidirectional": config.bidirectional,
        "bias": config.bias,
        "nonlinearity": config.nonlinearity,
        "proj_size": config.proj_size,
    }


def count_recurrent_macs(config: RecurrentConfig, call: Call) -> int:
    """Multiply-accumulates of one recurrent module or cell call: :func:`recurrent_macs`."""
    return recurrent_macs(**_module_arguments(config, call))


@register(
    nn.RNN,
    nn.LSTM,
    nn.GRU,
    nn.RNNCell,
    nn.LSTMCell,
    nn.GRUCell,
    describe=RecurrentConfig.from_module,
    macs=count_recurrent_macs,
)
def count_recurrent(config: RecurrentConfig, call: Call) -> int:
    """Operations of one recurrent module or cell call: :func:`recurrent_ops` on the real input.

    The input's features are its last dimension and every leading dimension is a (time step,
    sequence) pair: ``(L, N, H_in)``, ``(N, L, H_in)``, unbatched ``(L, H_in)``, a
    PackedSequence's data ``(sum(lengths), H_in)``, a cell's ``(N, H_in)`` or unbatched
    ``(H_in,)`` (one pair).
    """
    return recurrent_ops(**_module_arguments(config, call))  # type: ignore[arg-type]


# -- ATen operators -----------------------------------------------------------------------


@dataclass(frozen=True)
class RecurrentLayout:
    """How a whole-sequence recurrent operator takes its settings: the ``cell`` it runs and
    its ``nonlinearity``, and the position of ``hx`` (1 for ``.input``, 2 for the packed
    ``.data``, which has ``batch_sizes`` before it); ``params``, ``has_biases``,
    ``num_layers``, ``dropout``, ``train`` and ``bidirectional`` follow ``hx``."""

    cell: str
    nonlinearity: str = "tanh"

    def arguments(self, call: OpCall, hx_index: int) -> dict[str, object]:
        """The :func:`recurrent_ops` arguments of ``call``. The hidden size is the last size
        of ``c0`` for an LSTM (of ``h0`` otherwise); an LSTM whose ``h0`` is smaller is
        projected to that size."""
        hx = call.args[hx_index]
        state = hx[-1].shape if isinstance(hx, tuple) else hx.shape
        recurrent_size = hx[0].shape[-1] if isinstance(hx, tuple) else state[-1]
        return {
            "cell": self.cell,
            "cells": math.prod(call.input[:-1]),
            "input_size": call.input[-1],
            "hidden_size": state[-1],
            "num_layers": call.arg(hx_index + 3, "num_layers"),
            "bidirectional": bool(call.arg(hx_index + 6, "bidirectional")),
            "bias": bool(call.arg(hx_index + 2, "has_biases")),
            "nonlinearity": self.nonlinearity,
            "proj_size": recurrent_size if recurrent_size != state[-1] else 0,
        }

    def register(self, name: str) -> None:
        """Register the ``.input`` and ``.data`` overloads of ``aten.<name>``."""
        packet = getattr(torch.ops.aten, name)
        for overload, hx_index in (("input", 1), ("data", 2)):
            _register(getattr(packet, overload), partial(self.arguments, hx_index=hx_index))


Arguments = Callable[[OpCall], dict[str, object]]


def _apply(formula: Callable[..., int], arguments: Arguments, call: OpCall) -> int:
    return formula(**arguments(call))


def _register(
    target: torch._ops.OpOverload | torch._ops.OpOverloadPacket, arguments: Arguments
) -> None:
    """Count ``target`` with :func:`recurrent_ops` / :func:`recurrent_macs` on the keyword
    arguments ``arguments(call)`` reads from its call."""
    register_op(target, family="recurrent", macs=partial(_apply, recurrent_macs, arguments))(
        partial(_apply, recurrent_ops, arguments)
    )


RecurrentLayout("lstm").register("lstm")
RecurrentLayout("gru").register("gru")
RecurrentLayout("rnn", "tanh").register("rnn_tanh")
RecurrentLayout("rnn", "relu").register("rnn_relu")


def _cell_arguments(cell: str, nonlinearity: str, call: OpCall) -> dict[str, object]:
    """``*_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None)``: one layer, one direction,
    ``prod(input[:-1])`` cells, the hidden size read from ``w_hh`` ``(G * H, H)``."""
    return {
        "cell": cell,
        "cells": math.prod(call.input[:-1]),
        "input_size": call.input[-1],
        "hidden_size": call.args[3].shape[-1],
        "bias": call.tensor(4, "b_ih") is not None,
        "nonlinearity": nonlinearity,
    }


for _name, _cell, _nonlinearity in (
    ("lstm_cell", "lstm", "tanh"), ("gru_cell", "gru", "tanh"),
    ("rnn_tanh_cell", "rnn", "tanh"), ("rnn_relu_cell", "rnn", "relu"),
):  # fmt: skip
    _register(getattr(torch.ops.aten, _name), partial(_cell_arguments, _cell, _nonlinearity))

# The cuDNN/MKLDNN mode numbers: RNN_RELU, RNN_TANH, LSTM, GRU.
_MODES: tuple[tuple[str, str], ...] = (
    ("rnn", "relu"),
    ("rnn", "tanh"),
    ("lstm", "tanh"),
    ("gru", "tanh"),
)


def _mkldnn_arguments(call: OpCall) -> dict[str, object]:
    """``mkldnn_rnn_layer(input, w0, w1, w2, w3, hx_, cx_, reverse, batch_sizes, mode,
    hidden_size, num_layers, has_biases, ...)``: one layer in one direction."""
    cell, nonlinearity = _MODES[call.arg(9, "mode")]
    return {
        "cell": cell,
        "cells": math.prod(call.input[:-1]),
        "input_size": call.input[-1],
        "hidden_size": call.arg(10, "hidden_size"),
        "bias": bool(call.arg(12, "has_biases")),
        "nonlinearity": nonlinearity,
    }


def _cudnn_arguments(call: OpCall) -> dict[str, object]:
    """``_cudnn_rnn(input, weight, weight_stride0, weight_buf, hx, cx, mode, hidden_size,
    proj_size, num_layers, batch_first, dropout, train, bidirectional, ...)``: biases iff each
    layer and direction has 4 weights (5 with a projection), not 2 (3)."""
    cell, nonlinearity = _MODES[call.arg(6, "mode")]
    proj_size = call.arg(8, "proj_size")
    return {
        "cell": cell,
        "cells": math.prod(call.input[:-1]),
        "input_size": call.input[-1],
        "hidden_size": call.arg(7, "hidden_size"),
        "num_layers": call.arg(9, "num_layers"),
        "bidirectional": bool(call.arg(13, "bidirectional")),
        "bias": call.arg(2, "weight_stride0") - int(proj_size > 0) == 4,
        "nonlinearity": nonlinearity,
        "proj_size": proj_size,
    }


for _target, _arguments in (
    (torch.ops.aten.mkldnn_rnn_layer, _mkldnn_arguments),
    (torch.ops.aten._cudnn_rnn, _cudnn_arguments),
):
    _register(_target, _arguments)


def fused_cell_ops(call: OpCall, *, gates: int, elementwise: int) -> int:
    """The element-wise part of a fused cell ``(input_gates, hidden_gates, state,
    input_bias=None, hidden_bias=None)``, the gate products done: per row of the state and
    each of its ``H`` columns, ``gates`` joinings of the two halves plus one addition per bias
    given, then the cell's ``elementwise`` operations."""
    state = call.args[2].shape
    biases = int(call.tensor(3, "input_bias") is not None) + int(
        call.tensor(4, "hidden_bias") is not None
    )
    return math.prod(state) * (gates * (1 + biases) + elementwise)


@register_op(*aten_ops("_thnn_fused_lstm_cell"), family="recurrent")
def count_fused_lstm_cell(call: OpCall) -> int:
    """``_thnn_fused_lstm_cell``: 4 gates, then LSTM's 15 operations per element (see
    :func:`cell_ops`)."""
    return fused_cell_ops(call, gates=4, elementwise=15)


@register_op(*aten_ops("_thnn_fused_gru_cell"), family="recurrent")
def count_fused_gru_cell(call: OpCall) -> int:
    """``_thnn_fused_gru_cell``: 3 gates, then GRU's 12 operations per element."""
    return fused_cell_ops(call, gates=3, elementwise=12)
