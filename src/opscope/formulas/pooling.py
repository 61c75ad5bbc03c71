"""Pooling: exact comparisons, additions and divisions over the elements each window really holds.

The count of one output is set by the number ``c`` of *input* elements its window covers:

* max pooling takes the largest of ``c`` elements: ``c - 1`` comparisons (none for an empty
  window, whose output is ``-inf``);
* average pooling sums them and divides once: ``c - 1`` additions and ``1`` division, ``c`` in
  all. Padding is never added (a padded zero changes no sum, and torch skips it); padding,
  ``count_include_pad`` and ``divisor_override`` change only the divisor's value.

Windows at the borders (padding, ``ceil_mode``, dilation) and adaptive windows hold different
numbers of elements, so ``c`` is counted per output position, exactly. A window is the
Cartesian product of one interval per spatial axis, so its size is the product of its per-axis
lengths, and the sum of the sizes over every output position is the product over the axes of the
per-axis sums of lengths: each axis is walked once, ``O(sum of output sizes)`` work in all.
Finding the windows (index arithmetic) and tracking the argmax (``return_indices``) are not
arithmetic on the data and are not counted.

Two more families reuse these counts:

* ``LPPool*d`` is counted as torch computes it (``F.lp_pool*d``, the only implementation, on
  every device): the power of every input element, an average pooling, then 6 operations per
  output (see :func:`lp_pool_ops`); ``norm_type=±inf`` is a max pooling of absolute values.
* ``FractionalMaxPool*d`` takes the maximum over windows of exactly ``kernel_size`` elements
  (their pseudo-random positions always lie inside the input): ``prod(kernel_size) - 1``
  comparisons per output.

The ATen pooling operators (``max_pool2d``, ``max_pool2d_with_indices``, ``avg_pool2d``,
``adaptive_avg_pool2d``, ``_adaptive_avg_pool2d``, ``adaptive_max_pool2d``, and their 1d and 3d
versions; ``fractional_max_pool2d/3d``) read the same settings from their arguments and are
counted by the same formulas. ``F.lp_pool*d`` has no operator of its own: it runs ``pow``,
``avg_pool*d``, ``sign``, ``abs``, ``relu`` and ``mul``, each counted by its family, which add
up to :func:`lp_pool_ops`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from torch import nn

from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op

_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_MAX_POOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_ADAPTIVE_AVG_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_LP_POOLS = (nn.LPPool1d, nn.LPPool2d, nn.LPPool3d)
_FRACTIONAL_MAX_POOLS = (nn.FractionalMaxPool2d, nn.FractionalMaxPool3d)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def sliding_window_sizes(
    in_size: int, out_size: int, kernel: int, stride: int, padding: int, dilation: int
) -> list[int]:
    """Along one axis, how many input elements each of the ``out_size`` windows holds.

    Window ``o`` has taps at ``o * stride - padding + k * dilation`` for ``k < kernel`` (torch's
    placement for max and average pooling, ``ceil_mode`` included: it only adds outputs); only
    the taps inside ``[0, in_size)`` hold an element.

    Example (kernel 3, stride 2, padding 1 over 5 elements: taps -1..1, 1..3, 3..5):
        >>> sliding_window_sizes(5, 3, kernel=3, stride=2, padding=1, dilation=1)
        [2, 3, 2]
    """
    sizes = []
    for index in range(out_size):
        start = index * stride - padding
        first_tap = max(0, _ceil_div(-start, dilation))
        last_tap = min(kernel - 1, (in_size - 1 - start) // dilation)
        sizes.append(max(0, last_tap - first_tap + 1))
    return sizes


def adaptive_window_sizes(in_size: int, out_size: int) -> list[int]:
    """Along one axis, the lengths of the ``out_size`` adaptive windows over ``in_size``
    elements: window ``o`` is ``[floor(o * in / out), ceil((o + 1) * in / out))``.

    Example (5 elements into 3 windows: [0, 2), [1, 4), [3, 5)):
        >>> adaptive_window_sizes(5, 3)
        [2, 3, 2]
    """
    return [
        _ceil_div((index + 1) * in_size, out_size) - index * in_size // out_size
        for index in range(out_size)
    ]


def max_pool_ops(planes: int, window_sizes: Sequence[Sequence[int]]) -> int:
    """Comparisons of max pooling over ``planes`` independent planes (batch times channels).

    ``window_sizes[d][o]`` is the length along axis ``d`` of the windows at index ``o`` there.
    A window of ``c`` elements takes ``c - 1`` comparisons, and an empty one none, so::

        ops = planes * (prod_d sum_o w_d(o) - prod_d #{o : w_d(o) > 0})

    (a window is empty as soon as one of its axis intervals is).

    Example (MaxPool2d(3, stride=2, padding=1) on 5x5: windows of 2, 3, 2 along each axis):
        >>> max_pool_ops(1, [[2, 3, 2], [2, 3, 2]])
        40
    """
    elements = math.prod(sum(sizes) for sizes in window_sizes)
    windows = math.prod(sum(1 for size in sizes if size) for sizes in window_sizes)
    return planes * (elements - windows)


def avg_pool_ops(planes: int, window_sizes: Sequence[Sequence[int]]) -> int:
    """Additions and divisions of average pooling over ``planes`` planes.

    A window of ``c`` elements takes ``c - 1`` additions and one division, ``c`` in all (an
    empty window none), so::

        ops = planes * prod_d sum_o w_d(o)

    Example (AvgPool2d(3, stride=2, padding=1) on 5x5):
        >>> avg_pool_ops(1, [[2, 3, 2], [2, 3, 2]])
        49
    """
    return planes * math.prod(sum(sizes) for sizes in window_sizes)


_OPS_BY_KIND: dict[str, Callable[[int, Sequence[Sequence[int]]], int]] = {
    "max": max_pool_ops,
    "avg": avg_pool_ops,
}


def _spatial_dims(module: nn.Module, families: Sequence[type[nn.Module]]) -> int:
    """1, 2 or 3: the position of the module's type in ``families`` (its 1d, 2d, 3d types)."""
    for dims, family in enumerate(families, start=1):
        if isinstance(module, family):
            return dims
    raise TypeError(f"{type(module).__name__} is none of {[f.__name__ for f in families]}")


def per_axis(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """A pooling argument as one int per axis; like torch, a single value is broadcast."""
    values = (value,) if isinstance(value, int) else tuple(value)
    if len(values) == 1:
        values *= dims
    if len(values) != dims:
        raise ValueError(f"expected 1 or {dims} values, got {value!r}")
    return tuple(int(v) for v in values)


def kernel_and_stride(
    kernel_size: int | Sequence[int], stride: int | Sequence[int] | None, dims: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A pooling's kernel size and stride, one int per axis; like torch, a stride that is None
    or empty is the kernel size.

    >>> kernel_and_stride(3, None, 2), kernel_and_stride((2, 3), [], 2)
    (((3, 3), (3, 3)), ((2, 3), (2, 3)))
    """
    kernel = per_axis(kernel_size, dims)
    return kernel, per_axis(stride or kernel, dims)


@dataclass(frozen=True)
class PoolConfig:
    """The static settings of a ``MaxPool*d`` / ``AvgPool*d`` module, one int per spatial axis.

    ``kind`` is ``"max"`` or ``"avg"``; average pooling has no dilation (all ones).
    ``count_include_pad`` and ``divisor_override`` are not kept: they change the divisor's
    value, never the number of operations.
    """

    kind: str
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> PoolConfig:
        """Read the settings of a max or average pooling module (or of a subclass)."""
        is_max = isinstance(module, _MAX_POOLS)
        dims = _spatial_dims(module, _MAX_POOLS if is_max else _AVG_POOLS)
        kernel_size, stride = kernel_and_stride(module.kernel_size, module.stride, dims)
        return cls(
            kind="max" if is_max else "avg",
            kernel_size=kernel_size,
            stride=stride,
            padding=per_axis(module.padding, dims),
            dilation=per_axis(module.dilation if is_max else 1, dims),
            ceil_mode=bool(module.ceil_mode),
        )


@register(*_MAX_POOLS, *_AVG_POOLS, describe=PoolConfig.from_module)
def count_pool(config: PoolConfig, call: Call) -> int:
    """Operations of one ``MaxPool*d`` / ``AvgPool*d`` call: :func:`max_pool_ops` or
    :func:`avg_pool_ops` over the windows :func:`sliding_window_sizes` finds on the real shapes.

    Every dimension before the spatial ones (batch, if any, and channels) is a plane, so an
    unbatched ``(C, H, W)`` call counts ``C`` planes.
    """
    dims = len(config.kernel_size)
    output = call.output
    window_sizes = [
        sliding_window_sizes(*axis)
        for axis in zip(
            call.input[-dims:],
            output[-dims:],
            config.kernel_size,
            config.stride,
            config.padding,
            config.dilation,
            strict=True,
        )  # fmt: skip
    ]
    return _OPS_BY_KIND[config.kind](math.prod(output[:-dims]), window_sizes)


@dataclass(frozen=True)
class AdaptivePoolConfig:
    """An adaptive pooling module: ``kind`` (``"max"`` or ``"avg"``) and its number of spatial
    axes. The windows follow from the real input and output sizes alone."""

    kind: str
    spatial_dims: int

    @classmethod
    def from_module(cls, module: nn.Module) -> AdaptivePoolConfig:
        """Read the kind and dimensionality of an ``Adaptive*Pool*d`` module."""
        is_max = isinstance(module, _ADAPTIVE_MAX_POOLS)
        families = _ADAPTIVE_MAX_POOLS if is_max else _ADAPTIVE_AVG_POOLS
        return cls(kind="max" if is_max else "avg", spatial_dims=_spatial_dims(module, families))


def adaptive_pool_ops(
    kind: str, input_shape: Sequence[int], output_shape: Sequence[int], spatial_dims: int
) -> int:
    """Operations of adaptive max (``kind="max"``) or average (``"avg"``) pooling from
    ``input_shape`` to ``output_shape``, whose last ``spatial_dims`` sizes are pooled and whose
    leading sizes are planes: :func:`max_pool_ops` or :func:`avg_pool_ops` over the windows of
    :func:`adaptive_window_sizes`.

    Example (global average pooling of a 2x64x7x7 input: 49 elements per plane):
        >>> adaptive_pool_ops("avg", (2, 64, 7, 7), (2, 64, 1, 1), spatial_dims=2)
        6272
    """
    window_sizes = [
        adaptive_window_sizes(in_size, out_size)
        for in_size, out_size in zip(
            input_shape[-spatial_dims:], output_shape[-spatial_dims:], strict=True
        )
    ]
    return _OPS_BY_KIND[kind](math.prod(output_shape[:-spatial_dims]), window_sizes)


@register(*_ADAPTIVE_MAX_POOLS, *_ADAPTIVE_AVG_POOLS, describe=AdaptivePoolConfig.from_module)
def count_adaptive_pool(config: AdaptivePoolConfig, call: Call) -> int:
    """Operations of one ``AdaptiveMaxPool*d`` / ``AdaptiveAvgPool*d`` call:
    :func:`adaptive_pool_ops` on the real shapes (an unbatched call counts ``C`` planes)."""
    return adaptive_pool_ops(config.kind, call.input, call.output, config.spatial_dims)


LP_POOL_OPS_PER_OUTPUT = 6
"""What ``F.lp_pool*d`` computes per output ``a`` of its average pooling, in
``(sign(a) * relu(|a|) * prod(kernel_size)) ** (1 / p)``: ``sign`` 2 (two comparisons),
``|a|`` 0, ``relu`` 1, the product 1, the multiplication by the kernel volume 1, the power 1."""


@dataclass(frozen=True)
class LPPoolConfig:
    """The static settings of an ``LPPool1d/2d/3d`` module, one int per spatial axis: the
    norm's order ``p`` (``norm_type``, a float), the windows (no padding, no dilation; the
    stride is the kernel size when not given) and ``ceil_mode``."""

    norm_type: float
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    ceil_mode: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> LPPoolConfig:
        """Read the settings of a power-average pooling module (or of a subclass)."""
        dims = _spatial_dims(module, _LP_POOLS)
        kernel_size, stride = kernel_and_stride(module.kernel_size, module.stride, dims)
        return cls(
            norm_type=float(module.norm_type),
            kernel_size=kernel_size,
            stride=stride,
            ceil_mode=bool(module.ceil_mode),
        )

    def pool(self) -> PoolConfig:
        """The pooling ``F.lp_pool*d`` runs: average pooling of the powers, or, for
        ``p = ±inf``, max pooling of the absolute values (no padding, no dilation)."""
        dims = len(self.kernel_size)
        return PoolConfig(
            kind="max" if math.isinf(self.norm_type) else "avg",
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=(0,) * dims,
            dilation=(1,) * dims,
            ceil_mode=self.ceil_mode,
        )


def lp_pool_ops(norm_type: float, input_numel: int, output_numel: int, pool_ops: int) -> int:
    """Operations of one power-average pooling as torch computes it,
    ``(sign(a) * relu(|a|) * prod(kernel_size)) ** (1 / p)`` with ``a = avg_pool(x ** p)``::

        ops = numel(input) + pool_ops + 6 * numel(output)      (finite p)
        ops = pool_ops                                        (p = ±inf: max_pool(|x|))

    ``pool_ops`` is the count of that average (or max) pooling over the real windows
    (:func:`avg_pool_ops`: ``c`` per window of ``c`` elements), the first term the power of
    every input element (all of them, those no window reads included), the last
    :data:`LP_POOL_OPS_PER_OUTPUT` per output. Sign flips and absolute values are free.

    Example (LPPool2d(2, 2) on (1, 3, 4, 4): 48 powers, 12 windows of 4, 12 outputs):
        >>> lp_pool_ops(2.0, 48, 12, pool_ops=12 * 4)
        168
    """
    if math.isinf(norm_type):
        return pool_ops
    return input_numel + pool_ops + LP_POOL_OPS_PER_OUTPUT * output_numel


@register(*_LP_POOLS, describe=LPPoolConfig.from_module)
def count_lp_pool(config: LPPoolConfig, call: Call) -> int:
    """Operations of one ``LPPool1d/2d/3d`` call: :func:`lp_pool_ops`, its pooling counted
    by :func:`count_pool` on the real shapes (an unbatched call counts ``C`` planes)."""
    return lp_pool_ops(
        config.norm_type,
        math.prod(call.input),
        math.prod(call.output),
        count_pool(config.pool(), call),
    )


@dataclass(frozen=True)
class FractionalMaxPoolConfig:
    """The kernel size of a ``FractionalMaxPool2d/3d`` module, one int per spatial axis. The
    output size (given, or ``output_ratio`` times the input's) is read from the real call,
    and the windows' pseudo-random positions do not change their size."""

    kernel_size: tuple[int, ...]

    @classmethod
    def from_module(cls, module: nn.Module) -> FractionalMaxPoolConfig:
        """Read the kernel size of a fractional max pooling module (or of a subclass)."""
        dims = 2 if isinstance(module, nn.FractionalMaxPool2d) else 3
        return cls(kernel_size=per_axis(module.kernel_size, dims))


def fractional_max_pool_ops(kernel_size: Sequence[int], output_shape: Sequence[int]) -> int:
    """Comparisons of a fractional max pooling with ``kernel_size`` windows whose output is
    ``output_shape`` (planes first, then one size per axis of ``kernel_size``)::

        ops = numel(output) * (prod(kernel_size) - 1)

    Every window holds exactly ``prod(kernel_size)`` input elements: torch places window
    ``o`` of an axis at ``floor((o + u) * a) - floor(u * a)`` with ``a = (In - k) / (Out - 1)``
    and ``u`` drawn per plane, the last one at ``In - k``, so each lies inside the input.

    Example (FractionalMaxPool2d(3, output_size=5) on (2, 4, 11, 11)):
        >>> fractional_max_pool_ops((3, 3), (2, 4, 5, 5))
        1600
    """
    return math.prod(output_shape) * (math.prod(kernel_size) - 1)


@register(*_FRACTIONAL_MAX_POOLS, describe=FractionalMaxPoolConfig.from_module)
def count_fractional_max_pool(config: FractionalMaxPoolConfig, call: Call) -> int:
    """Operations of one ``FractionalMaxPool2d/3d`` call: :func:`fractional_max_pool_ops` on
    the real output (an unbatched call counts ``C`` planes)."""
    return fractional_max_pool_ops(config.kernel_size, call.output)


# -- ATen operators -----------------------------------------------------------------------


def pool_config_of(call: OpCall, kind: str, dims: int) -> PoolConfig:
    """The :class:`PoolConfig` of a pooling operator call: ``max_pool*d(self, kernel_size,
    stride=[], padding=0, dilation=1, ceil_mode=False)`` or ``avg_pool*d(self, kernel_size,
    stride=[], padding=0, ceil_mode=False, ...)``; an empty stride is the kernel size."""
    kernel_size, stride = kernel_and_stride(call.arg(1, "kernel_size"), call.arg(2, "stride"), dims)
    is_max = kind == "max"
    return PoolConfig(
        kind=kind,
        kernel_size=kernel_size,
        stride=stride,
        padding=per_axis(call.arg(3, "padding", 0), dims),
        dilation=per_axis(call.arg(4, "dilation", 1) if is_max else 1, dims),
        ceil_mode=bool(call.arg(5 if is_max else 4, "ceil_mode", False)),
    )


def _as_module_call(call: OpCall) -> Call:
    return Call(inputs=(call.input,), outputs=call.outputs)


def count_pool_op(kind: str, dims: int, call: OpCall) -> int:
    """A ``kind`` (``"max"``/``"avg"``) pooling operator over ``dims`` axes:
    :func:`count_pool` with the settings of :func:`pool_config_of`."""
    return count_pool(pool_config_of(call, kind, dims), _as_module_call(call))


def count_adaptive_pool_op(kind: str, dims: int, call: OpCall) -> int:
    """An adaptive ``kind`` pooling operator over ``dims`` axes (``adaptive_avg_pool2d(self,
    output_size)``...): :func:`count_adaptive_pool`, the windows following from the shapes."""
    return count_adaptive_pool(AdaptivePoolConfig(kind, dims), _as_module_call(call))


for _dims in (1, 2, 3):
    register_op(
        *aten_ops(f"max_pool{_dims}d", f"max_pool{_dims}d_with_indices",
                  f"mkldnn_max_pool{_dims}d"),
        family="pool",
    )(partial(count_pool_op, "max", _dims))  # fmt: skip
    register_op(*aten_ops(f"avg_pool{_dims}d"), family="pool")(partial(count_pool_op, "avg", _dims))
    register_op(
        *aten_ops(f"adaptive_avg_pool{_dims}d", f"_adaptive_avg_pool{_dims}d"), family="pool"
    )(partial(count_adaptive_pool_op, "avg", _dims))
    register_op(*aten_ops(f"adaptive_max_pool{_dims}d"), family="pool")(
        partial(count_adaptive_pool_op, "max", _dims)
    )


def count_fractional_max_pool_op(dims: int, call: OpCall) -> int:
    """``fractional_max_pool2d(self, kernel_size, output_size, random_samples)`` (and 3d):
    :func:`fractional_max_pool_ops` on the output values' shape."""
    return fractional_max_pool_ops(per_axis(call.arg(1, "kernel_size"), dims), call.output)


for _dims in (2, 3):
    register_op(*aten_ops(f"fractional_max_pool{_dims}d"), family="pool")(
        partial(count_fractional_max_pool_op, _dims)
    )


# -- Backward pass (ATen ops) ----------------------------------------------------------------


def forward_call(call: OpCall) -> OpCall:
    """The forward call a pooling (or upsampling) backward operator differentiates: its
    arguments after the incoming gradient ``grad_output`` (the forward's input, then its
    settings, in the forward's order), and the gradient's shape as the output."""
    return OpCall(call.args[1:], call.kwargs, (call.args[0].shape,))


def count_scatter_backward(call: OpCall) -> int:
    """A max pooling's backward (``max_pool2d_with_indices_backward``,
    ``adaptive_max_pool2d_backward``, ``fractional_max_pool2d_backward``, and 3d): each output's
    gradient added into the input's gradient at the saved argmax, one addition per element of
    ``grad_output`` (which inputs receive several is data: the additions are those the kernel
    does, the first into the zeroed gradient included).

    >>> from opscope.formulas.registry import TensorMeta
    >>> grad = TensorMeta((2, 3, 4, 4), None)
    >>> count_scatter_backward(OpCall((grad, TensorMeta((2, 3, 8, 8), None)), (), ((2, 3, 8, 8),)))
    96
    """
    return math.prod(call.args[0].shape)


def count_avg_pool_backward(forward: Callable[[OpCall], int], call: OpCall) -> int:
    """An average pooling's backward: each output's gradient divided by its divisor (1 per
    output), then added to every input element of its window (the ``c`` of the forward's
    window, :func:`avg_pool_ops`): ``numel(grad_output) + forward ops``, ``forward`` counting
    the forward call (:func:`forward_call`)."""
    return math.prod(call.args[0].shape) + forward(forward_call(call))


for _dims in (2, 3):
    register_op(
        *aten_ops(f"max_pool{_dims}d_with_indices_backward", f"adaptive_max_pool{_dims}d_backward",
                  f"fractional_max_pool{_dims}d_backward"),
        family="pool",
    )(count_scatter_backward)  # fmt: skip
    register_op(*aten_ops(f"avg_pool{_dims}d_backward"), family="pool")(
        partial(count_avg_pool_backward, partial(count_pool_op, "avg", _dims))
    )
    register_op(*aten_ops(f"_adaptive_avg_pool{_dims}d_backward"), family="pool")(
        partial(count_avg_pool_backward, partial(count_adaptive_pool_op, "avg", _dims))
    )
