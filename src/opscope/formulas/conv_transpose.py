"""Transposed convolutions: exact multiplications plus additions of the scatter, bias counted.

A transposed convolution scatters: input position ``i`` times kernel tap ``t`` lands on output
position ``o = i * stride + t * dilation - padding`` (per spatial axis), and every output
element is the sum of the products that land on it, plus the bias. opscope counts what that
scatter computes:

* one multiplication per (input element, kernel weight) product that lands inside the output.
  ``padding`` crops the uncropped result: a product that would land in the cropped border has
  no destination, is not needed, and is not counted;
* one addition per product beyond the first that lands on an output element (accumulating
  ``P`` products takes ``P - 1`` additions);
* one addition per output element for the bias, when there is one.

Every product of one (input channel, output channel) pair follows the same index map, and that
map acts on each spatial axis independently, so both the number of landing products and the
number of output elements that receive at least one are products over axes of one-axis counts
(:func:`axis_scatter_counts`). ``output_padding`` (and ``forward(x, output_size=...)``, which
overrides it per call) only lengthens the output, so it enters through the real output shape.

MACs are counted as ``FlopCounterMode`` counts a transposed convolution (halved): every
(input element, kernel weight) product, ``N * Cin * (Cout / groups) * prod(kernel) *
prod(input_size)``, including the products that ``padding`` crops away, which the operation
count leaves out. The two agree when nothing is cropped.

The general ATen ``convolution`` (``_convolution``, ``convolution_overrideable``), whose
``transposed`` flag picks the kind, and the transposed operators (``conv_transpose1d``/``2d``/
``3d``, ...) are counted here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from opscope.formulas.conv import ConvConfig, conv_macs, conv_op_macs, conv_ops, count_conv_op
from opscope.formulas.pooling import per_axis
from opscope.formulas.reduction import OPS_PER_GROUP, reduction_ops
from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op

aten = torch.ops.aten


@dataclass(frozen=True)
class ConvTransposeConfig(ConvConfig):
    """The static settings of a ``ConvTranspose*d`` module: those of :class:`ConvConfig` plus
    ``output_padding``.

    ``padding`` is always a tuple of ints here: a transposed convolution crops ``padding``
    positions from both ends of its result rather than padding its input. ``output_padding``
    is recorded as set on the module; the count reads the output length from the real output
    shape instead, because a call ``module(x, output_size=...)`` chooses its own.
    """

    padding: tuple[int, ...]  # narrowed: a transposed convolution takes no 'same' / 'valid'
    output_padding: tuple[int, ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> ConvTransposeConfig:
        """Read the settings of a ``torch.nn.ConvTranspose*d`` module (or of a subclass)."""
        shared = dataclasses.asdict(ConvConfig.from_module(module))
        return cls(**shared, output_padding=tuple(module.output_padding))


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _covered_length(runs: list[tuple[int, int]]) -> int:
    """How many integers lie in the union of the inclusive ranges ``runs``."""
    covered = 0
    end = None  # the last integer already counted
    for first, last in sorted(runs):
        if end is not None:
            first = max(first, end + 1)
        if first <= last:
            covered += last - first + 1
            end = last
    return covered


def axis_scatter_counts(
    *, input_size: int, output_size: int, kernel_size: int, stride: int, padding: int, dilation: int
) -> tuple[int, int]:
    """Along one spatial axis: ``(landing, receiving)``.

    ``landing`` is the number of (input position ``i``, kernel tap ``t``) pairs whose product
    lands inside the output, ``0 <= i * stride + t * dilation - padding < output_size``;
    ``receiving`` is the number of output positions that at least one pair lands on.

    Tap ``t`` writes the positions ``offset + stride * i`` with ``offset = t * dilation -
    padding``: a run of consecutive multiples of ``stride`` shifted by ``offset``. Runs of taps
    whose offsets agree modulo ``stride`` can overlap and are merged; others never meet. This
    costs ``O(kernel_size log kernel_size)``, whatever the lengths.

    Example (the moduleprofiler page's case: 2 inputs, kernel 3; each position receives
    1, 2, 2, 1 products):
        >>> axis_scatter_counts(input_size=2, output_size=4, kernel_size=3, stride=1,
        ...                     padding=0, dilation=1)
        (6, 4)
    """
    landing = 0
    runs_by_residue: dict[int, list[tuple[int, int]]] = {}
    for tap in range(kernel_size):
        offset = tap * dilation - padding
        first = max(0, _ceil_div(-offset, stride))
        last = min(input_size - 1, (output_size - 1 - offset) // stride)
        if first > last:  # every product of this tap is cropped
            continue
        landing += last - first + 1
        # Position offset + stride * i == residue + stride * (shift + i).
        shift, residue = divmod(offset, stride)
        runs_by_residue.setdefault(residue, []).append((shift + first, shift + last))
    receiving = sum(_covered_length(runs) for runs in runs_by_residue.values())
    return landing, receiving


def conv_transpose_ops(
    *,
    batch: int,
    in_channels: int,
    out_channels: int,
    input_size: Sequence[int],
    output_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    bias: bool,
) -> int:
    """Exact operations of one transposed-convolution call, in integer arithmetic.

    With ``(landing_d, receiving_d)`` from :func:`axis_scatter_counts` for each spatial axis
    ``d``, ``C = N * out_channels`` output channel planes and ``E = C * prod(output_size)``::

        multiplications = C * (in_channels / groups) * prod(landing_d)
        additions       = multiplications - C * prod(receiving_d)   (accumulation)
                          + E if bias                               (bias)
        ops             = multiplications + additions

    When every output element receives a product (the usual case) that is ``2M`` with bias
    and ``2M - E`` without, ``M`` the multiplications, as for a convolution.

    Example (a DCGAN-style upsampling layer, 16 -> 8 channels, kernel 4, stride 2, padding 1,
    8x8 -> 16x16: per axis 30 of the 8 * 4 products land, on all 16 positions):
        >>> conv_transpose_ops(batch=1, in_channels=16, out_channels=8, input_size=(8, 8),
        ...                    output_size=(16, 16), kernel_size=(4, 4), stride=(2, 2),
        ...                    padding=(1, 1), dilation=(1, 1), groups=1, bias=True)
        230400
    """
    if groups < 1 or in_channels % groups:
        raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
    axes = (input_size, output_size, kernel_size, stride, padding, dilation)
    if len({len(axis) for axis in axes}) != 1:
        raise ValueError(f"sizes and settings disagree on the number of spatial axes: {axes}")
    landing = receiving = 1
    for in_len, out_len, kernel, step, pad, gap in zip(*axes):
        axis_landing, axis_receiving = axis_scatter_counts(
            input_size=in_len, output_size=out_len, kernel_size=kernel, stride=step,
            padding=pad, dilation=gap,
        )  # fmt: skip
        landing *= axis_landing
        receiving *= axis_receiving
    planes = batch * out_channels
    multiplications = planes * (in_channels // groups) * landing
    accumulations = multiplications - planes * receiving
    bias_additions = planes * math.prod(output_size) if bias else 0
    return multiplications + accumulations + bias_additions


def conv_transpose_macs(
    *,
    batch: int,
    in_channels: int,
    out_channels: int,
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    groups: int,
    **_unused: object,
) -> int:
    """Multiply-accumulates of one transposed convolution, as ``FlopCounterMode`` counts
    them (halved): every input element times every kernel weight of its group, cropped or not
    (the other keyword arguments of :func:`conv_transpose_ops` are accepted and ignored)::

        macs = N * Cin * (Cout / groups) * prod(kernel_size) * prod(input_size)

    >>> conv_transpose_macs(batch=1, in_channels=16, out_channels=8, input_size=(8, 8),
    ...                     kernel_size=(4, 4), groups=1)
    131072
    """
    return (
        batch * in_channels * (out_channels // groups)
        * math.prod(kernel_size) * math.prod(input_size)
    )  # fmt: skip


def count_conv_transpose_macs(config: ConvTransposeConfig, call: Call) -> int:
    """Multiply-accumulates of one ``ConvTranspose*d`` call: :func:`conv_transpose_macs`."""
    channel_axis = -(len(config.kernel_size) + 1)
    return conv_transpose_macs(
        batch=math.prod(call.output[:channel_axis]),
        in_channels=call.input[channel_axis],
        out_channels=call.output[channel_axis],
        input_size=call.input[channel_axis + 1 :],
        kernel_size=config.kernel_size,
        groups=config.groups,
    )


@register(
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    describe=ConvTransposeConfig.from_module, macs=count_conv_transpose_macs,
)  # fmt: skip
def count_conv_transpose(config: ConvTransposeConfig, call: Call) -> int:
    """Operations of one ``ConvTranspose1d``/``2d``/``3d`` call: :func:`conv_transpose_ops`
    on the call's real shapes.

    The channel dimension sits just before the spatial ones, so an unbatched input (no batch
    dimension) has ``N = 1``.
    """
    channel_axis = -(len(config.kernel_size) + 1)
    input_shape, output_shape = call.input, call.output
    return conv_transpose_ops(
        batch=math.prod(output_shape[:channel_axis]),
        in_channels=input_shape[channel_axis],
        out_channels=output_shape[channel_axis],
        input_size=input_shape[channel_axis + 1 :],
        output_size=output_shape[channel_axis + 1 :],
        kernel_size=config.kernel_size,
        stride=config.stride,
        padding=config.padding,
        dilation=config.dilation,
        groups=config.groups,
        bias=config.bias,
    )


# -- ATen operators -----------------------------------------------------------------------


@dataclass(frozen=True)
class TransposedLayout:
    """Where a transposed-convolution operator takes its settings: argument positions (and
    schema names) of ``bias`` (None: the operator takes none), ``stride``, ``padding`` and
    ``dilation``."""

    bias: int | None
    stride: int
    padding: int
    dilation: int

    def sizes(self, call: OpCall) -> dict[str, object]:
        """The :func:`conv_transpose_ops` arguments of ``call``, bias aside. The weight is
        ``(Cin, Cout / groups, *kernel)``, so ``groups = Cout / weight[1]``."""
        weight = call.args[1].shape
        dims = len(weight) - 2
        input_shape, output_shape = call.input, call.output
        out_channels = output_shape[-dims - 1]
        return {
            "batch": math.prod(output_shape[: -dims - 1]),
            "in_channels": weight[0],
            "out_channels": out_channels,
            "input_size": input_shape[-dims:],
            "output_size": output_shape[-dims:],
            "kernel_size": weight[2:],
            "stride": per_axis(call.arg(self.stride, "stride", 1), dims),
            "padding": per_axis(call.arg(self.padding, "padding", 0), dims),
            "dilation": per_axis(call.arg(self.dilation, "dilation", 1), dims),
            "groups": out_channels // weight[1],
        }

    def count(self, call: OpCall) -> int:
        """:func:`conv_transpose_ops` on the call, bias iff one is given."""
        bias = self.bias is not None and call.tensor(self.bias, "bias") is not None
        return conv_transpose_ops(**self.sizes(call), bias=bias)

    def macs(self, call: OpCall) -> int:
        """:func:`conv_transpose_macs` on the call."""
        return conv_transpose_macs(**self.sizes(call))


def _register_transposed(layout: TransposedLayout, *names: str) -> None:
    register_op(*aten_ops(*names), family="conv", macs=layout.macs)(layout.count)


# conv_transpose1d/2d/3d(input, weight, bias, stride, padding, output_padding, groups, dilation)
_register_transposed(TransposedLayout(2, 3, 4, 7), "conv_transpose1d", "conv_transpose2d",
                     "conv_transpose3d")  # fmt: skip
# slow_conv_transpose2d/3d(self, weight, kernel_size, bias, stride, padding, output_padding,
# dilation)
_register_transposed(TransposedLayout(3, 4, 5, 7), "slow_conv_transpose2d", "slow_conv_transpose3d")
# cudnn_convolution_transpose(self, weight, padding, output_padding, stride, dilation, groups...)
_register_transposed(TransposedLayout(None, 4, 2, 5), "cudnn_convolution_transpose")

# convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
_CONVOLUTION_TRANSPOSED = TransposedLayout(2, 3, 4, 5)
_convolution_count = partial(count_conv_op, 2)


def _pick(
    transposed: Callable[[OpCall], int], plain: Callable[[OpCall], int]
) -> Callable[[OpCall], int]:
    """``transposed`` or ``plain`` per call, by the operator's ``transposed`` argument."""

    def pick(call: OpCall) -> int:
        return (transposed if call.arg(6, "transposed", False) else plain)(call)

    return pick


register_op(
    *aten_ops("convolution", "_convolution", "convolution_overrideable"),
    family="conv",
    macs=_pick(_CONVOLUTION_TRANSPOSED.macs, conv_op_macs),
)(_pick(_CONVOLUTION_TRANSPOSED.count, _convolution_count))


# -- Backward pass (ATen ops) ----------------------------------------------------------------


@dataclass(frozen=True)
class ConvBackwardSizes:
    """What ``convolution_backward`` computes, read from its arguments: the shapes of
    ``grad_output`` ``(N, Cg, *Pg)``, ``input`` ``(N, Ci, *Pi)`` and ``weight``, the forward's
    settings and ``output_mask``, which gradients are wanted (input, weight, bias)."""

    grad_output: tuple[int, ...]
    input: tuple[int, ...]
    weight: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    transposed: bool
    groups: int
    output_mask: tuple[bool, bool, bool]

    @classmethod
    def of(cls, call: OpCall) -> ConvBackwardSizes:
        """``convolution_backward(grad_output, input, weight, bias_sizes, stride, padding,
        dilation, transposed, output_padding, groups, output_mask)``."""
        weight = call.args[2].shape
        dims = len(weight) - 2
        return cls(
            grad_output=call.args[0].shape,
            input=call.args[1].shape,
            weight=weight,
            stride=per_axis(call.arg(4, "stride"), dims),
            padding=per_axis(call.arg(5, "padding"), dims),
            dilation=per_axis(call.arg(6, "dilation"), dims),
            transposed=bool(call.arg(7, "transposed")),
            groups=int(call.arg(9, "groups")),
            output_mask=tuple(bool(wanted) for wanted in call.arg(10, "output_mask")),
        )

    def grad_input_sizes(self) -> dict[str, object]:
        """The arguments of the convolution whose output is ``grad_input``: its input is
        ``grad_output``, its output ``grad_input``, with the forward's kernel and settings
        (for :func:`conv_transpose_ops` when the forward is a plain convolution, and for
        :func:`~opscope.formulas.conv.conv_ops` when it is transposed; each takes the
        arguments it needs)."""
        dims = len(self.weight) - 2
        return {
            "batch": math.prod(self.grad_output[: -dims - 1]),
            "in_channels": self.grad_output[-dims - 1],
            "out_channels": self.input[-dims - 1],
            "input_size": self.grad_output[-dims:],
            "output_size": self.input[-dims:],
            "kernel_size": self.weight[2:],
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def weight_products(self) -> int:
        """``N * P``: the products summed into each weight gradient, one per sample and
        position of the side that is not upsampled (the output of a convolution, the input of
        a transposed one), padded positions included as in the forward convolution."""
        dims = len(self.weight) - 2
        small = self.input if self.transposed else self.grad_output
        return math.prod(self.grad_output[: -dims - 1]) * math.prod(small[-dims:])


def convolution_backward_ops(sizes: ConvBackwardSizes) -> int:
    """Exact operations of one ``convolution_backward`` call: the gradients ``output_mask``
    asks for, each the convolution it is, counted as opscope counts that convolution's forward.

    * ``grad_input``: the transposed convolution of ``grad_output`` with the weight for a
      plain convolution (:func:`conv_transpose_ops`, bias-free: only the products that land
      inside the input, exactly), the plain convolution of ``grad_output`` with the weight
      for a transposed one (:func:`~opscope.formulas.conv.conv_ops`, bias-free);
    * ``grad_weight``: the correlation of the input with ``grad_output``: every weight element
      a dot product of ``N * P`` pairs (:meth:`ConvBackwardSizes.weight_products`),
      ``numel(weight) * (2 * N * P - 1)``;
    * ``grad_bias``: the sum of ``grad_output`` over the batch and the positions,
      ``Cg * (N * Pg - 1)`` additions.

    Example (Conv2d(3, 8, 3, padding=1) on 1x3x4x4: for grad_input, 10 of the 4 * 3
    (position, tap) pairs of an axis land inside the input, so 8 * 100 products reach each of
    the 3 input planes of 16 elements; grad_weight is 216 dot products of 16 pairs, grad_bias
    8 sums of 16):
        >>> sizes = ConvBackwardSizes((1, 8, 4, 4), (1, 3, 4, 4), (8, 3, 3, 3), (1, 1), (1, 1),
        ...                           (1, 1), False, 1, (True, True, True))
        >>> convolution_backward_ops(sizes) == (2 * 8 * 3 * 100 - 48) + 216 * 31 + 8 * 15
        True
    """
    grad_input, grad_weight, grad_bias = sizes.output_mask
    ops = 0
    if grad_input:
        arguments = sizes.grad_input_sizes()
        if sizes.transposed:
            ops += conv_ops(**_conv_arguments(arguments), bias=False)
        else:
            ops += conv_transpose_ops(**arguments, bias=False)
    if grad_weight:
        ops += math.prod(sizes.weight) * max(2 * sizes.weight_products() - 1, 0)
    if grad_bias:
        grad_output = sizes.grad_output
        channels = grad_output[-(len(sizes.weight) - 1)]
        ops += reduction_ops(math.prod(grad_output), channels, OPS_PER_GROUP["sum"])
    return ops


def convolution_backward_macs(sizes: ConvBackwardSizes) -> int:
    """Multiply-accumulates of one ``convolution_backward`` call: the products of the
    gradients ``output_mask`` asks for.

    * ``grad_input``: the forward's products, ``N * Cg * Pg * (Ci / groups) * prod(kernel)``
      for a plain convolution (:func:`conv_transpose_macs`), ``N * Ci * Pi * (Cg / groups) *
      prod(kernel)`` for a transposed one (:func:`~opscope.formulas.conv.conv_macs`);
    * ``grad_weight``: ``numel(weight) * N * P``, a dot product of ``N * P`` pairs per weight
      element (:meth:`ConvBackwardSizes.weight_products`). ``FlopCounterMode`` counts this
      correlation as if it were not grouped, ``groups`` times as many (``Cin`` times for a
      depthwise convolution); ungrouped, the MACs are its FLOPs / 2;
    * ``grad_bias``: none (a sum).

    >>> sizes = ConvBackwardSizes((1, 8, 4, 4), (1, 8, 4, 4), (8, 1, 3, 3), (1, 1), (1, 1),
    ...                           (1, 1), False, 8, (True, True, False))
    >>> convolution_backward_macs(sizes)  # depthwise: 1152 for grad_input, 1152 for weight
    2304
    """
    grad_input, grad_weight, _ = sizes.output_mask
    macs = 0
    if grad_input:
        arguments = sizes.grad_input_sizes()
        if sizes.transposed:
            macs += conv_macs(**_conv_arguments(arguments))
        else:
            macs += conv_transpose_macs(**arguments)
    if grad_weight:
        macs += math.prod(sizes.weight) * sizes.weight_products()
    return macs


def _conv_arguments(arguments: dict[str, object]) -> dict[str, object]:
    """The :func:`~opscope.formulas.conv.conv_ops` arguments among those of a transposed
    convolution (a plain convolution's count reads no input size, stride, padding or
    dilation: they enter through its output size)."""
    unused = ("input_size", "stride", "padding", "dilation")
    return {name: value for name, value in arguments.items() if name not in unused}


def convolution_backward_op_macs(call: OpCall) -> int:
    """:func:`convolution_backward_macs` of a ``convolution_backward`` call."""
    return convolution_backward_macs(ConvBackwardSizes.of(call))


@register_op(aten.convolution_backward, family="conv", macs=convolution_backward_op_macs)
def count_convolution_backward(call: OpCall) -> int:
    """``convolution_backward(...)``, what autograd runs for every convolution (plain or
    transposed, any rank): :func:`convolution_backward_ops`."""
    return convolution_backward_ops(ConvBackwardSizes.of(call))
