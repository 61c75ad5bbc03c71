"""Convolutions: exact multiplications plus additions, bias counted.

The reference convention of ``docs/conventions.md``. Each output element of a convolution is a dot product of
``K = (Cin / groups) * prod(kernel_size)`` pairs: ``K`` multiplications, ``K - 1`` additions
to sum them, and one more addition when there is a bias. Stride, padding, dilation and
padding mode change only how many output elements there are, so they enter through the real
output shape and nowhere else.

MACs are the ``N * Cout * P * K`` products, ``FlopCounterMode``'s convolution FLOPs / 2.

The ATen convolutions (``conv1d``/``2d``/``3d``, ``cudnn_convolution``,
``mkldnn_convolution``, ...) are counted with the same :func:`conv_ops`; the general
``aten.convolution``, which may be transposed, is in :mod:`opscope.formulas.conv_transpose`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op


@dataclass(frozen=True)
class ConvConfig:
    """The static settings of a convolution module, read once when it is hooked.

    ``padding`` is kept as given: a tuple of ints, or the string ``'same'`` / ``'valid'``.
    """

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    bias: bool
    padding_mode: str

    @classmethod
    def from_module(cls, module: nn.Module) -> ConvConfig:
        """Read the settings of a ``torch.nn.Conv*d`` module (or of a subclass)."""
        padding = module.padding
        return cls(
            kernel_size=tuple(module.kernel_size),
            stride=tuple(module.stride),
            padding=padding if isinstance(padding, str) else tuple(padding),
            dilation=tuple(module.dilation),
            groups=int(module.groups),
            bias=module.bias is not None,
            padding_mode=str(module.padding_mode),
        )


def conv_ops(
    *,
    batch: int,
    in_channels: int,
    out_channels: int,
    output_size: Sequence[int],
    kernel_size: Sequence[int],
    groups: int,
    bias: bool,
) -> int:
    """Exact operations of one convolution call, in integer arithmetic.

    With ``K = (in_channels / groups) * prod(kernel_size)`` and ``P = prod(output_size)``
    (for Conv1d ``P = Lout``, for Conv2d ``P = Hout * Wout``, for Conv3d ``Dout * Hout * Wout``)::

        with bias:    ops = N * Cout * P * 2K
        without bias: ops = N * Cout * P * (2K - 1)

    Example (the spec's Conv2d, 3 -> 64 channels, 7x7 kernel, 112x112 output, no bias):
        >>> conv_ops(batch=1, in_channels=3, out_channels=64, output_size=(112, 112),
        ...          kernel_size=(7, 7), groups=1, bias=False)
        235225088
    """
    if groups < 1 or in_channels % groups:
        raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
    products_per_output = (in_channels // groups) * math.prod(kernel_size)
    ops_per_output = 2 * products_per_output - (0 if bias else 1)
    return batch * out_channels * math.prod(output_size) * ops_per_output


def conv_macs(**sizes: Any) -> int:
    """Multiply-accumulates of one convolution call, ``N * Cout * P * K`` (``FlopCounterMode``
    counts twice as many FLOPs), from the keyword arguments of :func:`conv_ops` but ``bias``.

    With a bias every product is paired with exactly one addition (``K - 1`` to sum the
    ``K`` products, one for the bias), so the MACs are half the operations with a bias.

    >>> conv_macs(batch=1, in_channels=3, out_channels=64, output_size=(112, 112),
    ...           kernel_size=(7, 7), groups=1)
    118013952
    """
    return conv_ops(**sizes, bias=True) // 2


def _conv_sizes(config: ConvConfig, call: Call) -> dict[str, object]:
    """The :func:`conv_ops` / :func:`conv_macs` arguments of one module call, bias aside."""
    channel_axis = -(len(config.kernel_size) + 1)
    output_shape = call.output
    return {
        "batch": math.prod(output_shape[:channel_axis]),
        "in_channels": call.input[channel_axis],
        "out_channels": output_shape[channel_axis],
        "output_size": output_shape[channel_axis + 1 :],
        "kernel_size": config.kernel_size,
        "groups": config.groups,
    }


def count_conv_macs(config: ConvConfig, call: Call) -> int:
    """Multiply-accumulates of one ``Conv1d``/``2d``/``3d`` call: :func:`conv_macs`."""
    return conv_macs(**_conv_sizes(config, call))


@register(nn.Conv1d, nn.Conv2d, nn.Conv3d, describe=ConvConfig.from_module, macs=count_conv_macs)
def count_conv(config: ConvConfig, call: Call) -> int:
    """Operations of one ``Conv1d``/``Conv2d``/``Conv3d`` call: :func:`conv_ops` on the
    call's real shapes.

    The channel dimension sits just before the spatial ones, so batched and unbatched
    inputs are told apart by rank: an unbatched ``(C, H, W)`` Conv2d call has ``N = 1``.
    """
    return conv_ops(**_conv_sizes(config, call), bias=config.bias)


# -- ATen operators -----------------------------------------------------------------------


def _conv_op_sizes(call: OpCall) -> dict[str, object]:
    """The :func:`conv_ops` arguments of a (non-transposed) convolution operator call, read
    from the weight ``(Cout, Cin / groups, *kernel)`` and the real output shape: the weight
    gives ``K`` directly, so ``groups`` is not needed (``in_channels`` is ``Cin / groups``)."""
    weight = call.args[1].shape
    channel_axis = -(len(weight) - 1)
    output_shape = call.output
    return {
        "batch": math.prod(output_shape[:channel_axis]),
        "in_channels": weight[1],
        "out_channels": output_shape[channel_axis],
        "output_size": output_shape[channel_axis + 1 :],
        "kernel_size": weight[2:],
        "groups": 1,
    }


def conv_op_macs(call: OpCall) -> int:
    """Multiply-accumulates of a convolution operator call: :func:`conv_macs`."""
    return conv_macs(**_conv_op_sizes(call))


def count_conv_op(bias_index: int | None, call: OpCall) -> int:
    """A convolution operator whose optional bias is argument ``bias_index`` (None: the
    operator takes no bias): :func:`conv_ops` on the call's shapes, bias iff one is given."""
    bias = bias_index is not None and call.tensor(bias_index, "bias") is not None
    return conv_ops(**_conv_op_sizes(call), bias=bias)


# conv1d/2d/3d(input, weight, bias, ...), mkldnn/miopen_convolution(self, weight, bias, ...)
register_op(
    *aten_ops("conv1d", "conv2d", "conv3d", "mkldnn_convolution", "miopen_convolution"),
    family="conv", macs=conv_op_macs,
)(partial(count_conv_op, 2))  # fmt: skip
# _slow_conv2d_forward(self, weight, kernel_size, bias, stride, padding), and its relatives
register_op(
    *aten_ops("_slow_conv2d_forward", "thnn_conv2d", "slow_conv3d", "slow_conv_dilated2d",
              "slow_conv_dilated3d"),
    family="conv", macs=conv_op_macs,
)(partial(count_conv_op, 3))  # fmt: skip
# cudnn_convolution(self, weight, padding, stride, dilation, groups, ...): no bias
register_op(*aten_ops("cudnn_convolution"), family="conv", macs=conv_op_macs)(
    partial(count_conv_op, None)
)
