"""Normalisation layers: BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm,
LocalResponseNorm.

Every mean/variance normalisation is counted the same way (``docs/formulas/norm.md``). With
``T`` the number of elements of the call and ``S`` the number of (mean, variance) pairs it
normalises with:

* centring, ``x - mean``: one subtraction per element (``T``), computed once and shared by
  the variance and the output;
* batch statistics, when the call computes them: the mean of ``M`` values is ``M - 1``
  additions and one division (``T`` in all), the biased variance is ``M`` squares of the
  centred values, ``M - 1`` additions and one division (``2T`` in all);
* ``sqrt(var + eps)``: one addition and one square root per pair (``2S``), then one division
  per element (``T``); multiplying by ``rsqrt(var + eps)`` instead counts the same;
* the affine map: one multiplication per element for the weight, one addition for the bias,
  each only when the module has it.

An eval-mode BatchNorm (or InstanceNorm with ``track_running_stats``) normalises with its
running statistics, so it computes no mean and no variance. A training call that tracks
running statistics also updates them, which is counted: see :func:`running_update_ops`.

The ATen normalisation operators are counted by the same :func:`normalization_ops`, reading
from their arguments what the module formulas read from the module: ``layer_norm`` /
``native_layer_norm``, ``group_norm`` / ``native_group_norm``, ``instance_norm``, and the
batch norms (``batch_norm``, ``native_batch_norm``, ``_native_batch_norm_legit`` (with or
without stats), ``_native_batch_norm_legit_no_training``, ``_batch_norm_with_update``,
``_batch_norm_no_update``, ``_batch_norm_impl_index``, ``cudnn_batch_norm``,
``miopen_batch_norm``). A weight or bias is counted iff it is given; batch statistics are
computed iff the call says ``training`` (or, for ``_batch_norm_no_update``, has no running
statistics), and a training call given running statistics updates them.
``LocalResponseNorm`` has no operator of its own: ``F.local_response_norm`` runs as ``pad``,
``avg_pool``, ``mul``, ``pow``, ``add`` and ``div``, each counted by its own family.

``RMSNorm`` normalises by a root mean square, with no mean subtracted and no bias: it is
counted as torch evaluates it, ``x * rsqrt(mean(x^2) + eps) * weight``
(:func:`rms_norm_ops`), so that the module, ``rms_norm`` / ``_fused_rms_norm`` and the
operators they decompose into (``pow``, ``mean``, ``add``, ``rsqrt``, ``mul``) count the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from opscope.formulas.reduction import OPS_PER_GROUP, reduction_ops
from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op

aten = torch.ops.aten

RUNNING_UPDATE_OPS_PER_CHANNEL = 7
"""Per channel: ``running_mean = (1 - m) * running_mean + m * mean`` (2 multiplications,
1 addition), the unbiased correction ``var * M / (M - 1)`` (1 multiplication) and the same
blend for ``running_var`` (3). The scalars ``m``, ``1 - m`` and ``M / (M - 1)`` are per-call
constants that do not depend on the data, so they are not counted."""


def normalization_ops(
    *, elements: int, stat_sets: int, batch_stats: bool, weight: bool, bias: bool
) -> int:
    """Exact operations of normalising ``T = elements`` values with ``S = stat_sets``
    (mean, variance) pairs, in integer arithmetic::

        batch statistics:   5T + 2S   (mean T, variance 2T, centring T, division T, eps and sqrt 2S)
        running statistics: 2T + 2S   (centring T, division T, eps and sqrt 2S)
        + T with a weight, + T with a bias

    With batch statistics each pair covers ``M = T / S`` values: its mean is ``M - 1``
    additions and a division, its variance ``M`` squares, ``M - 1`` additions and a division.

    Example (a training, affine BatchNorm2d(3) on (2, 3, 4, 4): T = 96, S = 3; its running
    update is counted apart, by :func:`running_update_ops`):
        >>> normalization_ops(elements=96, stat_sets=3, batch_stats=True, weight=True, bias=True)
        678
        >>> 7 * 96 + 2 * 3
        678
    """
    ops = 2 * elements + 2 * stat_sets
    if batch_stats:
        ops += 3 * elements
    return ops + elements * (int(weight) + int(bias))


def running_update_ops(*, channels: int, averaged: int = 0) -> int:
    """Exact operations of updating the running mean and variance of ``C = channels``.

    BatchNorm (``averaged=0``) blends each channel's batch statistics into its running ones::

        ops = 7C

    (see :data:`RUNNING_UPDATE_OPS_PER_CHANNEL`). InstanceNorm first averages, per channel,
    the ``averaged = N`` instance means and the ``N`` instance variances (``N - 1`` additions
    and a division each)::

        ops = C * (2N + 7)

    Example (InstanceNorm1d(4, track_running_stats=True) training on a (3, 4, 5) input):
        >>> running_update_ops(channels=4, averaged=3)
        52
    """
    return channels * (2 * averaged + RUNNING_UPDATE_OPS_PER_CHANNEL)


@dataclass(frozen=True)
class RunningStatsConfig:
    """The static settings of a BatchNorm, read once when it is hooked.

    Attributes:
        affine: whether the module has a per-channel weight and bias.
        track_running_stats: whether training calls update the running statistics.
        running_stats: whether the running-statistic buffers exist (they do not when
            ``track_running_stats=False``; then even eval calls use batch statistics).
    """

    affine: bool
    track_running_stats: bool
    running_stats: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> RunningStatsConfig:
        """Read the settings of a ``torch.nn.BatchNorm*d`` / ``SyncBatchNorm`` module."""
        return cls(
            affine=bool(module.affine),
            track_running_stats=bool(module.track_running_stats),
            running_stats=module.running_mean is not None,
        )


@dataclass(frozen=True)
class InstanceNormConfig(RunningStatsConfig):
    """The static settings of an InstanceNorm, read once when it is hooked.

    Attributes:
        unbatched_rank: the rank of an unbatched input, ``(C, *spatial)``: 2 for
            InstanceNorm1d, 3 for 2d, 4 for 3d.
    """

    unbatched_rank: int

    @classmethod
    def from_module(cls, module: nn.Module) -> InstanceNormConfig:
        """Read the settings of a ``torch.nn.InstanceNorm*d`` module (lazy ones included)."""
        base = RunningStatsConfig.from_module(module)
        return cls(
            affine=base.affine,
            track_running_stats=base.track_running_stats,
            running_stats=base.running_stats,
            # Every concrete InstanceNorm (the lazy ones are not InstanceNorm1d/2d/3d
            # subclasses) states the rank it takes as unbatched here.
            unbatched_rank=int(module._get_no_batch_dim()),
        )


@dataclass(frozen=True)
class RMSNormConfig:
    """The static settings of a ``torch.nn.RMSNorm`` (``eps`` changes values, not the count:
    it is added whatever it is, ``None`` meaning the dtype's machine epsilon).

    Attributes:
        normalized_shape: the trailing dimensions each root mean square is taken over.
        elementwise_affine: whether the module has a weight (it never has a bias).
    """

    normalized_shape: tuple[int, ...]
    elementwise_affine: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> RMSNormConfig:
        """Read the settings of a ``torch.nn.RMSNorm`` module."""
        return cls(
            normalized_shape=tuple(module.normalized_shape),
            elementwise_affine=module.weight is not None,
        )


@dataclass(frozen=True)
class LayerNormConfig(RMSNormConfig):
    """The static settings of a ``torch.nn.LayerNorm``: an RMSNorm's, and a bias.

    Attributes:
        normalized_shape: the trailing dimensions each mean and variance is taken over.
        elementwise_affine: whether the module has a weight (``normalized_shape`` values).
        bias: whether it also has a bias (``bias=False`` drops it in torch >= 2.1).
    """

    bias: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> LayerNormConfig:
        """Read the settings of a ``torch.nn.LayerNorm`` module."""
        base = RMSNormConfig.from_module(module)
        return cls(base.normalized_shape, base.elementwise_affine, bias=module.bias is not None)


@dataclass(frozen=True)
class GroupNormConfig:
    """The static settings of a ``torch.nn.GroupNorm``."""

    num_groups: int
    affine: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> GroupNormConfig:
        """Read the settings of a ``torch.nn.GroupNorm`` module."""
        return cls(num_groups=int(module.num_groups), affine=bool(module.affine))


@dataclass(frozen=True)
class LocalResponseNormConfig:
    """The static settings of a ``torch.nn.LocalResponseNorm``."""

    size: int
    alpha: float
    beta: float
    k: float

    @classmethod
    def from_module(cls, module: nn.Module) -> LocalResponseNormConfig:
        """Read the settings of a ``torch.nn.LocalResponseNorm`` module."""
        return cls(
            size=int(module.size),
            alpha=float(module.alpha),
            beta=float(module.beta),
            k=float(module.k),
        )


@register(_BatchNorm, describe=RunningStatsConfig.from_module)
def count_batch_norm(config: RunningStatsConfig, call: Call) -> int:
    """Operations of one ``BatchNorm1d/2d/3d`` (or ``SyncBatchNorm``, lazy) call.

    The input is ``(N, C)`` or ``(N, C, *spatial)``: one (mean, variance) pair per channel.
    Training calls, and eval calls of a module without running buffers, compute the batch
    statistics; eval calls with running buffers use those. A training call with
    ``track_running_stats`` also updates the running buffers (``7C``).
    """
    shape = call.input
    channels = shape[1]
    batch_stats = call.training or not config.running_stats
    ops = normalization_ops(
        elements=math.prod(shape),
        stat_sets=channels,
        batch_stats=batch_stats,
        weight=config.affine,
        bias=config.affine,
    )
    if call.training and config.track_running_stats and config.running_stats:
        ops += running_update_ops(channels=channels)
    return ops


@register(_InstanceNorm, describe=InstanceNormConfig.from_module)
def count_instance_norm(config: InstanceNormConfig, call: Call) -> int:
    """Operations of one ``InstanceNorm1d/2d/3d`` (or lazy) call.

    The input is ``(N, C, *spatial)``, or unbatched ``(C, *spatial)`` with ``N = 1``: one
    (mean, variance) pair per sample and channel, ``N * C`` pairs, unless the module tracks
    running statistics and is in eval mode, when it uses the ``C`` running pairs. A training
    call with running buffers also updates them, averaging the ``N`` instance statistics of
    each channel first: ``C * (2N + 7)``.
    """
    shape = call.input
    channel_axis = -config.unbatched_rank
    batch = math.prod(shape[:channel_axis])
    channels = shape[channel_axis]
    batch_stats = call.training or not config.track_running_stats
    ops = normalization_ops(
        elements=math.prod(shape),
        stat_sets=batch * channels if batch_stats else channels,
        batch_stats=batch_stats,
        weight=config.affine,
        bias=config.affine,
    )
    if batch_stats and config.running_stats:
        ops += running_update_ops(channels=channels, averaged=batch)
    return ops


@register(nn.LayerNorm, describe=LayerNormConfig.from_module)
def count_layer_norm(config: LayerNormConfig, call: Call) -> int:
    """Operations of one ``LayerNorm`` call: one (mean, variance) pair per position of the
    leading dimensions (those before ``normalized_shape``), train and eval alike."""
    shape = call.input
    leading = shape[: len(shape) - len(config.normalized_shape)]
    return normalization_ops(
        elements=math.prod(shape),
        stat_sets=math.prod(leading),
        batch_stats=True,
        weight=config.elementwise_affine,
        bias=config.bias,
    )


RMS_NORM_OPS_PER_SET = 3
"""Per root mean square: adding ``eps``, then ``rsqrt``, a square root and a reciprocal (the
element-wise family's 2)."""


def rms_norm_ops(*, elements: int, stat_sets: int, weight: bool) -> int:
    """Exact operations of an RMS normalisation of ``T = elements`` values in ``S =
    stat_sets`` sets of ``M = T / S``, ``y = x * rsqrt(mean(x^2) + eps) (* weight)``, as
    torch evaluates it::

        ops = 3T + 3S (+ T with a weight)

    Per set: ``M`` squares, the mean (``M - 1`` additions, 1 division), ``+ eps`` and
    ``rsqrt`` (a square root and a reciprocal, :data:`RMS_NORM_OPS_PER_SET` in all); per
    element, one multiplication by the reciprocal and one by the weight.

    Example (RMSNorm(8) on (2, 3, 8): T = 48, S = 6):
        >>> rms_norm_ops(elements=48, stat_sets=6, weight=True)
        210
    """
    return 3 * elements + RMS_NORM_OPS_PER_SET * stat_sets + (elements if weight else 0)


def sets_of(elements: int, normalized: int) -> int:
    """How many sets of ``normalized`` trailing values ``elements`` values form (0 for an
    empty set: nothing is normalised).

    >>> sets_of(48, 8), sets_of(0, 0)
    (6, 0)
    """
    return elements // normalized if normalized else 0


@register(nn.RMSNorm, describe=RMSNormConfig.from_module)
def count_rms_norm(config: RMSNormConfig, call: Call) -> int:
    """Operations of one ``RMSNorm`` call: :func:`rms_norm_ops` with one set per position of
    the leading dimensions (those before ``normalized_shape``), train and eval alike."""
    elements = math.prod(call.input)
    return rms_norm_ops(
        elements=elements,
        stat_sets=sets_of(elements, math.prod(config.normalized_shape)),
        weight=config.elementwise_affine,
    )


@register(nn.GroupNorm, describe=GroupNormConfig.from_module)
def count_group_norm(config: GroupNormConfig, call: Call) -> int:
    """Operations of one ``GroupNorm`` call on ``(N, C, *)``: one (mean, variance) pair per
    sample and group, ``N * num_groups`` pairs, train and eval alike."""
    shape = call.input
    return normalization_ops(
        elements=math.prod(shape),
        stat_sets=shape[0] * config.num_groups,
        batch_stats=True,
        weight=config.affine,
        bias=config.affine,
    )


def lrn_window_terms(*, channels: int, size: int) -> int:
    """Total number of in-range channels over all channels' windows.

    Channel ``c`` sums the squares of channels ``c - size // 2`` to ``c + (size - 1) // 2``
    that exist; summed over ``c``, each offset ``d`` of the window contributes the
    ``max(0, C - |d|)`` channels it stays in range for.

        >>> lrn_window_terms(channels=4, size=3)  # windows of 2, 3, 3 and 2 channels
        10
    """
    offsets = range(-(size // 2), (size - 1) // 2 + 1)
    return sum(max(0, channels - abs(offset)) for offset in offsets)


def local_response_norm_ops(*, batch: int, channels: int, positions: int, size: int) -> int:
    """Exact operations of one ``LocalResponseNorm`` call,
    ``y_c = x_c / (k + alpha / size * sum_{c' in window(c)} x_c'^2) ** beta``::

        ops = N * P * (W + 4C)

    with ``P`` the product of the spatial sizes and ``W`` = :func:`lrn_window_terms`. Per
    element: one square, ``w_c - 1`` additions over its window of ``w_c`` in-range channels,
    one multiplication by the constant ``alpha / size``, one addition of ``k``, one power
    and one division.

    Example (AlexNet's first LRN, size 5, on (1, 96, 55, 55)):
        >>> local_response_norm_ops(batch=1, channels=96, positions=55 * 55, size=5)
        2595450
    """
    return batch * positions * (lrn_window_terms(channels=channels, size=size) + 4 * channels)


@register(nn.LocalResponseNorm, describe=LocalResponseNormConfig.from_module)
def count_local_response_norm(config: LocalResponseNormConfig, call: Call) -> int:
    """Operations of one ``LocalResponseNorm`` call on ``(N, C, *spatial)`` (torch requires
    at least 3 dimensions): :func:`local_response_norm_ops` on the real shape."""
    shape = call.input
    return local_response_norm_ops(
        batch=shape[0], channels=shape[1], positions=math.prod(shape[2:]), size=config.size
    )


# -- ATen operators -----------------------------------------------------------------------


def _affine_ops(
    call: OpCall, *, elements: int, stat_sets: int, batch_stats: bool, weight_index: int = 1
) -> int:
    """:func:`normalization_ops` with the weight (argument ``weight_index``) and the bias
    (the next argument) counted iff given."""
    return normalization_ops(
        elements=elements,
        stat_sets=stat_sets,
        batch_stats=batch_stats,
        weight=call.tensor(weight_index, "weight") is not None,
        bias=call.tensor(weight_index + 1, "bias") is not None,
    )


@register_op(aten.layer_norm, aten.native_layer_norm, family="norm")
def count_layer_norm_op(call: OpCall) -> int:
    """``layer_norm(input, normalized_shape, weight, bias, eps)`` (and ``native_layer_norm``):
    one (mean, variance) pair per position of the leading dimensions, as
    :func:`count_layer_norm`."""
    elements = math.prod(call.input)
    normalized = math.prod(call.arg(1, "normalized_shape"))
    return _affine_ops(
        call, elements=elements, stat_sets=sets_of(elements, normalized),
        batch_stats=True, weight_index=2,
    )  # fmt: skip


@register_op(*aten_ops("rms_norm", "_fused_rms_norm"), family="norm")
def count_rms_norm_op(call: OpCall) -> int:
    """``rms_norm(input, normalized_shape, weight=None, eps=None)`` and ``_fused_rms_norm``
    (the same arguments; it also returns the reciprocals it computed): :func:`rms_norm_ops`,
    the weight counted iff given, as :func:`count_rms_norm`."""
    elements = math.prod(call.input)
    return rms_norm_ops(
        elements=elements,
        stat_sets=sets_of(elements, math.prod(call.arg(1, "normalized_shape"))),
        weight=call.tensor(2, "weight") is not None,
    )


@register_op(aten.group_norm, family="norm")
def count_group_norm_op(call: OpCall) -> int:
    """``group_norm(input, num_groups, weight, bias, eps)``: ``N * num_groups`` pairs, as
    :func:`count_group_norm`. (``num_groups`` is argument 1; the weight and bias, 2 and 3.)"""
    shape = call.input
    return _affine_ops(
        call, elements=math.prod(shape), stat_sets=shape[0] * call.arg(1, "num_groups"),
        batch_stats=True, weight_index=2,
    )  # fmt: skip


@register_op(aten.native_group_norm, family="norm")
def count_native_group_norm(call: OpCall) -> int:
    """``native_group_norm(input, weight, bias, N, C, HxW, group, eps)``: ``N * group``
    pairs."""
    return _affine_ops(
        call, elements=math.prod(call.input),
        stat_sets=call.arg(3, "N") * call.arg(6, "group"), batch_stats=True,
    )  # fmt: skip


def batch_norm_op_ops(call: OpCall, *, training: bool, running_stats: bool) -> int:
    """A batch-norm operator on ``(N, C, *)`` with the weight and bias at arguments 1 and 2:
    one pair per channel; batch statistics iff ``training``, then the running statistics
    updated (``7C``) iff the call was given them, as :func:`count_batch_norm`."""
    shape = call.input
    channels = shape[1]
    ops = _affine_ops(call, elements=math.prod(shape), stat_sets=channels, batch_stats=training)
    if training and running_stats:
        ops += running_update_ops(channels=channels)
    return ops


def _running_stats(call: OpCall) -> bool:
    return call.tensor(3, "running_mean") is not None


@register_op(
    *aten_ops("batch_norm", "native_batch_norm", "_batch_norm_impl_index", "cudnn_batch_norm",
              "miopen_batch_norm"),
    aten._native_batch_norm_legit.default, aten._native_batch_norm_legit.out,
    family="norm",
)  # fmt: skip
def count_batch_norm_op(call: OpCall) -> int:
    """``batch_norm(input, weight, bias, running_mean, running_var, training, ...)`` and the
    operators with its first six arguments: :func:`batch_norm_op_ops`."""
    training = bool(call.arg(5, "training"))
    return batch_norm_op_ops(call, training=training, running_stats=_running_stats(call))


@register_op(
    aten._native_batch_norm_legit.no_stats, aten._native_batch_norm_legit.no_stats_out,
    family="norm",
)  # fmt: skip
def count_native_batch_norm_legit_no_stats(call: OpCall) -> int:
    """``_native_batch_norm_legit.no_stats(input, weight, bias, training, ...)``: no running
    statistics to use or update."""
    return batch_norm_op_ops(call, training=bool(call.arg(3, "training")), running_stats=False)


@register_op(aten._native_batch_norm_legit_no_training, family="norm")
def count_batch_norm_no_training(call: OpCall) -> int:
    """``_native_batch_norm_legit_no_training(input, weight, bias, running_mean, ...)``: the
    eval-mode batch norm, with the running statistics."""
    return batch_norm_op_ops(call, training=False, running_stats=True)


@register_op(*aten_ops("_batch_norm_with_update"), family="norm")
def count_batch_norm_with_update(call: OpCall) -> int:
    """``_batch_norm_with_update(input, weight, bias, running_mean, running_var, ...)``:
    batch statistics, then the running update."""
    return batch_norm_op_ops(call, training=True, running_stats=True)


@register_op(*aten_ops("_batch_norm_no_update"), family="norm")
def count_batch_norm_no_update(call: OpCall) -> int:
    """``_batch_norm_no_update(input, weight, bias, running_mean, running_var, ...)``: the
    running statistics when given (eval), batch statistics otherwise, never an update."""
    running_stats = _running_stats(call)
    return batch_norm_op_ops(call, training=not running_stats, running_stats=False)


@register_op(aten.instance_norm, family="norm")
def count_instance_norm_op(call: OpCall) -> int:
    """``instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, ...)``
    on ``(N, C, *)``: ``N * C`` pairs with the input's statistics (then, given running
    statistics, their update ``C * (2N + 7)``), else the ``C`` running pairs, as
    :func:`count_instance_norm`."""
    shape = call.input
    batch, channels = shape[0], shape[1]
    batch_stats = bool(call.arg(5, "use_input_stats"))
    ops = _affine_ops(
        call, elements=math.prod(shape),
        stat_sets=batch * channels if batch_stats else channels, batch_stats=batch_stats,
    )  # fmt: skip
    if batch_stats and _running_stats(call):
        ops += running_update_ops(channels=channels, averaged=batch)
    return ops


# -- Backward pass (ATen ops) ----------------------------------------------------------------

RUNNING_INVSTD_OPS = 3
"""``1 / sqrt(running_var + eps)``, per channel, that an eval-mode batch norm's backward
works out (its forward divides by ``sqrt(running_var + eps)`` instead): add, sqrt, division."""


def _sums(elements: int, groups: int) -> int:
    """The additions of summing ``elements`` values into ``groups`` equal groups."""
    return reduction_ops(elements, groups, OPS_PER_GROUP["sum"])


def normalization_backward_ops(
    *,
    elements: int,
    stat_sets: int,
    parameters: int,
    batch_stats: bool,
    weight: bool,
    weight_per_set: bool,
    wanted: tuple[bool, bool, bool],
) -> int:
    """Exact operations of the backward of a mean/variance normalisation of ``T = elements``
    values in ``S = stat_sets`` sets of ``M = T / S``, whose affine parameters have ``P =
    parameters`` elements, for the gradients ``wanted`` (input, weight, bias).

    With ``g`` the incoming gradient, ``xc = x - mean`` and ``r = 1 / sqrt(var + eps)`` (saved by
    the forward), batch statistics give, per set::

        grad_input = (gh - sum(gh) / M - xc * sum(xc * gh) * r * r / M) * r      gh = g * weight

    and running statistics (an eval-mode batch norm) ``grad_input = g * r * weight``, ``r``
    worked out from the running variance (:data:`RUNNING_INVSTD_OPS` per channel). The weight's
    gradient is ``sum(g * xc * r)``, the bias's ``sum(g)``, over every element each parameter
    touches. Counted with every shared sub-expression once:

    * a batch norm's weight is one per set (``weight_per_set``), so it factors out of the sums:
      ``sum(g)`` (``T - S``) serves the input and the bias, ``sum(xc * g)`` (``3T - S``: centring,
      product, sum) the input and the weight; then, per set, ``sum(xc * g) * r * r / M`` (3),
      ``sum(g) / M`` (1) and ``r * weight`` (1 with a weight); per element 4
      (``xc * k``, two subtractions, the scale). The weight's gradient is ``sum(xc * g) * r``
      (``S``);
    * a layer or group norm's weight varies inside a set: ``gh = g * weight`` (``T``), then the
      same sums over ``gh`` and 4 per element (the last multiplication is by ``r``), ``4S`` per
      set; its weight's gradient multiplies ``xc`` (shared) by ``r`` and ``g`` and sums
      (``3T - P`` with the centring), its bias's sums ``g`` (``T - P``).

    Example (a training BatchNorm2d(3) on (2, 3, 4, 4), every gradient: T = 96, S = 3):
        >>> normalization_backward_ops(elements=96, stat_sets=3, parameters=3,
        ...     batch_stats=True, weight=True, weight_per_set=True, wanted=(True, True, True))
        780
        >>> (96 - 3) + (3 * 96 - 3) + 5 * 3 + 4 * 96 + 3
        780
    """
    if not elements:
        return 0
    grad_input, grad_weight, grad_bias = wanted
    dot = 2 * elements + _sums(elements, stat_sets)  # centring, products and their sums
    if not batch_stats:  # running statistics: a batch norm in eval mode
        ops = stat_sets * RUNNING_INVSTD_OPS if grad_input or grad_weight else 0
        if grad_input:
            ops += elements + (stat_sets if weight else 0)
        if grad_weight:
            ops += dot + stat_sets
        return ops + (_sums(elements, stat_sets) if grad_bias else 0)
    if weight_per_set:
        ops = _sums(elements, stat_sets) if grad_input or grad_bias else 0
        ops += dot if grad_input or grad_weight else 0
        if grad_input:
            ops += 4 * stat_sets + (stat_sets if weight else 0) + 4 * elements
        return ops + (stat_sets if grad_weight else 0)
    ops = 0
    if grad_input:
        scaled = elements if weight else 0  # g * weight
        ops += scaled + _sums(elements, stat_sets) + dot + 4 * stat_sets + 4 * elements
    if grad_weight:  # xc (unless shared) * r * g, summed per parameter
        ops += (0 if grad_input else elements) + 2 * elements + _sums(elements, parameters)
    return ops + (_sums(elements, parameters) if grad_bias else 0)


def _wanted(call: OpCall, index: int, name: str = "output_mask") -> tuple[bool, bool, bool]:
    mask = call.arg(index, name)
    return (True, True, True) if mask is None else tuple(bool(wanted) for wanted in mask)


def batch_norm_backward_op_ops(
    call: OpCall, *, input_index: int, batch_stats: bool, wanted: tuple[bool, bool, bool]
) -> int:
    """A batch norm's backward on the input ``(N, C, *)`` at argument ``input_index``, the
    weight at argument 2: :func:`normalization_backward_ops` with one set per channel."""
    shape = call.args[input_index].shape
    channels = shape[1]
    return normalization_backward_ops(
        elements=math.prod(shape), stat_sets=channels, parameters=channels,
        batch_stats=batch_stats, weight=call.tensor(2, "weight") is not None,
        weight_per_set=True, wanted=wanted,
    )  # fmt: skip


@register_op(aten.native_batch_norm_backward, family="norm")
def count_native_batch_norm_backward(call: OpCall) -> int:
    """``native_batch_norm_backward(grad_out, input, weight, running_mean, running_var,
    save_mean, save_invstd, train, eps, output_mask)``, the backward of every batch norm on the
    CPU (``_native_batch_norm_legit`` and instance norm included): batch statistics iff
    ``train``."""
    return batch_norm_backward_op_ops(
        call, input_index=1, batch_stats=bool(call.arg(7, "train")), wanted=_wanted(call, 9)
    )


@register_op(*aten_ops("batch_norm_backward"), family="norm")
def count_batch_norm_backward(call: OpCall) -> int:
    """``batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean,
    save_var, update, eps, output_mask, reserve)``, the backward of ``_batch_norm_with_update``
    and ``_batch_norm_no_update``: batch statistics when the forward updated the running ones,
    or had none."""
    batch_stats = bool(call.arg(7, "update")) or call.tensor(4, "running_var") is None
    return batch_norm_backward_op_ops(
        call, input_index=1, batch_stats=batch_stats, wanted=_wanted(call, 9)
    )


@register_op(*aten_ops("cudnn_batch_norm_backward", "miopen_batch_norm_backward"), family="norm")
def count_cudnn_batch_norm_backward(call: OpCall) -> int:
    """``cudnn_batch_norm_backward(input, grad_output, weight, running_mean, running_var,
    save_mean, save_var, epsilon, ...)`` (and miopen's): a training batch norm's three
    gradients."""
    return batch_norm_backward_op_ops(
        call, input_index=0, batch_stats=True, wanted=(True, True, True)
    )


@register_op(aten.native_layer_norm_backward, family="norm")
def count_native_layer_norm_backward(call: OpCall) -> int:
    """``native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight,
    bias, output_mask)``: one set per position of the leading dimensions, the weight and bias
    of ``prod(normalized_shape)`` elements."""
    elements = math.prod(call.args[1].shape)
    normalized = math.prod(call.arg(2, "normalized_shape"))
    return normalization_backward_ops(
        elements=elements, stat_sets=elements // normalized if normalized else 0,
        parameters=normalized, batch_stats=True,
        weight=call.tensor(5, "weight") is not None, weight_per_set=False,
        wanted=_wanted(call, 7),
    )  # fmt: skip


@register_op(aten.native_group_norm_backward, family="norm")
def count_native_group_norm_backward(call: OpCall) -> int:
    """``native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group,
    output_mask)``: ``N * group`` sets, a weight and bias per channel."""
    return normalization_backward_ops(
        elements=math.prod(call.args[1].shape),
        stat_sets=call.arg(5, "N") * call.arg(8, "group"), parameters=call.arg(6, "C"),
        batch_stats=True, weight=call.tensor(4, "weight") is not None, weight_per_set=False,
        wanted=_wanted(call, 9),
    )  # fmt: skip
