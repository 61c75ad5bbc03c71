"""Upsampling: exact multiplications and additions of the interpolation, per output element.

* ``nearest`` / ``nearest-exact``: every output is a copy of one input element: 0 operations.
* ``linear`` / ``bilinear`` / ``trilinear`` (2 taps per axis) and ``bicubic`` (4 taps per axis)
  are separable, and torch evaluates them per output element as nested one-axis
  interpolations: along the last axis ``T^(D-1)`` interpolations of input elements, then
  ``T^(D-2)`` of those results along the axis before, ... up to one along the first. Each
  one-axis interpolation of ``T`` taps is a weighted sum: ``T`` multiplications and ``T - 1``
  additions. Per output element of a ``D``-axis interpolation::

      ops = (2T - 1) * (1 + T + ... + T^(D-1)) = (2T - 1) * (T^D - 1) / (T - 1)

  linear 3, bilinear 9, trilinear 21, bicubic 35.
* ``area`` is adaptive average pooling from the input size to the output size (it is what torch
  runs): counted as :func:`~opscope.formulas.pooling.adaptive_pool_ops`.

Source coordinates, tap indices and weights depend only on the sizes, never on the data, so
they are not counted, as nearest's index arithmetic is not (they are per axis position, not
per element, and shared by every batch item and channel). ``align_corners`` moves the taps and
changes the weights, not the count; a resize to the same size is counted like any other.

``F.interpolate`` reaches ATen as ``upsample_nearest*d``, ``_upsample_nearest_exact*d``,
``upsample_linear1d``, ``upsample_bilinear2d``, ``upsample_trilinear3d`` and
``upsample_bicubic2d`` (``.vec`` and ``.default`` overloads), counted by :func:`upsample_ops`
for their mode, and as ``adaptive_avg_pool*d`` for ``mode='area'`` (the pooling family). The
antialiased ``_upsample_bilinear2d_aa`` / ``_upsample_bicubic2d_aa`` have scale-dependent
supports and are not counted (they are reported as uncounted operators).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from torch import nn

from opscope.formulas.pooling import adaptive_pool_ops
from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op

_COPY_MODES = frozenset({"nearest", "nearest-exact"})
_TAPS_PER_AXIS = {"linear": 2, "bilinear": 2, "trilinear": 2, "bicubic": 4}


def interpolation_ops_per_output(taps: int, spatial_dims: int) -> int:
    """Operations of one output element of a separable interpolation with ``taps`` taps per
    axis over ``spatial_dims`` axes, evaluated as nested one-axis weighted sums::

        (2 * taps - 1) * (1 + taps + ... + taps ** (spatial_dims - 1))

    Example (bilinear: two 2-tap sums along the width, one along the height, 3 ops each):
        >>> interpolation_ops_per_output(taps=2, spatial_dims=2)
        9
    """
    return (2 * taps - 1) * sum(taps**level for level in range(spatial_dims))


def upsample_ops(mode: str, input_shape: Sequence[int], output_shape: Sequence[int]) -> int:
    """Operations of one ``nn.Upsample`` call in ``mode`` from ``input_shape`` to
    ``output_shape``, both ``(N, C, *spatial)``:

    * nearest, nearest-exact: 0;
    * linear, bilinear, trilinear, bicubic: ``numel(output) *``
      :func:`interpolation_ops_per_output` (2 taps per axis, 4 for bicubic);
    * area: adaptive average pooling of the spatial axes, ``N * C`` planes.

    Example (bilinear 2x of 1x3x4x4 to 1x3x8x8: 192 outputs, 9 ops each):
        >>> upsample_ops("bilinear", (1, 3, 4, 4), (1, 3, 8, 8))
        1728
    """
    spatial_dims = len(output_shape) - 2
    if mode in _COPY_MODES:
        return 0
    if mode == "area":
        return adaptive_pool_ops("avg", input_shape, output_shape, spatial_dims)
    if mode not in _TAPS_PER_AXIS:
        raise ValueError(f"unknown upsampling mode {mode!r}")
    return math.prod(output_shape) * interpolation_ops_per_output(
        _TAPS_PER_AXIS[mode], spatial_dims
    )


@dataclass(frozen=True)
class UpsampleConfig:
    """The settings of an ``nn.Upsample`` module that matter to its count and records: the
    interpolation ``mode`` and ``align_corners`` (``None`` read as False). The target size or
    scale factor is not kept: the real output shape carries it."""

    mode: str
    align_corners: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> UpsampleConfig:
        """Read the settings of an ``nn.Upsample`` (or ``UpsamplingNearest2d`` /
        ``UpsamplingBilinear2d``) module."""
        return cls(mode=str(module.mode), align_corners=bool(module.align_corners))


@register(nn.Upsample, describe=UpsampleConfig.from_module)
def count_upsample(config: UpsampleConfig, call: Call) -> int:
    """Operations of one ``nn.Upsample`` call: :func:`upsample_ops` on the real shapes."""
    return upsample_ops(config.mode, call.input, call.output)


# -- ATen operators -----------------------------------------------------------------------

UPSAMPLE_OP_MODES: dict[str, str] = {
    **{f"upsample_nearest{dims}d": "nearest" for dims in (1, 2, 3)},
    **{f"_upsample_nearest_exact{dims}d": "nearest-exact" for dims in (1, 2, 3)},
    "upsample_linear1d": "linear",
    "upsample_bilinear2d": "bilinear",
    "upsample_trilinear3d": "trilinear",
    "upsample_bicubic2d": "bicubic",
}
"""The interpolation mode each ATen upsampling operator computes."""


def count_upsample_op(mode: str, call: OpCall) -> int:
    """An upsampling operator computing ``mode``: :func:`upsample_ops` on the real shapes."""
    return upsample_ops(mode, call.input, call.output)


for _name, _mode in UPSAMPLE_OP_MODES.items():
    register_op(*aten_ops(_name), family="interpolate")(partial(count_upsample_op, _mode))


# -- Backward pass (ATen ops) ----------------------------------------------------------------


def upsample_backward_ops(mode: str, grad_output_shape: Sequence[int]) -> int:
    """Operations of the backward of an upsampling in ``mode`` whose output gradient has
    ``grad_output_shape``, ``(N, C, *spatial)``: each output's gradient is scattered back to
    its taps, ``T^D`` of them (1 for nearest), each contribution multiplied by the tap's weight
    (not for nearest) and added into the input's gradient::

        nearest, nearest-exact:                 ops = numel(grad_output)
        linear, bilinear, trilinear, bicubic:   ops = numel(grad_output) * 2 * T^D

    A tap's weight, the product of its one-axis weights, depends only on the sizes (as the
    forward's source coordinates and weights do), so forming it is not counted; every addition
    into the zeroed input gradient is, as the kernel does them.

    Example (bilinear 2x from 1x3x4x4 to 1x3x8x8: 192 output gradients, 4 taps each):
        >>> upsample_backward_ops("bilinear", (1, 3, 8, 8))
        1536
    """
    if mode in _COPY_MODES:
        return math.prod(grad_output_shape)
    spatial_dims = len(grad_output_shape) - 2
    return math.prod(grad_output_shape) * 2 * _TAPS_PER_AXIS[mode] ** spatial_dims


def count_upsample_backward_op(mode: str, call: OpCall) -> int:
    """``upsample_*_backward(grad_output, output_size, input_size, ...)`` computing ``mode``:
    :func:`upsample_backward_ops`."""
    return upsample_backward_ops(mode, call.input)


for _name, _mode in UPSAMPLE_OP_MODES.items():
    register_op(*aten_ops(f"{_name}_backward"), family="interpolate")(
        partial(count_upsample_backward_op, _mode)
    )
