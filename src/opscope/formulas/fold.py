"""Fold: sliding blocks summed back into an image, one addition per overlapping element.

``nn.Fold`` (``col2im``) places each of the ``L`` blocks of its input, a ``kernel_size`` patch
per plane, at its sliding position in the ``output_size`` image, and *adds* the values that
land on the same output element. An output element that ``m >= 1`` block elements land on
costs ``m - 1`` additions (the first value is placed, not added); one that no block covers
(a gap left by ``stride > kernel`` or by dilation) is 0. So::

    ops = planes * (contributions - covered)

with ``contributions`` the block elements that land inside the output (taps in the padding
are dropped) and ``covered`` the output elements that receive at least one. Blocks form a
Cartesian grid and each is a Cartesian product of per-axis taps, so both factorise into
per-axis counts (:func:`fold_axis`). ``Unfold`` (``im2col``) only gathers: it is registered
with the pass-through modules, and ``im2col`` is a ``memory`` operator (0).

The ATen operator ``col2im(self, output_size, kernel_size, dilation, padding, stride)`` is
counted by the same :func:`fold_ops` (``family="fold"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from opscope.formulas.pooling import per_axis
from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op

SPATIAL_DIMS = 2
"""torch folds into images only: ``(N, C, H, W)`` or unbatched ``(C, H, W)``."""


def fold_axis(
    out_size: int, kernel: int, dilation: int, padding: int, stride: int
) -> tuple[int, int]:
    """Along one axis of a fold into ``out_size`` positions: ``(contributions, covered)``, the
    number of block taps that land inside ``[0, out_size)`` and the number of positions they
    land on.

    torch places ``blocks = (out + 2p - d(k - 1) - 1) // s + 1`` blocks per axis, block ``b``'s
    taps at ``b * s - p + j * d`` for ``j < k``.

    Example (kernel 3, stride 2, padding 1 over 5: taps -1..1, 1..3, 3..5):
        >>> fold_axis(5, kernel=3, dilation=1, padding=1, stride=2)
        (7, 5)
    """
    blocks = (out_size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    taps = [
        block * stride - padding + tap * dilation
        for block in range(blocks)
        for tap in range(kernel)
    ]
    inside = [position for position in taps if 0 <= position < out_size]
    return len(inside), len(set(inside))


def fold_ops(
    planes: int,
    output_size: Sequence[int],
    kernel_size: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[int],
    stride: Sequence[int],
) -> int:
    """Additions of folding blocks into ``planes`` images of ``output_size``, one int per
    spatial axis for every setting::

        ops = planes * (prod_a contributions_a - prod_a covered_a)

    with :func:`fold_axis`'s per-axis counts.

    Example (Fold((4, 5), kernel_size=2): taps 0,1,1,2,2,3 by rows, 0,1,...,4 by columns):
        >>> fold_ops(1, (4, 5), (2, 2), (1, 1), (0, 0), (1, 1))
        28
    """
    axes = [
        fold_axis(*axis)
        for axis in zip(output_size, kernel_size, dilation, padding, stride, strict=True)
    ]
    contributions = math.prod(contributed for contributed, _ in axes)
    covered = math.prod(count for _, count in axes)
    return planes * (contributions - covered)


@dataclass(frozen=True)
class FoldConfig:
    """The static settings of an ``nn.Fold``, one int per spatial axis. The output size is
    read from the real call (it is the module's ``output_size``)."""

    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[int, ...]
    stride: tuple[int, ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> FoldConfig:
        """Read the settings of an ``nn.Fold`` (or of a subclass)."""
        return cls(
            kernel_size=per_axis(module.kernel_size, SPATIAL_DIMS),
            dilation=per_axis(module.dilation, SPATIAL_DIMS),
            padding=per_axis(module.padding, SPATIAL_DIMS),
            stride=per_axis(module.stride, SPATIAL_DIMS),
        )


def count_fold_output(config: FoldConfig, output: Sequence[int]) -> int:
    """:func:`fold_ops` for a fold whose output is ``output`` (planes first: ``N * C``, or
    ``C`` unbatched)."""
    return fold_ops(
        math.prod(output[:-SPATIAL_DIMS]),
        output[-SPATIAL_DIMS:],
        config.kernel_size,
        config.dilation,
        config.padding,
        config.stride,
    )


@register(nn.Fold, describe=FoldConfig.from_module)
def count_fold(config: FoldConfig, call: Call) -> int:
    """Operations of one ``nn.Fold`` call: :func:`fold_ops` on the real output."""
    return count_fold_output(config, call.output)


# -- ATen operators -----------------------------------------------------------------------


@register_op(*aten_ops("col2im"), family="fold")
def count_col2im(call: OpCall) -> int:
    """``col2im(self, output_size, kernel_size, dilation, padding, stride)`` (``F.fold``):
    :func:`fold_ops` on the output, the settings read from the arguments."""
    config = FoldConfig(
        *(
            per_axis(call.arg(index, name), SPATIAL_DIMS)
            for index, name in ((2, "kernel_size"), (3, "dilation"), (4, "padding"), (5, "stride"))
        )
    )
    return count_fold_output(config, call.output)
