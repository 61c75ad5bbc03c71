"""The normalisation formulas against hand-computed cases and brute-force counts.

The brute force is a pure-Python implementation of each layer that counts every scalar
operation it performs; its outputs (and updated running statistics) are checked against
torch's, so the operations it counts are the ones that really produce the result.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence

import hypothesis
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import opscope.formulas.norm  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.norm import (
    count_batch_norm,
    count_instance_norm,
    lrn_window_terms,
    normalization_ops,
)
from opscope.formulas.registry import Call, formula_for

SETTINGS = hypothesis.settings(max_examples=25, deadline=None)


def profiled(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    with Profiler(module) as p:
        y = module(x)
    assert len(p.records) == 1
    return p.records[0].ops, y


def profiled_ops(module: nn.Module, x: torch.Tensor) -> int:
    return profiled(module, x)[0]


def train(module: nn.Module) -> nn.Module:
    return module.train()


def evaluate(module: nn.Module) -> nn.Module:
    return module.eval()


# Each case: the module (in the mode of the call), the input shape, and the count by hand.
# T = elements, S = (mean, variance) pairs. Batch statistics: 5T + 2S; running statistics:
# 2T + 2S; + T per affine weight and + T per bias; a training call that tracks running
# statistics adds 7 per channel (InstanceNorm: 2N + 7 per channel).
HAND_COMPUTED = {
    # (2, 3, 4, 4): T = 96, C = 3; eval uses the running statistics
    "bn2d eval": (evaluate(nn.BatchNorm2d(3)), (2, 3, 4, 4), 2 * 96 + 2 * 3 + 2 * 96),
    "bn2d eval no affine": (
        evaluate(nn.BatchNorm2d(3, affine=False)),
        (2, 3, 4, 4),
        2 * 96 + 2 * 3,
    ),
    # training: batch statistics, affine, running update 7 per channel
    "bn2d train": (train(nn.BatchNorm2d(3)), (2, 3, 4, 4), 5 * 96 + 2 * 3 + 2 * 96 + 7 * 3),
    "bn2d train no affine": (
        train(nn.BatchNorm2d(3, affine=False)),
        (2, 3, 4, 4),
        5 * 96 + 2 * 3 + 7 * 3,
    ),
    # cumulative moving average: the factor 1/num_batches_tracked is a per-call constant
    "bn2d train momentum None": (
        train(nn.BatchNorm2d(3, momentum=None)),
        (2, 3, 4, 4),
        5 * 96 + 2 * 3 + 2 * 96 + 7 * 3,
    ),
    # no running statistics: batch statistics in both modes, and nothing to update
    "bn2d train untracked": (
        train(nn.BatchNorm2d(3, track_running_stats=False)),
        (2, 3, 4, 4),
        5 * 96 + 2 * 3 + 2 * 96,
    ),
    "bn2d eval untracked": (
        evaluate(nn.BatchNorm2d(3, track_running_stats=False)),
        (2, 3, 4, 4),
        5 * 96 + 2 * 3 + 2 * 96,
    ),
    # (N, C) = (4, 5): T = 20, C = 5
    "bn1d (N, C) eval": (evaluate(nn.BatchNorm1d(5)), (4, 5), 2 * 20 + 2 * 5 + 2 * 20),
    "bn1d (N, C) train": (train(nn.BatchNorm1d(5)), (4, 5), 5 * 20 + 2 * 5 + 2 * 20 + 7 * 5),
    # (N, C, L) = (2, 3, 5): T = 30
    "bn1d (N, C, L) train": (train(nn.BatchNorm1d(3)), (2, 3, 5), 5 * 30 + 2 * 3 + 2 * 30 + 7 * 3),
    # (1, 2, 2, 3, 3): T = 36, C = 2
    "bn3d eval": (evaluate(nn.BatchNorm3d(2)), (1, 2, 2, 3, 3), 2 * 36 + 2 * 2 + 2 * 36),
    "bn3d train": (train(nn.BatchNorm3d(2)), (2, 2, 1, 2, 3), 5 * 24 + 2 * 2 + 2 * 24 + 7 * 2),
    # SyncBatchNorm falls back to batch_norm without a process group: the same count
    "syncbn train": (train(nn.SyncBatchNorm(3)), (2, 3, 4), 5 * 24 + 2 * 3 + 2 * 24 + 7 * 3),
    "syncbn eval": (evaluate(nn.SyncBatchNorm(3)), (2, 3, 4), 2 * 24 + 2 * 3 + 2 * 24),
    "lazy bn2d train": (train(nn.LazyBatchNorm2d()), (2, 3, 2, 2), 5 * 24 + 2 * 3 + 2 * 24 + 7 * 3),
    # InstanceNorm defaults: no affine, no running statistics; (2, 3, 5): T = 30, S = 2 * 3
    "in1d train": (train(nn.InstanceNorm1d(3)), (2, 3, 5), 5 * 30 + 2 * 6),
    "in1d eval": (evaluate(nn.InstanceNorm1d(3)), (2, 3, 5), 5 * 30 + 2 * 6),
    # unbatched (C, L) = (3, 5): N = 1, T = 15, S = 3
    "in1d unbatched": (evaluate(nn.InstanceNorm1d(3)), (3, 5), 5 * 15 + 2 * 3),
    # affine: (2, 3, 4, 4), T = 96, S = 6
    "in2d affine": (
        train(nn.InstanceNorm2d(3, affine=True)),
        (2, 3, 4, 4),
        5 * 96 + 2 * 6 + 2 * 96,
    ),
    # running statistics: training updates them (C * (2N + 7)), eval uses the C pairs
    "in2d tracked train": (
        train(nn.InstanceNorm2d(3, track_running_stats=True)),
        (2, 3, 4, 4),
        5 * 96 + 2 * 6 + 3 * (2 * 2 + 7),
    ),
    "in2d tracked eval": (
        evaluate(nn.InstanceNorm2d(3, track_running_stats=True)),
        (2, 3, 4, 4),
        2 * 96 + 2 * 3,
    ),
    "in1d tracked unbatched train": (
        train(nn.InstanceNorm1d(3, track_running_stats=True)),
        (3, 5),
        5 * 15 + 2 * 3 + 3 * (2 * 1 + 7),
    ),
    # (1, 2, 2, 2, 3): T = 24, S = 2; the unbatched (2, 2, 2, 3) is the same count
    "in3d": (evaluate(nn.InstanceNorm3d(2)), (1, 2, 2, 2, 3), 5 * 24 + 2 * 2),
    "in3d unbatched": (evaluate(nn.InstanceNorm3d(2)), (2, 2, 2, 3), 5 * 24 + 2 * 2),
    # the lazy ones default to affine and tracked: (2, 3, 2, 3), T = 36, S = 6; eval uses C = 3
    "lazy in2d train": (
        train(nn.LazyInstanceNorm2d()),
        (2, 3, 2, 3),
        5 * 36 + 2 * 6 + 2 * 36 + 3 * (2 * 2 + 7),
    ),
    "lazy in2d eval": (evaluate(nn.LazyInstanceNorm2d()), (2, 3, 2, 3), 2 * 36 + 2 * 3 + 2 * 36),
    # LayerNorm(5) on (2, 3, 5): T = 30, S = 2 * 3
    "ln": (evaluate(nn.LayerNorm(5)), (2, 3, 5), 5 * 30 + 2 * 6 + 2 * 30),
    "ln train": (train(nn.LayerNorm(5)), (2, 3, 5), 5 * 30 + 2 * 6 + 2 * 30),
    "ln no bias": (evaluate(nn.LayerNorm(5, bias=False)), (2, 3, 5), 5 * 30 + 2 * 6 + 30),
    "ln no affine": (
        evaluate(nn.LayerNorm(5, elementwise_affine=False)),
        (2, 3, 5),
        5 * 30 + 2 * 6,
    ),
    # normalized_shape (3, 5) on (2, 3, 5): S = 2; on (3, 5) alone: S = 1
    "ln 2 dims": (evaluate(nn.LayerNorm((3, 5))), (2, 3, 5), 5 * 30 + 2 * 2 + 2 * 30),
    "ln unbatched": (evaluate(nn.LayerNorm((3, 5))), (3, 5), 5 * 15 + 2 * 1 + 2 * 15),
    # RMSNorm(5) on (2, 3, 5): T = 30, S = 6: 3T + 3S, + T with the weight
    "rms": (evaluate(nn.RMSNorm(5)), (2, 3, 5), 3 * 30 + 3 * 6 + 30),
    "rms train": (train(nn.RMSNorm(5, eps=1e-3)), (2, 3, 5), 3 * 30 + 3 * 6 + 30),
    "rms no affine": (evaluate(nn.RMSNorm(5, elementwise_affine=False)), (2, 3, 5), 3 * 30 + 18),
    "rms 2 dims": (evaluate(nn.RMSNorm((3, 5))), (2, 3, 5), 3 * 30 + 3 * 2 + 30),
    # GroupNorm(2, 4) on (2, 4, 3): T = 24, S = 2 * 2
    "gn": (evaluate(nn.GroupNorm(2, 4)), (2, 4, 3), 5 * 24 + 2 * 4 + 2 * 24),
    "gn train": (train(nn.GroupNorm(2, 4)), (2, 4, 3), 5 * 24 + 2 * 4 + 2 * 24),
    "gn no affine": (evaluate(nn.GroupNorm(2, 4, affine=False)), (2, 4, 3), 5 * 24 + 2 * 4),
    # one group over (N, C) = (3, 4): a LayerNorm over C with per-channel affine; T = 12, S = 3
    "gn (N, C)": (evaluate(nn.GroupNorm(1, 4)), (3, 4), 5 * 12 + 2 * 3 + 2 * 12),
    # LRN(3) on (1, 4, 2, 2): windows of 2, 3, 3, 2 channels (W = 10); per element w_c + 4
    "lrn": (nn.LocalResponseNorm(3), (1, 4, 2, 2), 1 * 4 * (10 + 4 * 4)),
    # LRN(2) on (2, 3, 5): window [c - 1, c]: 1, 2, 2 channels (W = 5)
    "lrn 3d input": (nn.LocalResponseNorm(2), (2, 3, 5), 2 * 5 * (5 + 4 * 3)),
    # a window wider than C covers every channel: W = 3 * 3
    "lrn wide": (nn.LocalResponseNorm(7), (1, 3, 2), 1 * 2 * (9 + 4 * 3)),
}


@pytest.mark.parametrize("case", HAND_COMPUTED, ids=list(HAND_COMPUTED))
def test_hand_computed(case: str) -> None:
    module, input_shape, expected = HAND_COMPUTED[case]
    assert profiled_ops(module, torch.randn(input_shape)) == expected


def test_mode_is_read_per_call() -> None:
    # One module, a training call then an eval call: (2, 3, 4): T = 24, C = 3.
    module = nn.BatchNorm1d(3)
    with Profiler(module) as p:
        module(torch.randn(2, 3, 4))
        module.eval()
        module(torch.randn(2, 3, 4))
    assert [r.training for r in p.records] == [True, False]
    assert [r.ops for r in p.records] == [7 * 24 + 2 * 3 + 7 * 3, 4 * 24 + 2 * 3]


def test_records_carry_the_config() -> None:
    module = nn.LayerNorm((3, 5), bias=False)
    with Profiler(module) as p:
        module(torch.randn(2, 3, 5))
    record = p.records[0]
    assert record.normalized_shape == (3, 5)
    assert (record.elementwise_affine, record.bias) == (True, False)
    assert record.to_dict()["normalized_shape"] == [3, 5]


@pytest.mark.parametrize(
    ("module_type", "count"),
    [
        (nn.BatchNorm1d, count_batch_norm),
        (nn.BatchNorm2d, count_batch_norm),
        (nn.BatchNorm3d, count_batch_norm),
        (nn.SyncBatchNorm, count_batch_norm),
        (nn.LazyBatchNorm1d, count_batch_norm),
        (nn.InstanceNorm1d, count_instance_norm),
        (nn.InstanceNorm2d, count_instance_norm),
        (nn.InstanceNorm3d, count_instance_norm),
        (nn.LazyInstanceNorm3d, count_instance_norm),
    ],
)
def test_subclasses_resolve_to_their_family(module_type: type[nn.Module], count: object) -> None:
    formula = formula_for(module_type)
    assert formula is not None and formula.count is count


def test_instance_norm_rank_from_lazy_module() -> None:
    # A lazy InstanceNorm2d is no InstanceNorm2d subclass, but must still tell (C, H, W)
    # apart from (N, C, H): on (4, 3, 5) it is N = 1, C = 4, T = 60, S = 4. (A lazy module
    # infers num_features from dim 1, so torch itself cannot run it unbatched.)
    module = nn.LazyInstanceNorm2d(affine=False, track_running_stats=False)
    config = formula_for(nn.LazyInstanceNorm2d).describe(module)
    call = Call(inputs=((4, 3, 5),), outputs=((4, 3, 5),), training=True)
    assert count_instance_norm(config, call) == 5 * 60 + 2 * 4


@pytest.mark.parametrize(
    ("module", "shape", "stat_sets"),
    [(nn.LayerNorm((3, 5)), (2, 3, 5), 2), (nn.LayerNorm(5, bias=False), (4, 5), 4)],
)
def test_relation_to_moduleprofiler_layer_norm(
    module: nn.Module, shape: tuple[int, ...], stat_sets: int
) -> None:
    # moduleprofiler: eta * (4 + (5, 6 or 7) * M) per normalised set of M values. It counts
    # the centring twice and no squares (the same 5M), and 2 operations per set for
    # max(0, M - correction), which depend only on the shape: opscope is 2 * eta lower.
    elements = math.prod(shape)
    per_element = 5 + int(module.weight is not None) + int(module.bias is not None)
    moduleprofiler = stat_sets * (4 + per_element * (elements // stat_sets))
    assert profiled_ops(module, torch.randn(shape)) == moduleprofiler - 2 * stat_sets


def test_eval_batch_norm_differs_from_moduleprofiler() -> None:
    # moduleprofiler counts C * (7E + 4) for an affine BatchNorm2d whatever the mode, E = N*H*W;
    # in eval opscope counts no statistics: 4T + 2C. On (2, 3, 4, 4): E = 32, T = 96.
    module = nn.BatchNorm2d(3).eval()
    moduleprofiler = 3 * (7 * 32 + 4)
    assert profiled_ops(module, torch.randn(2, 3, 4, 4)) == 4 * 96 + 2 * 3
    assert moduleprofiler - (4 * 96 + 2 * 3) == 3 * 96 + 2 * 3  # the statistics it adds


def test_no_float_past_2_53() -> None:
    huge = 2**60 + 1
    ops = normalization_ops(elements=huge, stat_sets=3, batch_stats=True, weight=True, bias=True)
    assert ops == 7 * huge + 6
    assert lrn_window_terms(channels=huge, size=3) == 3 * huge - 2


# -- brute force ---------------------------------------------------------------------------


class Counted:
    """Scalar arithmetic that counts each operation it performs."""

    def __init__(self) -> None:
        self.ops = 0

    def _count(self, value: float) -> float:
        self.ops += 1
        return value

    def add(self, a: float, b: float) -> float:
        return self._count(a + b)

    def sub(self, a: float, b: float) -> float:
        return self._count(a - b)

    def mul(self, a: float, b: float) -> float:
        return self._count(a * b)

    def div(self, a: float, b: float) -> float:
        return self._count(a / b)

    def sqrt(self, a: float) -> float:
        return self._count(math.sqrt(a))

    def pow(self, a: float, b: float) -> float:
        return self._count(a**b)

    def total(self, values: Sequence[float]) -> float:
        result = values[0]
        for value in values[1:]:
            result = self.add(result, value)
        return result

    def mean(self, values: Sequence[float]) -> float:
        return self.div(self.total(values), len(values))


Stats = dict[Hashable, tuple[float, float]]


def reference_normalize(
    c: Counted,
    x: Sequence[float],
    key_of: Callable[[int], Hashable],
    param_of: Callable[[int], int],
    running: Stats | None,
    weight: Sequence[float] | None,
    bias: Sequence[float] | None,
    eps: float,
) -> tuple[list[float], Stats]:
    """Normalise the flat ``x``, element ``i`` with the statistics of set ``key_of(i)``:
    computed from the data when ``running`` is None, else taken from it."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i in range(len(x)):
        members[key_of(i)].append(i)
    stats: Stats = {}
    centred: dict[int, float] = {}
    for key, indices in members.items():
        if running is None:
            mean = c.mean([x[i] for i in indices])
            centred.update({i: c.sub(x[i], mean) for i in indices})
            var = c.mean([c.mul(centred[i], centred[i]) for i in indices])
        else:
            mean, var = running[key]
            centred.update({i: c.sub(x[i], mean) for i in indices})
        stats[key] = (mean, var)
    std = {key: c.sqrt(c.add(var, eps)) for key, (_, var) in stats.items()}
    y = []
    for i in range(len(x)):
        value = c.div(centred[i], std[key_of(i)])
        if weight is not None:
            value = c.mul(value, weight[param_of(i)])
        if bias is not None:
            value = c.add(value, bias[param_of(i)])
        y.append(value)
    return y, stats


def reference_running_update(
    c: Counted,
    running: Stats,
    per_channel: dict[int, list[tuple[float, float]]],
    count: int,
    momentum: float,
    *,
    average: bool,
) -> Stats:
    """Blend each channel's statistics (averaged first over instances when ``average``)
    into its running ones; the variance is made unbiased over ``count`` values."""
    correction, keep = count / (count - 1), 1.0 - momentum  # per-call constants
    updated: Stats = {}
    for channel, pairs in per_channel.items():
        if average:
            mean = c.mean([m for m, _ in pairs])
            var = c.mean([v for _, v in pairs])
        else:
            ((mean, var),) = pairs
        old_mean, old_var = running[channel]
        unbiased = c.mul(var, correction)
        updated[channel] = (
            c.add(c.mul(keep, old_mean), c.mul(momentum, mean)),
            c.add(c.mul(keep, old_var), c.mul(momentum, unbiased)),
        )
    return updated


def flat(tensor: torch.Tensor | None) -> list[float] | None:
    return None if tensor is None else tensor.detach().flatten().tolist()


def running_of(module: nn.Module) -> Stats:
    return dict(enumerate(zip(flat(module.running_mean), flat(module.running_var), strict=True)))


def randomize(module: nn.Module, seed: int) -> None:
    """Non-trivial affine parameters and running statistics, in float64."""
    generator = torch.Generator().manual_seed(seed)
    module.double()
    for tensor in (module.weight, module.bias, getattr(module, "running_mean", None)):
        if tensor is not None and not isinstance(tensor, nn.parameter.UninitializedParameter):
            tensor.data.copy_(torch.randn(tensor.shape, generator=generator, dtype=torch.float64))
    if getattr(module, "running_var", None) is not None:
        module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def check(module: nn.Module, x: torch.Tensor, reference_ops: int, y: list[float]) -> None:
    """The module's profiled count equals the reference's, and so do the outputs."""
    ops, output = profiled(module, x)
    assert output.flatten().tolist() == pytest.approx(y, rel=1e-7, abs=1e-9)
    assert ops == reference_ops


def check_running(module: nn.Module, expected: Stats) -> None:
    def pairs(stats: Stats) -> list[float]:
        return [value for channel in sorted(stats) for value in stats[channel]]

    assert pairs(running_of(module)) == pytest.approx(pairs(expected), rel=1e-7, abs=1e-9)


@SETTINGS
@given(
    spatial=st.lists(st.integers(1, 3), max_size=3),
    batch=st.integers(2, 3),
    channels=st.integers(1, 3),
    affine=st.booleans(),
    track=st.booleans(),
    training=st.booleans(),
    momentum=st.sampled_from([0.1, 0.5, None]),
    seed=st.integers(0, 2**16),
)
def test_batch_norm_brute_force(
    spatial: list[int],
    batch: int,
    channels: int,
    affine: bool,
    track: bool,
    training: bool,
    momentum: float | None,
    seed: int,
) -> None:
    module_type = [nn.BatchNorm1d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d][len(spatial)]
    module = module_type(channels, affine=affine, track_running_stats=track, momentum=momentum)
    module.train(training)
    randomize(module, seed)
    shape = (batch, channels, *spatial)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    inner = math.prod(spatial)

    def channel_of(i: int) -> int:
        return (i // inner) % channels

    c = Counted()
    uses_running = not training and module.running_mean is not None
    y, stats = reference_normalize(
        c, flat(x), channel_of, channel_of,
        running_of(module) if uses_running else None,
        flat(module.weight), flat(module.bias), module.eps,
    )
    expected_running = running_of(module) if track else {}
    if training and track:
        # momentum None: cumulative average over the calls, this being the first
        factor = 1.0 if momentum is None else momentum
        expected_running = reference_running_update(
            c, expected_running, {ch: [pair] for ch, pair in stats.items()},
            batch * inner, factor, average=False,
        )
    check(module, x, c.ops, y)
    if track:
        check_running(module, expected_running)


@SETTINGS
@given(
    rank=st.integers(1, 3),
    first=st.integers(2, 3),
    rest=st.lists(st.integers(1, 3), min_size=2, max_size=2),
    batch=st.sampled_from([None, 1, 2, 3]),
    channels=st.integers(1, 3),
    affine=st.booleans(),
    track=st.booleans(),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_instance_norm_brute_force(
    rank: int,
    first: int,
    rest: list[int],
    batch: int | None,
    channels: int,
    affine: bool,
    track: bool,
    training: bool,
    seed: int,
) -> None:
    # torch needs more than one spatial element per instance: the first size is at least 2
    spatial = [first, *rest][:rank]
    module_type = [nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d][rank - 1]
    module = module_type(channels, affine=affine, track_running_stats=track).train(training)
    randomize(module, seed)
    shape = (channels, *spatial) if batch is None else (batch, channels, *spatial)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    inner = math.prod(spatial)

    def channel_of(i: int) -> int:
        return (i // inner) % channels

    def instance_of(i: int) -> int:  # (n, c) flattened
        return i // inner

    c = Counted()
    uses_running = track and not training
    y, stats = reference_normalize(
        c, flat(x), channel_of if uses_running else instance_of, channel_of,
        running_of(module) if uses_running else None,
        flat(module.weight), flat(module.bias), module.eps,
    )
    expected_running = running_of(module) if track else {}
    if track and training:
        per_channel = defaultdict(list)
        for instance, pair in sorted(stats.items()):
            per_channel[instance % channels].append(pair)
        expected_running = reference_running_update(
            c, expected_running, per_channel, inner, module.momentum, average=True
        )
    check(module, x, c.ops, y)
    if track:
        check_running(module, expected_running)


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    normalized_dims=st.integers(1, 4),
    elementwise_affine=st.booleans(),
    bias=st.booleans(),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_brute_force(
    shape: list[int],
    normalized_dims: int,
    elementwise_affine: bool,
    bias: bool,
    training: bool,
    seed: int,
) -> None:
    normalized_shape = shape[len(shape) - min(normalized_dims, len(shape)) :]
    module = nn.LayerNorm(normalized_shape, elementwise_affine=elementwise_affine, bias=bias)
    module.train(training)
    randomize(module, seed)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    size = math.prod(normalized_shape)

    c = Counted()
    y, _ = reference_normalize(
        c, flat(x), lambda i: i // size, lambda i: i % size, None,
        flat(module.weight), flat(module.bias), module.eps,
    )
    check(module, x, c.ops, y)


@SETTINGS
@given(
    batch=st.integers(1, 3),
    groups=st.integers(1, 3),
    channels_per_group=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 3), max_size=2),
    affine=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_group_norm_brute_force(
    batch: int,
    groups: int,
    channels_per_group: int,
    spatial: list[int],
    affine: bool,
    seed: int,
) -> None:
    # torch refuses a single sample whose groups hold one value each
    hypothesis.assume(batch * channels_per_group * math.prod(spatial) > 1)
    channels = groups * channels_per_group
    module = nn.GroupNorm(groups, channels, affine=affine)
    randomize(module, seed)
    x = torch.randn(
        (batch, channels, *spatial),
        generator=torch.Generator().manual_seed(seed + 1),
        dtype=torch.float64,
    )
    inner = math.prod(spatial)

    c = Counted()
    y, _ = reference_normalize(
        c, flat(x), lambda i: i // (inner * channels_per_group), lambda i: (i // inner) % channels,
        None, flat(module.weight), flat(module.bias), module.eps,
    )
    check(module, x, c.ops, y)


def reference_lrn(
    c: Counted, x: Sequence[float], shape: Sequence[int], module: nn.LocalResponseNorm
) -> list[float]:
    """``y_c = x_c / (k + alpha / size * sum of x_c'^2 over the window of c) ** beta``."""
    channels, positions = shape[1], math.prod(shape[2:])
    before, after = module.size // 2, (module.size - 1) // 2
    scale = module.alpha / module.size  # a per-call constant
    squares = [c.mul(value, value) for value in x]
    y = []
    for i, value in enumerate(x):
        sample, channel = divmod(i // positions, channels)
        window = range(max(0, channel - before), min(channels - 1, channel + after) + 1)
        start = sample * channels * positions + i % positions
        total = c.total([squares[start + other * positions] for other in window])
        base = c.add(module.k, c.mul(scale, total))
        y.append(c.div(value, c.pow(base, module.beta)))
    return y


@SETTINGS
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 6),
    spatial=st.lists(st.integers(1, 3), min_size=1, max_size=2),
    size=st.integers(1, 7),
    alpha=st.floats(1e-4, 1.0),
    beta=st.floats(0.5, 1.0),
    k=st.floats(1.0, 2.0),
    seed=st.integers(0, 2**16),
)
def test_local_response_norm_brute_force(
    batch: int,
    channels: int,
    spatial: list[int],
    size: int,
    alpha: float,
    beta: float,
    k: float,
    seed: int,
) -> None:
    module = nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)
    shape = (batch, channels, *spatial)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c = Counted()
    y = reference_lrn(c, flat(x), shape, module)
    check(module, x, c.ops, y)


def reference_rms_norm(
    c: Counted, x: Sequence[float], size: int, weight: Sequence[float] | None, eps: float
) -> list[float]:
    """``x * rsqrt(mean(x^2) + eps) * weight`` over consecutive sets of ``size`` values, as
    torch evaluates it: ``rsqrt`` a square root and a reciprocal."""
    y = []
    for start in range(0, len(x), size):
        values = x[start : start + size]
        mean = c.mean([c.pow(value, 2) for value in values])
        reciprocal = c.div(1.0, c.sqrt(c.add(mean, eps)))
        for i, value in enumerate(values):
            scaled = c.mul(value, reciprocal)
            y.append(scaled if weight is None else c.mul(scaled, weight[i]))
    return y


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    normalized_dims=st.integers(1, 4),
    elementwise_affine=st.booleans(),
    eps=st.sampled_from([None, 1e-3]),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rms_norm_brute_force(
    shape: list[int],
    normalized_dims: int,
    elementwise_affine: bool,
    eps: float | None,
    training: bool,
    seed: int,
) -> None:
    normalized_shape = shape[len(shape) - min(normalized_dims, len(shape)) :]
    module = nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)
    module.train(training).double()
    generator = torch.Generator().manual_seed(seed)
    if module.weight is not None:
        module.weight.data.copy_(torch.randn(module.weight.shape, generator=generator))
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    c = Counted()
    used_eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = reference_rms_norm(c, flat(x), math.prod(normalized_shape), flat(module.weight), used_eps)
    check(module, x, c.ops, y)
