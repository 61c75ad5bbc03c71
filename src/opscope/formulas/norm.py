"""Normalisation layers: BatchNorm, InstanceNorm, LayerNorm, GroupNorm, LocalResponseNorm.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from opscope.formulas.registry import Call, register

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
class LayerNormConfig:
    """The static settings of a ``torch.nn.LayerNorm``.

    Attributes:
        normalized_shape: the trailing dimensions each mean and variance is taken over.
        elementwise_affine: whether the module has a weight (``normalized_shape`` values).
        bias: whether it also has a bias (``bias=False`` drops it in torch >= 2.1).
    """

    normalized_shape: tuple[int, ...]
    elementwise_affine: bool
    bias: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> LayerNormConfig:
        """Read the settings of a ``torch.nn.LayerNorm`` module."""
        return cls(
            normalized_shape=tuple(module.normalized_shape),
            elementwise_affine=module.weight is not None,
            bias=module.bias is not None,
        )


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
