"""Fast shape-only building and running on the ``meta`` device.

Counting needs shapes only, so the CLI builds and runs models on ``meta``: no memory, no
weight initialisation. Three things still cost time there, and this module removes them:

* torch computes the output shape of some ops on meta through Python decompositions that are
  far slower than the answer is simple. Normalisations (batch, layer, group and instance
  norm) and activations (GELU, SiLU, ...) return a tensor of their input's shape, a
  ``F.linear`` one of ``(*input.shape[:-1], out_features)``, binary element-wise ops one of
  the broadcast shape, a 2-d convolution and adaptive average pooling one of their output
  size, and weight initialisers and in-place activations change no shape at all;
  :class:`MetaShortcuts` answers those directly for meta tensors and leaves every other op,
  and every non-meta tensor, to torch.
* building initialises every weight; on meta there is nothing to initialise, so
  :func:`build_on_meta` skips ``torch.nn.init``'s initialisers;
* some builders compute with real tensors while building (the RegNets derive their widths
  that way) and fail under ``torch.device("meta")``; :func:`build_on_meta` then builds on the
  CPU with only the *parameters* created on meta, which skips their initialisation too.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from opscope.dispatch import DispatchMode

aten = torch.ops.aten

# Ops whose single output has the shape and dtype of their first argument: batch norm keeps
# its memory format too (channels_last stays channels_last), the others return it contiguous.
_SAME_LAYOUT = {aten.batch_norm.default}
_CONTIGUOUS = {aten.layer_norm.default, aten.group_norm.default, aten.instance_norm.default}
# In-place ops that weight initialisers and in-place activations use: on meta they change
# nothing but values.
_IN_PLACE = {
    aten.normal_, aten.uniform_, aten.fill_, aten.zero_, aten.bernoulli_, aten.exponential_,
    aten.random_, aten.erfinv_, aten.clamp_, aten.mul_, aten.add_, aten.sub_, aten.div_,
    aten.copy_, aten.relu_, aten.silu_, aten.hardswish_, aten.hardsigmoid_, aten.hardtanh_,
    aten.gelu_, aten.sigmoid_, aten.tanh_,
}  # fmt: skip
# Activations whose output, for a floating-point input laid out exactly contiguously, is a
# contiguous tensor of its shape and dtype, as for any unary element-wise op; torch derives
# it on meta through slow Python decompositions (GELU).
_ACTIVATIONS = {
    aten.gelu.default, aten.silu.default, aten.relu.default, aten.sigmoid.default,
    aten.tanh.default, aten.hardswish.default, aten.hardsigmoid.default,
    aten.clamp.default, aten.clamp_min.default,  # between scalars (Swin V2's logit scale)
}  # fmt: skip

# Binary element-wise ops: on two exactly contiguous meta tensors of one floating-point dtype,
# a contiguous tensor of their broadcast shape and that dtype (TensorIterator lays an output
# out like its inputs, and these are laid out plainly); with a scalar (a Python int or float,
# or a 0-dim tensor of a real dtype), the floating-point tensor's shape and dtype.
_BINARY = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}
# 2-d convolutions (not transposed) of an exactly contiguous input and weight: a contiguous
# output of the input's dtype, as torch's meta kernel gives (derived in Python: 80 µs a call).
_CONVOLUTIONS = {aten.conv2d.default, aten.convolution.default}
_SHAPED = _BINARY | _CONVOLUTIONS | {aten.adaptive_avg_pool2d.default}  # see _plain_shape

T = TypeVar("T")


class MetaShortcuts(DispatchMode):
    """Answer normalisations, activations, ``F.linear``, binary element-wise ops, 2-d
    convolutions, adaptive average pooling and initialisers on meta tensors directly."""

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and first.is_meta:
            if func in _SAME_LAYOUT and _same_layout_kept(first):
                # its very strides; torch.empty_like would derive them in Python (40 µs)
                return _empty(first.shape, first, first.stride())
            if func in _ACTIVATIONS and _plain_activation(func, args):
                return _empty(first.shape, first)
            if func in _CONTIGUOUS and (not first.is_contiguous() or _laid_out_plainly(first)):
                # torch makes a non-contiguous input contiguous, and keeps a contiguous one's
                # strides, which are only plain ones if they all are
                return _empty(first.shape, first)
            if func.overloadpacket in _IN_PLACE:
                return first
            if func is aten.linear.default and _plain_linear(*args, **(kwargs or {})):
                out_features = args[1].shape[0]
                return _empty((*first.shape[:-1], out_features), first)
            shape = _plain_shape(func, args)
            if shape is not None:
                return _empty(shape, first)
        return func(*args, **(kwargs or {}))


def _empty(
    shape: Sequence[int], like: torch.Tensor, strides: Sequence[int] | None = None
) -> torch.Tensor:
    """A meta tensor of ``shape`` and ``like``'s dtype, contiguous or of ``strides``, made by
    torch's C++ factories (``Tensor.new_empty`` costs three times as much on meta)."""
    if strides is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return torch.empty_strided(shape, strides, dtype=like.dtype, device=like.device)


def _laid_out_plainly(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` has exactly a contiguous tensor's strides: an op's output is then
    one too. ``is_contiguous()`` is not enough: it ignores the strides of dimensions of size
    one, which torch carries over to the output (a channels_last ``(N, C, 1, 1)``)."""
    expected = 1
    for size, stride in zip(reversed(tensor.shape), reversed(tensor.stride())):
        if stride != expected:
            return False
        expected *= max(size, 1)
    return True


def _same_layout_kept(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is laid out exactly contiguously or exactly channels_last, where an
    op that keeps its input's layout gives an output of its very strides (``empty_like``)."""
    return _laid_out_plainly(tensor) or (
        tensor.dim() == 4
        and tensor.numel() > 0  # an empty one's output is contiguous
        and _laid_out_plainly(tensor.permute(0, 2, 3, 1))
    )


def _plain_activation(func: Any, args: tuple[Any, ...]) -> bool:
    """Whether an activation's call is answered directly: its input is floating-point (else
    some change the dtype) and laid out plainly, and a clamp has a bound (torch raises
    without one)."""
    first = args[0]
    return (
        first.is_floating_point()
        and _laid_out_plainly(first)
        and (func is not aten.clamp.default or any(bound is not None for bound in args[1:]))
    )


def _plain_shape(func: Any, args: tuple[Any, ...]) -> tuple[int, ...] | None:
    """The output shape of a binary element-wise op on two exactly contiguous floating-point
    meta tensors of one dtype, or of a 2-d convolution or an adaptive average pooling of one,
    whose output is then a contiguous tensor of their dtype; None for any other call (left to
    torch, which also raises for the invalid ones)."""
    if func not in _SHAPED:  # most ops: decided before reading any tensor's layout
        return None
    first = args[0]
    if not (first.is_floating_point() and _laid_out_plainly(first)):
        return None
    if func in _BINARY and len(args) == 2:
        other = args[1]
        if isinstance(other, (int, float)):  # a Python scalar (x * 0.5): the tensor's dtype wins
            return tuple(first.shape)
        if not (isinstance(other, torch.Tensor) and other.is_meta):
            return None
        if other.dim() == 0 and first.dim() > 0 and not other.is_complex():
            return tuple(first.shape)  # a 0-dim tensor, like a scalar
        if other.dtype != first.dtype or not _laid_out_plainly(other):
            return None
        return _broadcast(first.shape, other.shape)
    if func in _CONVOLUTIONS:
        if func is aten.convolution.default:  # every argument given; a transposed one: no
            *given, transposed, _, groups = args
            return None if transposed else _conv2d_shape(*given, groups)
        return _conv2d_shape(*_conv2d_arguments(*args))
    if func is aten.adaptive_avg_pool2d.default and first.dim() in (3, 4):
        size = tuple(args[1])
        if len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
            return (*first.shape[:-2], *size)
    return None


def _broadcast(left: Sequence[int], right: Sequence[int]) -> tuple[int, ...] | None:
    """The shape ``left`` and ``right`` broadcast to (sizes aligned from the last; a size of 1
    takes the other's), or None where they do not (left to torch, which raises). Five times as
    fast as ``torch.broadcast_shapes``."""
    if left == right:
        return tuple(left)
    width = max(len(left), len(right))
    left = (1,) * (width - len(left)) + tuple(left)
    right = (1,) * (width - len(right)) + tuple(right)
    shape = []
    for mine, theirs in zip(left, right):
        if mine != theirs and theirs != 1 and mine != 1:
            return None
        shape.append(theirs if mine == 1 else mine)
    return tuple(shape)


def _conv2d_arguments(
    input: torch.Tensor,
    weight: Any,
    bias: Any = None,
    stride: Any = (1,),
    padding: Any = (0,),
    dilation: Any = (1,),
    groups: Any = 1,
) -> tuple[Any, ...]:
    """``aten.conv2d``'s arguments, its defaults filled in."""
    return input, weight, bias, stride, padding, dilation, groups


def _conv2d_shape(
    input: torch.Tensor,
    weight: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
) -> tuple[int, ...] | None:
    """The output shape of a valid, plain 2-d convolution of a batched meta ``input`` by an
    exactly contiguous ``weight``, ``(N, C_out, (H + 2p - d(k - 1) - 1) // s + 1, ...)``;
    None for anything else (left to torch, which also raises for the invalid ones)."""
    if not (
        isinstance(weight, torch.Tensor)
        and weight.is_meta
        and weight.dim() == 4
        and input.dim() == 4
        and weight.dtype == input.dtype
        # a channels_last weight made some torch versions' meta kernel lay the output out so
        and _laid_out_plainly(weight)
        and type(groups) is int
        and groups >= 1
    ):
        return None
    batch, channels, *spatial = input.shape
    out_channels, group_channels, *kernel = weight.shape
    if (
        channels == 0
        or channels != group_channels * groups
        or out_channels == 0
        or out_channels % groups
        or min(spatial) < 1
        or min(kernel) < 1
    ):
        return None
    if bias is not None and not (
        isinstance(bias, torch.Tensor)
        and bias.is_meta
        and bias.dtype == input.dtype
        and tuple(bias.shape) == (out_channels,)
    ):
        return None
    strides, paddings, dilations = _pair(stride), _pair(padding), _pair(dilation)
    if strides is None or paddings is None or dilations is None:
        return None
    if min(strides) < 1 or min(dilations) < 1 or min(paddings) < 0:
        return None
    sizes = []
    for size, extent, step, pad, spacing in zip(spatial, kernel, strides, paddings, dilations):
        span = spacing * (extent - 1) + 1
        if size + 2 * pad < span:
            return None
        sizes.append((size + 2 * pad - span) // step + 1)
    return (batch, out_channels, *sizes)


def _pair(value: Any) -> tuple[int, int] | None:
    """A convolution's stride, padding or dilation as two ints (one given stands for both);
    None for anything else."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or any(type(v) is not int for v in values):
        return None
    return values  # type: ignore[return-value]


def _plain_linear(input: torch.Tensor, weight: Any, bias: Any = None) -> bool:
    """Whether ``F.linear(input, weight, bias)`` is a plain, valid one on meta, whose output is
    a contiguous ``(*input.shape[:-1], out_features)`` of the input's dtype (anything else is
    left to torch, which also raises for the invalid ones)."""
    return (
        isinstance(weight, torch.Tensor)
        and weight.is_meta
        and weight.dim() == 2
        and input.dim() >= 1
        and input.shape[-1] == weight.shape[1]
        and weight.dtype == input.dtype
        and (
            bias is None
            or (
                isinstance(bias, torch.Tensor)
                and bias.is_meta
                and bias.dtype == input.dtype
                and bias.dim() <= 1  # a wider bias would broadcast the output
                and (bias.dim() == 0 or bias.shape[0] in (1, weight.shape[0]))
            )
        )
    )


def build_on_meta(factory: Callable[[], T]) -> T:
    """``factory()`` with every tensor on meta, or, for builders that compute with real
    tensors, with every parameter on meta and the result moved there."""
    try:
        with torch.device("meta"), MetaShortcuts(), _initialisers_skipped():
            return factory()
    except NotImplementedError:  # "Cannot copy out of meta tensor": it computes while building
        with _parameters_on_meta(), MetaShortcuts():
            built = factory()
        return built.to("meta") if isinstance(built, nn.Module) else built


# torch.nn.init's initialisers (kaiming_uniform_, trunc_normal_, ...), all in-place.
_INIT_FUNCTIONS = tuple(
    name for name in vars(nn.init) if name.endswith("_") and not name.startswith("_")
)


def _skipped_on_meta(initialiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``initialiser``, returning a meta tensor untouched: it has no values to initialise.
    Any other tensor (another thread's model, built meanwhile) is initialised as ever."""

    @functools.wraps(initialiser)
    def initialise(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            return tensor
        return initialiser(tensor, *args, **kwargs)

    return initialise


class _InitialiserSkipping:
    """The stand-ins set on ``torch.nn.init`` while any thread builds on meta: set by the first
    build to begin, and the originals put back by the last to end, whatever their order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builds = 0
        self._originals: dict[str, Callable[..., torch.Tensor]] = {}

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._builds == 0:
                self._originals = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
                for name, initialiser in self._originals.items():
                    setattr(nn.init, name, _skipped_on_meta(initialiser))
            self._builds += 1
        try:
            yield
        finally:
            with self._lock:
                self._builds -= 1
                if self._builds == 0:
                    for name, initialiser in self._originals.items():
                        setattr(nn.init, name, initialiser)


# ``torch.nn.init``'s initialisers skip meta tensors while building on meta: the same model,
# without the cost of computing fans and bounds and dispatching each in-place op (about a
# fifth of the build).
_initialisers_skipped = _InitialiserSkipping()


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create every parameter on meta while building, so initialising it costs nothing."""
    register_parameter = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
