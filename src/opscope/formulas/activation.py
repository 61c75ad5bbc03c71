"""Activations: exact operations per element, and per row for the softmax family.

Each scalar comparison, multiplication, addition, subtraction and division counts 1, and so
does each evaluation of an elementary function (exp, log, tanh, erf). On top of the project
convention (``docs/conventions.md``), activations follow these rules (the reasons are in
``docs/formulas/activation.md``):

* A function is counted as torch documents its definition, evaluated as written, a shared
  sub-expression once (Softplus computes ``beta * x`` once for its test and its ``exp``).
  One rewrite: the log of a quotient is the difference of logs, so LogSoftmax is
  ``x_i - log(sum_j exp(x_j))`` and LogSigmoid ``-log(1 + exp(-x))``, never a log of a
  ratio whose numerator's log is already known.
* A sign flip (``-x``) and an absolute value are free: they only change the sign bit.
* Constants such as ``1 / beta``, ``sqrt(2 / pi)`` or ``(lower + upper) / 2`` are worked out
  once per module, not per element: multiplying by them counts 1, computing them nothing.
* A piecewise definition costs the comparisons that pick the piece plus the arithmetic of
  its costliest piece, for every element: counts depend on shapes, never on tensor values.
* Float settings (``negative_slope``, ``alpha``, ``beta``, ...) never change a count, not
  even when they make an operation trivial (``beta=1``): the module still performs it.
* The softmax family does not count the row maximum that implementations subtract for
  numerical stability: it does not change the result.

Nothing here depends on the training flag: the activations compute the same arithmetic in
both modes (RReLU draws its random slopes in training, and drawing is not arithmetic).

The same functions reached as ATen operators (``F.relu``, ``F.gelu``, ``torch.softmax``, the
in-place ``relu_``, ...) are counted with the same per-element costs, read from the module
tables, so an operator and its module never disagree (:data:`ACTIVATION_OPS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import torch
from torch import nn

from opscope.formulas.registry import (
    Call,
    OpCall,
    OpCountFn,
    Shape,
    aten_ops,
    register,
    register_op,
)

OPS_PER_ELEMENT: Mapping[type[nn.Module], int] = MappingProxyType(
    {
        # Piecewise-linear: comparisons, then at most one arithmetic operation.
        nn.ReLU: 1,  # max(0, x): 1 comparison
        nn.Hardtanh: 2,  # min_val / max_val outside [min_val, max_val], x inside: 2 comparisons
        nn.ReLU6: 2,  # Hardtanh(0, 6): 2 comparisons
        nn.Threshold: 1,  # x if x > threshold else value: 1 comparison
        nn.Hardshrink: 2,  # x if x > lambd or x < -lambd else 0: 2 comparisons
        nn.Softshrink: 3,  # x - lambd above lambd, x + lambd below -lambd, else 0: 2 cmp + 1 add
        nn.LeakyReLU: 2,  # x if x >= 0 else negative_slope * x: 1 comparison + 1 mul
        nn.PReLU: 2,  # as LeakyReLU, the slope a weight (one, or one per channel): 1 cmp + 1 mul
        nn.RReLU: 2,  # as LeakyReLU, slope drawn in training, (lower + upper) / 2 in eval
        # Exponential family.
        nn.ELU: 4,  # x if x > 0 else alpha * (exp(x) - 1): 1 cmp + exp + 1 sub + 1 mul
        nn.CELU: 5,  # x if x > 0 else alpha * (exp(x / alpha) - 1): ELU's 4 + 1 div
        nn.SELU: 5,  # scale * ELU(x): ELU's 4 + 1 mul
        nn.Sigmoid: 3,  # 1 / (1 + exp(-x)): exp + 1 add + 1 div (-x is free)
        nn.LogSigmoid: 3,  # log(1 / (1 + exp(-x))) = -log(1 + exp(-x)): exp + 1 add + log
        nn.SiLU: 4,  # x * sigmoid(x): Sigmoid's 3 + 1 mul
        # x if beta*x > threshold else log(1 + exp(beta*x)) / beta: 1 mul (beta*x, shared by
        # the test and exp), 1 cmp, exp, 1 add, log, 1 mul by 1/beta
        nn.Softplus: 6,
        nn.Mish: 5,  # x * tanh(log(1 + exp(x))): exp + 1 add + log + tanh + 1 mul
        nn.GLU: 4,  # a * sigmoid(b) per output element, a and b the input's halves
        # Tanh and friends.
        nn.Tanh: 1,  # tanh(x): 1 function
        nn.Tanhshrink: 2,  # x - tanh(x): tanh + 1 sub
        nn.Softsign: 2,  # x / (1 + |x|): 1 add + 1 div
        # Hard approximations: clamp to [-3, 3], then the inner piece.
        nn.Hardsigmoid: 4,  # 0 below -3, 1 above 3, x / 6 + 1/2 between: 2 cmp + 1 div + 1 add
        # 0 below -3, x above 3, x * (x + 3) / 6 between: 2 cmp + 1 add + 1 mul + 1 div
        nn.Hardswish: 5,
    }
)
"""Operations per output element of each element-wise activation (GELU aside)."""

GELU_OPS_PER_ELEMENT: Mapping[str, int] = MappingProxyType(
    {
        # 0.5 * x * (1 + erf(x / sqrt(2))): 1 mul by 1/sqrt(2), erf, 1 add, 2 mul
        "none": 5,
        # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))): x**3 as 2 mul, 1 mul by
        # 0.044715, 1 add, 1 mul by sqrt(2/pi), tanh, 1 add, 2 mul
        "tanh": 9,
    }
)
"""Operations per element of ``nn.GELU``, by its ``approximate`` setting."""


def ops_per_element(module: nn.Module) -> int:
    """Operations per output element of an element-wise activation module.

    ``nn.GELU`` depends on ``approximate``; every other type is looked up in
    :data:`OPS_PER_ELEMENT` (a subclass takes its nearest listed base's cost).

    >>> ops_per_element(nn.GELU(approximate="tanh")), ops_per_element(nn.ReLU6())
    (9, 2)
    """
    if isinstance(module, nn.GELU):
        return GELU_OPS_PER_ELEMENT[module.approximate]
    for base in type(module).__mro__:
        if base in OPS_PER_ELEMENT:
            return OPS_PER_ELEMENT[base]
    raise TypeError(f"{type(module).__name__} is not an element-wise activation")


@dataclass(frozen=True)
class ElementwiseConfig:
    """The cost of one element of an element-wise activation, read once when it is hooked."""

    ops_per_element: int

    @classmethod
    def from_module(cls, module: nn.Module) -> ElementwiseConfig:
        """Read the per-element cost of an element-wise activation module."""
        return cls(ops_per_element=ops_per_element(module))


def elementwise_ops(output_shape: Shape, ops_per_element: int) -> int:
    """Exact operations of one element-wise activation call::

        ops = numel(output) * ops_per_element

    Batched or not, every element costs the same, so the batch enters through ``numel``.

    >>> elementwise_ops((2, 3, 4), ops_per_element=4)  # a SiLU on 24 elements
    96
    """
    return math.prod(output_shape) * ops_per_element


@register(*OPS_PER_ELEMENT, nn.GELU, describe=ElementwiseConfig.from_module)
def count_elementwise(config: ElementwiseConfig, call: Call) -> int:
    """Operations of one element-wise activation call: :func:`elementwise_ops` on the output.

    The output has the input's shape for every type but ``GLU``, whose output is half its
    input along ``dim``; ``inplace=True`` changes where the result goes, not its cost.
    """
    return elementwise_ops(call.output, config.ops_per_element)


@dataclass(frozen=True)
class SoftmaxConfig:
    """The axis of a softmax-family module: ``None`` is torch's legacy implicit choice."""

    dim: int | None

    @classmethod
    def from_module(cls, module: nn.Module) -> SoftmaxConfig:
        """Read the ``dim`` of ``Softmax``, ``Softmin`` or ``LogSoftmax``; ``Softmax2d``
        works along the channels, ``dim=-3``."""
        return cls(dim=-3 if isinstance(module, nn.Softmax2d) else module.dim)


def softmax_axis(dim: int | None, ndim: int) -> int:
    """The non-negative axis a softmax over an ``ndim``-dimensional input works along.

    ``dim=None`` follows torch's deprecated implicit rule (``nn.functional._get_softmax_dim``):
    axis 0 for 0-, 1- and 3-dimensional inputs, axis 1 otherwise. A 0-dimensional input
    accepts ``dim`` 0 or -1 and is one row of one element.

    >>> softmax_axis(None, 3), softmax_axis(None, 4), softmax_axis(-1, 4)
    (0, 1, 3)
    """
    if dim is None:
        return 0 if ndim in (0, 1, 3) else 1
    return dim % max(ndim, 1)


def _rows_and_length(shape: Shape, dim: int | None) -> tuple[int, int]:
    """How many independent rows the softmax normalises, and their length ``S``."""
    if not shape:
        return 1, 1
    axis = softmax_axis(dim, len(shape))
    return math.prod(shape[:axis] + shape[axis + 1 :]), shape[axis]


def softmax_ops(shape: Shape, dim: int | None) -> int:
    """Exact operations of one softmax over ``shape`` along ``dim``.

    Each of the ``R = numel / S`` rows of length ``S`` takes ``S`` exponentials, ``S - 1``
    additions for their sum and ``S`` divisions by it::

        ops = R * (3S - 1)        (0 when S = 0: an empty row costs nothing)

    ``Softmin`` is the softmax of ``-x``, and the sign flip is free, so it costs the same.

    >>> softmax_ops((2, 5, 3), dim=1)  # 6 rows of 5: 6 * 14
    84
    """
    rows, length = _rows_and_length(shape, dim)
    return rows * (3 * length - 1) if length else 0


def log_softmax_ops(shape: Shape, dim: int | None) -> int:
    """Exact operations of one log-softmax over ``shape`` along ``dim``.

    Evaluated as ``x_i - log(sum_j exp(x_j))``: per row of length ``S``, ``S`` exponentials,
    ``S - 1`` additions, one logarithm and ``S`` subtractions::

        ops = R * 3S

    >>> log_softmax_ops((2, 5, 3), dim=1)  # 6 rows of 5: 6 * 15
    90
    """
    rows, length = _rows_and_length(shape, dim)
    return rows * 3 * length


@register(nn.Softmax, nn.Softmin, nn.Softmax2d, describe=SoftmaxConfig.from_module)
def count_softmax(config: SoftmaxConfig, call: Call) -> int:
    """Operations of one ``Softmax``/``Softmin``/``Softmax2d`` call: :func:`softmax_ops`
    on the real input shape (an unbatched input simply has fewer rows)."""
    return softmax_ops(call.input, config.dim)


@register(nn.LogSoftmax, describe=SoftmaxConfig.from_module)
def count_log_softmax(config: SoftmaxConfig, call: Call) -> int:
    """Operations of one ``LogSoftmax`` call: :func:`log_softmax_ops` on the input shape."""
    return log_softmax_ops(call.input, config.dim)


# -- ATen operators -----------------------------------------------------------------------

ACTIVATION_OPS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "hardtanh": nn.Hardtanh,
        "threshold": nn.Threshold,
        "hardshrink": nn.Hardshrink,
        "softshrink": nn.Softshrink,
        "leaky_relu": nn.LeakyReLU,
        "prelu": nn.PReLU,
        "_prelu_kernel": nn.PReLU,
        "rrelu": nn.RReLU,
        "rrelu_with_noise": nn.RReLU,
        "celu": nn.CELU,
        "selu": nn.SELU,
        "sigmoid": nn.Sigmoid,
        "log_sigmoid": nn.LogSigmoid,
        "log_sigmoid_forward": nn.LogSigmoid,
        "silu": nn.SiLU,
        "softplus": nn.Softplus,
        "mish": nn.Mish,
        "glu": nn.GLU,
        "tanh": nn.Tanh,
        "hardsigmoid": nn.Hardsigmoid,
        "hardswish": nn.Hardswish,
    }
)
"""The ATen operator (and its in-place ``name_``) that computes each element-wise activation
module: the operator costs :data:`OPS_PER_ELEMENT` of that module per output element."""


def with_inplace(*names: str) -> tuple[torch._ops.OpOverloadPacket, ...]:
    """The ATen packets ``name`` and ``name_`` (the in-place variant) that exist: an
    in-place operator computes what its out-of-place one does."""
    return aten_ops(*(variant for name in names for variant in (name, name + "_")))


def count_per_element(ops_per_element: int, call: OpCall) -> int:
    """An operator costing ``ops_per_element`` per output element: :func:`elementwise_ops`
    on its (first) output."""
    return elementwise_ops(call.output, ops_per_element)


def per_element(ops_per_element: int) -> OpCountFn:
    """The op count of ``ops_per_element`` per output element."""
    return partial(count_per_element, ops_per_element)


for _name, _module_type in ACTIVATION_OPS.items():
    register_op(*with_inplace(_name), family="activation")(
        per_element(OPS_PER_ELEMENT[_module_type])
    )


@register_op(*with_inplace("gelu"), family="activation")
def count_gelu_op(call: OpCall) -> int:
    """``gelu(self, approximate='none')``: :data:`GELU_OPS_PER_ELEMENT` per element."""
    approximate = call.arg(1, "approximate", "none")
    return elementwise_ops(call.output, GELU_OPS_PER_ELEMENT[approximate])


@register_op(*with_inplace("elu"), family="activation")
def count_elu_op(call: OpCall) -> int:
    """``elu(self, alpha, scale, input_scale)``, which ``F.elu``, ``F.selu`` and ``F.celu``
    lower to: ELU's 4 per element, plus 1 for ``scale`` (SELU) and 1 for ``input_scale``
    (CELU's ``x / alpha``) when they are not 1. (A CELU with ``alpha=1`` reaches this
    operator as a plain ELU; reached as ``aten.celu`` it costs CELU's 5.)"""
    scaled = int(call.arg(2, "scale", 1) != 1) + int(call.arg(3, "input_scale", 1) != 1)
    return elementwise_ops(call.output, OPS_PER_ELEMENT[nn.ELU] + scaled)


@register_op(*aten_ops("softmax", "_softmax", "_safe_softmax", "special_softmax"), family="softmax")
def count_softmax_op(call: OpCall) -> int:
    """``softmax(self, dim)`` / ``_softmax`` / ``_safe_softmax``: :func:`softmax_ops`.

    ``_safe_softmax`` (what attention's reference implementation calls) also writes 0 to the
    rows that are masked out entirely; like the max subtraction, that guard protects the
    result and is not counted."""
    return softmax_ops(call.input, call.arg(1, "dim"))


@register_op(*aten_ops("log_softmax", "_log_softmax", "special_log_softmax"), family="softmax")
def count_log_softmax_op(call: OpCall) -> int:
    """``log_softmax(self, dim)`` / ``_log_softmax``: :func:`log_softmax_ops`."""
    return log_softmax_ops(call.input, call.arg(1, "dim"))


# -- Backward pass (ATen ops) ----------------------------------------------------------------

BACKWARD_OPS_PER_ELEMENT: Mapping[str, int] = MappingProxyType(
    {
        # g the incoming gradient, x the forward's input, y its output.
        "threshold_backward": 1,  # ReLU, Threshold: g if x > threshold else 0: 1 comparison
        "hardtanh_backward": 2,  # Hardtanh, ReLU6: g if min < x < max else 0: 2 comparisons
        "hardshrink_backward": 2,  # 0 if -lambd <= x <= lambd else g: 2 comparisons
        "softshrink_backward": 2,  # the same selection: 2 comparisons
        "leaky_relu_backward": 2,  # g if x > 0 else g * negative_slope: 1 cmp + 1 mul
        "sigmoid_backward": 3,  # g * (1 - y) * y: 1 sub + 2 mul
        "tanh_backward": 3,  # g * (1 - y * y): 2 mul + 1 sub
        # s = 1 / (1 + exp(-x)): exp, add, div; g * s * (1 + x * (1 - s)): 3 mul, sub, add
        "silu_backward": 8,
        # s as SiLU's (3), t = tanh(log1p(exp(x))) (3 functions);
        # g * (t + x * s * (1 - t * t)): 4 mul, sub, add
        "mish_backward": 12,
        "hardsigmoid_backward": 3,  # g / 6 if -3 < x < 3 else 0: 2 cmp + 1 mul by 1/6
        # 0 if x <= -3, g if x >= 3, g * (x / 3 + 1/2) between: 2 cmp + div, add, mul
        "hardswish_backward": 5,
        # z = exp(beta * x); g if beta * x > threshold else g * z / (z + 1): mul (shared by the
        # test and exp), cmp, exp, mul, add, div
        "softplus_backward": 6,
        # b = exp(-|x|), saved by the forward: (m - s * b / (1 + b)) * g with m, s = 1, 1 or
        # 0, -1 picked by x < 0: cmp, add, div, sub, mul (s only flips a sign)
        "log_sigmoid_backward": 5,
    }
)
"""Operations per element of each element-wise activation's backward operator, by ATen name:
the derivative as the kernel evaluates it, times the incoming gradient (the reasons are in
``docs/formulas/activation.md``, "Backward pass")."""

for _name, _cost in BACKWARD_OPS_PER_ELEMENT.items():
    register_op(*aten_ops(_name), family="activation")(per_element(_cost))

GELU_BACKWARD_OPS_PER_ELEMENT: Mapping[str, int] = MappingProxyType(
    {
        # g * (cdf + x * pdf), cdf = 0.5 * (1 + erf(x / sqrt(2))): mul, erf, add, mul;
        # pdf = exp(-x * x / 2) / sqrt(2 pi): mul, mul, exp, mul; then mul, add, mul
        "none": 11,
        # t = tanh(b * (x + k * x**3)): x**2, x**3 (one mul more), mul, add, mul, tanh;
        # 0.5 * (1 + t): add, mul; 0.5 * x: mul; (1 - t * t): mul, sub;
        # b * (1 + 3k * x**2): mul, add, mul; the two products: 2 mul; then add, mul by g
        "tanh": 18,
    }
)
"""Operations per element of ``gelu_backward``, by its ``approximate`` argument."""


@register_op(*aten_ops("gelu_backward"), family="activation")
def count_gelu_backward(call: OpCall) -> int:
    """``gelu_backward(grad_output, self, approximate='none')``:
    :data:`GELU_BACKWARD_OPS_PER_ELEMENT` per element."""
    approximate = call.arg(2, "approximate", "none")
    return elementwise_ops(call.output, GELU_BACKWARD_OPS_PER_ELEMENT[approximate])


ELU_BACKWARD_OPS_PER_ELEMENT = 4
"""``elu_backward`` from the input ``x``, ``x <= 0``: ``g * c * exp(x)`` with ``c = alpha *
scale * input_scale`` a per-call constant: 1 comparison, exp, 2 multiplications (``x > 0``
costs at most ``g * scale``)."""


@register_op(*aten_ops("elu_backward"), family="activation")
def count_elu_backward(call: OpCall) -> int:
    """``elu_backward(grad_output, alpha, scale, input_scale, is_result, self_or_result)``:
    from the input, :data:`ELU_BACKWARD_OPS_PER_ELEMENT`; from the output ``y`` (after an
    in-place ELU), ``g * input_scale * (y + alpha * scale)`` below 0: 1 comparison, 1 addition,
    1 multiplication by ``g``, one less. As the forward's :func:`count_elu_op` counts them, a
    multiplication by ``input_scale`` (CELU's ``1 / alpha``) costs 1 more when it is not 1;
    ``scale`` and ``alpha`` fold into the constant."""
    scaled = int(call.arg(3, "input_scale", 1) != 1)
    from_result = bool(call.arg(4, "is_result", False))
    return elementwise_ops(call.output, ELU_BACKWARD_OPS_PER_ELEMENT - from_result + scaled)


@register_op(*aten_ops("rrelu_with_noise_backward"), family="activation")
def count_rrelu_backward(call: OpCall) -> int:
    """``rrelu_with_noise_backward(grad_output, self, noise, lower, upper, training, ...)``:
    in training (``upper > lower``) ``g * noise``, the slopes drawn by the forward (1 for a
    positive input), 1 multiplication per element; otherwise the leaky ReLU's backward with the
    mean slope, 2."""
    drawn = call.arg(5, "training", False) and call.arg(4, "upper") > call.arg(3, "lower")
    return elementwise_ops(
        call.output, 1 if drawn else BACKWARD_OPS_PER_ELEMENT["leaky_relu_backward"]
    )


PRELU_BACKWARD_OPS_PER_ELEMENT = 3
"""``_prelu_kernel_backward``: per element, ``x > 0`` (1 comparison) picks ``g`` or
``weight * g`` for the input's gradient and ``0`` or ``x * g`` for the weight's (2
multiplications); summing the weight's over the broadcast dims is a separate ``sum``."""


@register_op(*aten_ops("_prelu_kernel_backward"), family="activation")
def count_prelu_backward(call: OpCall) -> int:
    """``_prelu_kernel_backward(grad_output, self, weight)``:
    :data:`PRELU_BACKWARD_OPS_PER_ELEMENT` per element of the input."""
    return elementwise_ops(call.args[1].shape, PRELU_BACKWARD_OPS_PER_ELEMENT)


def softmax_backward_ops(shape: Shape, dim: int | None) -> int:
    """Exact operations of the backward of a softmax or a log-softmax over ``shape`` along
    ``dim``, from the output ``y`` and its gradient ``g``, per row of length ``S``:

    * softmax: ``y_i * (g_i - sum_j g_j * y_j)``: ``S`` products, ``S - 1`` additions, ``S``
      subtractions, ``S`` products;
    * log-softmax: ``g_i - exp(y_i) * sum_j g_j``: ``S - 1`` additions, ``S`` exponentials,
      ``S`` products, ``S`` subtractions::

        ops = R * (4S - 1)        (0 for an empty row)

    >>> softmax_backward_ops((2, 5, 3), dim=1)  # 6 rows of 5: 6 * 19
    114
    """
    rows, length = _rows_and_length(shape, dim)
    return rows * (4 * length - 1) if length else 0


@register_op(*aten_ops("_softmax_backward_data", "_log_softmax_backward_data"), family="softmax")
def count_softmax_backward(call: OpCall) -> int:
    """``_softmax_backward_data(grad_output, output, dim, input_dtype)`` (and the log-softmax
    one): :func:`softmax_backward_ops`."""
    return softmax_backward_ops(call.input, call.arg(2, "dim"))


GLU_BACKWARD_OPS_PER_OUTPUT = 8
"""``glu_backward``, per element of the forward's output ``a * s``, ``s = sigmoid(b)``: ``s``
(3), ``g * s`` for ``a``'s gradient (1), ``(1 - s) * s * a * g`` for ``b``'s (4)."""


@register_op(*aten_ops("glu_backward"), family="activation")
def count_glu_backward(call: OpCall) -> int:
    """``glu_backward(grad_output, self, dim)``: :data:`GLU_BACKWARD_OPS_PER_OUTPUT` per
    element of ``grad_output`` (half the input along ``dim``)."""
    return elementwise_ops(call.input, GLU_BACKWARD_OPS_PER_OUTPUT)
