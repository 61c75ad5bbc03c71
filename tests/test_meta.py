"""The meta shortcuts give the shapes torch itself gives, and touch nothing off meta."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from opscope.meta import MetaShortcuts, _broadcast, build_on_meta

NORMS = [
    (nn.BatchNorm2d(4), (2, 4, 5, 5)),
    (nn.LayerNorm(5), (2, 3, 5)),
    (nn.GroupNorm(2, 4), (2, 4, 3, 3)),
    (nn.InstanceNorm2d(4, affine=True), (2, 4, 3, 3)),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("norm", "shape"), NORMS, ids=[type(n).__name__ for n, _ in NORMS])
def test_norm_outputs_match_torch(norm: nn.Module, shape: tuple[int, ...], channels_last: bool) -> None:
    norm = norm.to("meta").eval()
    x = torch.empty(shape, device="meta")
    if channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    expected = norm(x)
    with torch.inference_mode(), MetaShortcuts():
        got = norm(x)
    assert (got.shape, got.dtype, got.stride()) == (expected.shape, expected.dtype, expected.stride())


def test_real_tensors_are_left_to_torch() -> None:
    x = torch.zeros(3)
    with MetaShortcuts():
        x.normal_()
        y = nn.BatchNorm1d(3).eval()(torch.ones(2, 3))
    assert x.abs().sum() > 0  # really initialised
    assert torch.allclose(y, torch.ones(2, 3), atol=1e-4)  # really normalised


def _layouts(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Meta tensors of ``shape`` in several layouts: contiguous, transposed, sliced (not
    dense), and channels-last for 4-D shapes."""
    x = torch.empty(shape, device="meta")
    layouts = [x, x.transpose(0, -1), x[..., ::2]]
    if x.dim() == 4:
        layouts.append(x.to(memory_format=torch.channels_last))
    return layouts


def _same(run, *args) -> None:
    """``run(*args)`` on meta gives the shape, dtype and strides torch gives, with and without
    the shortcuts, in inference mode as the zoo runs it."""
    with torch.inference_mode():
        expected = run(*args)
    with torch.inference_mode(), MetaShortcuts():
        got = run(*args)
    assert (got.shape, got.dtype, got.stride()) == (expected.shape, expected.dtype, expected.stride())


class Clamp(nn.Module):
    def __init__(self, low: float | None, high: float | None = None) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high) if self.high is not None else x.clamp_min(self.low)

    def __repr__(self) -> str:
        return f"Clamp({self.low}, {self.high})"


ACTIVATIONS = [nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish(), nn.Hardsigmoid(), Clamp(-1, 1), Clamp(None, 2.0), Clamp(0.5)]


@pytest.mark.parametrize("shape", [(3,), (2, 6), (2, 3, 6), (2, 3, 4, 6)])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=[repr(a) for a in ACTIVATIONS])
def test_activation_outputs_match_torch(activation: nn.Module, shape: tuple[int, ...]) -> None:
    for x in _layouts(shape):
        _same(activation, x)
    _same(activation, torch.empty(shape, device="meta", dtype=torch.float16))


@pytest.mark.parametrize("shape", [(6,), (2, 6), (2, 3, 6), (2, 3, 4, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_outputs_match_torch(shape: tuple[int, ...], bias: bool) -> None:
    linear = nn.Linear(6, 5, bias=bias, device="meta")
    _same(linear, torch.empty(shape, device="meta"))
    if len(shape) > 1:  # the features are the last dimension, laid out in other ways
        x = torch.empty((*shape[:-1], 12), device="meta")[..., ::2]
        _same(linear, x)
        _same(linear, torch.empty((shape[-1], *shape[:-1]), device="meta").movedim(0, -1))


def test_a_bias_that_would_broadcast_the_output_is_left_to_torch() -> None:
    weight = torch.empty(5, 4, device="meta")
    for input_shape, bias_shape in [((4,), (3, 5)), ((2, 4), (2, 5)), ((2, 4), (1, 5)), ((4,), (1,)), ((4,), ())]:
        bias = torch.empty(bias_shape, device="meta")
        _same(torch.nn.functional.linear, torch.empty(input_shape, device="meta"), weight, bias)
    with torch.inference_mode(), MetaShortcuts(), pytest.raises(RuntimeError):
        torch.nn.functional.linear(torch.empty(0, 4, device="meta"), weight, torch.empty(2, 5, device="meta"))


# Contiguous for is_contiguous(), which ignores the strides of dimensions of size one; torch
# keeps those strides in an op's output, where a plain output would differ.
UNUSUAL = [
    torch.empty(2, 3, 1, 1, device="meta").to(memory_format=torch.channels_last),
    torch.empty_strided((2, 1, 4), (4, 7, 1), device="meta"),
    torch.empty_strided((2, 3, 1, 5), (15, 5, 99, 1), device="meta"),
]


@pytest.mark.parametrize("x", UNUSUAL, ids=[str(x.stride()) for x in UNUSUAL])
def test_strides_of_dimensions_of_size_one_are_those_torch_gives(x: torch.Tensor) -> None:
    for activation in ACTIVATIONS:
        _same(activation, x)
    plain = torch.empty(x.shape, device="meta")
    for op in BINARY:
        for other in (x, plain, plain[0], 2.0, torch.empty((), device="meta")):
            _same(op, x, other)
            _same(op, other, x)
    channels = x.shape[1]
    batch_norm = nn.BatchNorm2d(channels) if x.dim() == 4 else nn.BatchNorm1d(channels)
    for norm in (batch_norm, nn.LayerNorm(x.shape[-1]), nn.GroupNorm(1, channels)):
        _same(norm.to("meta").eval(), x)
    if x.dim() == 4:
        _same(nn.AdaptiveAvgPool2d((2, 3)), x)


def test_an_empty_channels_last_batch_gets_torchs_strides() -> None:
    x = torch.empty(0, 4, 3, 3, device="meta").to(memory_format=torch.channels_last)
    _same(nn.BatchNorm2d(4).to("meta").eval(), x)


def test_what_the_shortcuts_cannot_answer_is_left_to_torch() -> None:
    # integer inputs (sigmoid makes floats of them), mixed dtypes, wrong sizes
    _same(nn.Sigmoid(), torch.empty(2, 3, dtype=torch.int64, device="meta"))
    _same(nn.ReLU(), torch.empty(2, 3, dtype=torch.int64, device="meta"))
    with torch.inference_mode(), MetaShortcuts(), pytest.raises(RuntimeError):
        nn.Linear(6, 5, device="meta")(torch.empty(2, 4, device="meta"))
    _same(nn.Linear(6, 5, device="meta"), torch.empty(2, 6, device="meta", dtype=torch.float16))


def test_a_meta_build_skips_the_initialisers_and_puts_them_back() -> None:
    calls = []
    kaiming = nn.init.kaiming_uniform_

    def factory() -> nn.Module:
        calls.append(nn.init.kaiming_uniform_ is kaiming)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))

    built = build_on_meta(factory)
    assert calls == [False]  # skipped while building on meta: a meta tensor has no values
    assert nn.init.kaiming_uniform_ is kaiming
    assert {p.device.type for p in built.parameters()} == {"meta"}
    assert [p.shape for p in built.parameters()] == [p.shape for p in factory().parameters()]
    with pytest.raises(ZeroDivisionError):  # put back on errors too
        build_on_meta(lambda: 1 / 0)
    assert nn.init.kaiming_uniform_ is kaiming


def test_initialisers_skip_only_meta_tensors_and_overlapping_builds_put_them_back() -> None:
    # The stand-ins are process-wide: another thread's real model, built meanwhile, is
    # initialised as ever, and two builds in two threads that end in either order leave
    # torch.nn.init as it was.
    kaiming = nn.init.kaiming_uniform_
    first_in, first_go, second_in, second_go = (threading.Event() for _ in range(4))

    def first() -> nn.Module:
        first_in.set()
        first_go.wait(10)
        return nn.Linear(2, 2)

    def second() -> nn.Module:
        second_in.set()
        second_go.wait(10)
        return nn.Linear(2, 2)

    threads = [threading.Thread(target=build_on_meta, args=(f,)) for f in (first, second)]
    threads[0].start()
    first_in.wait(10)
    threads[1].start()
    second_in.wait(10)
    real = nn.init.ones_(torch.zeros(3))  # this thread's, while the others build on meta
    first_go.set()  # the first to begin ends first
    threads[0].join()
    assert nn.init.kaiming_uniform_ is not kaiming  # the second still builds
    second_go.set()
    threads[1].join()
    assert nn.init.kaiming_uniform_ is kaiming
    assert real.tolist() == [1.0, 1.0, 1.0]


BINARY = [torch.add, torch.sub, torch.mul, torch.div]


@pytest.mark.parametrize("op", BINARY, ids=[op.__name__ for op in BINARY])
@pytest.mark.parametrize(
    ("left", "right"),
    [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 1)), ((3, 1), (1, 4)), ((5,), (2, 5)), ((), (2, 3))],
)
def test_binary_outputs_match_torch(op, left: tuple[int, ...], right: tuple[int, ...]) -> None:
    a, b = torch.empty(left, device="meta"), torch.empty(right, device="meta")
    _same(op, a, b)
    _same(op, b, a)
    for laid_out in _layouts(left) if len(left) > 1 else ():  # not contiguous: left to torch
        if laid_out.shape == a.shape:
            _same(op, laid_out, a)
    _same(op, a, torch.empty(right, device="meta", dtype=torch.float16))  # mixed: left to torch
    for scalar in (0.5, 2, True, torch.tensor(0.5, dtype=torch.float64, device="meta")):
        _same(op, a, scalar)
        _same(op, a.half(), scalar)
    _same(op, a, torch.tensor(1j, device="meta"))  # complex: left to torch
    _same(op, a, 1j)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (3, 7, 9)])
@pytest.mark.parametrize("size", [(1, 1), (3, 4), (7, 9)])
def test_adaptive_average_pooling_outputs_match_torch(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    pool = nn.AdaptiveAvgPool2d(size)
    for x in _layouts(shape):
        _same(pool, x)


def test_a_clamp_without_bounds_is_left_to_torch_which_raises() -> None:
    x = torch.empty(2, 3, device="meta")
    with torch.inference_mode(), MetaShortcuts(), pytest.raises(ValueError, match="both min and max are none"):
        torch.ops.aten.clamp.default(x)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 3), max_size=4),
    st.lists(st.integers(0, 3), max_size=4),
)
def test_broadcasting_gives_torchs_shape_or_leaves_the_error_to_torch(left: list[int], right: list[int]) -> None:
    a, b = torch.empty(left, device="meta"), torch.empty(right, device="meta")
    try:
        expected = torch.broadcast_shapes(left, right)
    except RuntimeError:
        with torch.inference_mode(), MetaShortcuts(), pytest.raises(RuntimeError):
            torch.add(a, b)
        assert _broadcast(left, right) is None
        return
    assert _broadcast(left, right) == tuple(expected)
    _same(torch.add, a, b)


@settings(max_examples=300, deadline=None)
@given(
    batch=st.integers(0, 2),
    groups=st.integers(1, 3),
    group_channels=st.integers(0, 2),
    out_per_group=st.integers(0, 2),
    size=st.tuples(st.integers(0, 7), st.integers(0, 7)),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.sampled_from([1, 2, 3, [1, 2], [2, 1], [0, 1]]),
    padding=st.sampled_from([0, 1, 2, [0, 1], [2, 0], [-1, 0]]),
    dilation=st.sampled_from([1, 2, [1, 3], [0, 1]]),
    bias=st.sampled_from(["none", "matching", "wrong size"]),
    mismatched_channels=st.booleans(),
)
def test_convolutions_give_torchs_output_or_leave_the_error_to_torch(
    batch, groups, group_channels, out_per_group, size, kernel, stride, padding, dilation,
    bias, mismatched_channels,
) -> None:  # fmt: skip
    channels = group_channels * groups + int(mismatched_channels)
    out_channels = out_per_group * groups
    x = torch.empty(batch, channels, *size, device="meta")
    weight = torch.empty(out_channels, group_channels, *kernel, device="meta")
    bias_tensor = {
        "none": None,
        "matching": torch.empty(out_channels, device="meta"),
        "wrong size": torch.empty(out_channels + 1, device="meta"),
    }[bias]
    arguments = (x, weight, bias_tensor, stride, padding, dilation, groups)

    def conv2d(*given):
        return torch.nn.functional.conv2d(*given)

    def convolution(*given):
        pair = lambda v: [v, v] if isinstance(v, int) else v  # noqa: E731 - aten wants lists
        x_, w_, b_, s_, p_, d_, g_ = given
        return torch.ops.aten.convolution.default(x_, w_, b_, pair(s_), pair(p_), pair(d_), False, [0, 0], g_)

    for run in (conv2d, convolution):
        try:
            with torch.inference_mode():
                expected = run(*arguments)
        except Exception as error:  # noqa: BLE001 - whatever torch raises (ZeroDivisionError too)
            with torch.inference_mode(), MetaShortcuts(), pytest.raises(type(error)):
                run(*arguments)
            continue
        _same(run, *arguments)


def test_convolutions_the_shortcut_does_not_answer_are_torchs() -> None:
    x, weight = torch.empty(2, 4, 9, 9, device="meta"), torch.empty(6, 4, 3, 3, device="meta")
    _same(lambda *a: torch.nn.functional.conv2d(*a), x.to(memory_format=torch.channels_last), weight)
    _same(lambda *a: torch.nn.functional.conv2d(*a), x, weight.to(memory_format=torch.channels_last))
    _same(lambda *a: torch.nn.functional.conv2d(*a, padding="same"), x, weight)
    _same(lambda *a: torch.nn.functional.conv2d(*a), x[0], weight)  # unbatched
    _same(lambda *a: torch.nn.functional.conv_transpose2d(*a), x, weight.transpose(0, 1))
    _same(lambda *a: torch.nn.functional.conv2d(*a), x.half(), weight.half())
