"""Losses: exact operations of the ``torch.nn`` losses, counted as torch computes them.

A loss is computed element by element (or row by row), then reduced: ``'none'`` keeps every
value, ``'sum'`` adds them (``n - 1`` additions), ``'mean'`` adds them and divides once
(``n``): :func:`reduce_ops`. Each loss is counted as torch evaluates it, kernel or
composition of operators, by the project convention (one operation per multiply, add,
subtract, divide, compare or elementary function; sign flips free; a piecewise definition
costs its comparisons and its costliest piece, whatever the values), so that the module
formula, the ATen operator's formula and the operators a composite loss decomposes into all
give the same number (``docs/formulas/loss.md`` itemises every loss):

* element-wise losses, ``ops = k * n + reduction`` (:data:`OPS_PER_ELEMENT`): ``MSELoss`` 2,
  ``L1Loss`` 1, ``SmoothL1Loss`` 5 (1 with ``beta=0``, which runs as ``l1_loss``),
  ``HuberLoss`` 4, ``SoftMarginLoss`` 3, ``BCELoss`` 8 (9 with a weight);
* ``BCEWithLogitsLoss``, ``NLLLoss``, ``CrossEntropyLoss`` (class indices or probabilities,
  ``label_smoothing``, ``weight``), ``KLDivLoss``, ``PoissonNLLLoss``, ``GaussianNLLLoss``,
  ``HingeEmbeddingLoss``, ``MarginRankingLoss``, ``CosineEmbeddingLoss``,
  ``MultiMarginLoss``, ``MultiLabelSoftMarginLoss`` and ``TripletMarginLoss``, each by its
  own function below.

Samples whose class index equals ``ignore_index`` are skipped by torch, which makes the
count of ``NLLLoss`` and ``CrossEntropyLoss`` depend on the targets' values: they are
counted as if no target were ignored, an upper bound, exact when none is. Comparisons of
class indices (with ``ignore_index``, with a loop position) are index work, not counted
inside a kernel; where torch runs them as tensor operators (label smoothing's
``target == ignore_index``) the op level counts them, and so does the module formula.
``CTCLoss``, ``MultiLabelMarginLoss``, ``TripletMarginWithDistanceLoss`` and
``LinearCrossEntropyLoss`` have no formula (see ``docs/formulas/loss.md``); their operators
are counted where the op registry knows them. No loss has a matrix product: 0 MACs, as
``FlopCounterMode`` counts them.

The backward operators autograd runs for these losses (``nll_loss_backward``,
``nll_loss2d_backward``, ``mse_loss_backward``, ``smooth_l1_loss_backward``,
``huber_loss_backward``, ``binary_cross_entropy_backward``, ``soft_margin_loss_backward``,
``multi_margin_loss_backward``) are counted at the end, each gradient as its CPU kernel
evaluates it; the other losses' backward passes are compositions of counted operators.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from opscope.formulas.activation import OPS_PER_ELEMENT as ACTIVATION_OPS
from opscope.formulas.activation import log_softmax_ops
from opscope.formulas.distance import pairwise_distance_ops
from opscope.formulas.elementwise import OPS_PER_OUTPUT_ELEMENT
from opscope.formulas.reduction import OPS_PER_GROUP, reduction_ops
from opscope.formulas.registry import Call, OpCall, Shape, aten_ops, register, register_op

REDUCTIONS: Mapping[int, str] = MappingProxyType({0: "none", 1: "mean", 2: "sum"})
"""ATen's reduction enum (``torch.nn._reduction``), by value."""

LOG_SIGMOID = ACTIVATION_OPS[nn.LogSigmoid]
"""``log_sigmoid`` per element: ``-log(1 + exp(-x))``, 3."""


def _numel(*shapes: Sequence[int]) -> int:
    """The number of elements of the shapes broadcast together."""
    return math.prod(torch.broadcast_shapes(*(tuple(shape) for shape in shapes)))


def _total(elements: int) -> int:
    """Additions to sum ``elements`` values into one: ``elements - 1`` (0 for none)."""
    return reduction_ops(elements, 1, OPS_PER_GROUP["sum"])


def reduce_ops(elements: int, reduction: str) -> int:
    """Operations of reducing ``elements`` loss values: ``'none'`` 0, ``'sum'`` ``n - 1``
    additions, ``'mean'`` those and one division (``n``), ``'batchmean'`` (``KLDivLoss``)
    the sum then a division by the batch size (``n``); 0 for no values.

    >>> [reduce_ops(6, r) for r in ("none", "sum", "mean", "batchmean")], reduce_ops(0, "mean")
    ([0, 5, 6, 6], 0)
    """
    if reduction == "none" or not elements:
        return 0
    return _total(elements) + int(reduction in ("mean", "batchmean"))


def _reduction(call: OpCall, index: int, default: int = 1) -> str:
    """The reduction an ATen loss operator takes at argument ``index`` (an enum value)."""
    return REDUCTIONS[int(call.arg(index, "reduction", default))]


_SETTING_TYPES: Mapping[str, Callable[[Any], Any]] = MappingProxyType(
    {"str": str, "bool": bool, "int": int, "float": float}
)


@dataclass(frozen=True)
class LossConfig:
    """The reduction of a loss module (``'none'``, ``'mean'``, ``'sum'``; ``KLDivLoss`` also
    ``'batchmean'``); the other settings of the losses counted with it change no count
    (margins, ``eps``, ``delta``: a constant is added or compared whatever its value).

    A subclass adds the settings that do change a count, each field named as the module's
    attribute it is read from (a tensor attribute, a ``weight``, is read as whether it is
    there)."""

    reduction: str

    @classmethod
    def from_module(cls, module: nn.Module) -> LossConfig:
        """Read the config's fields from the loss module's attributes of the same names."""
        return cls(
            **{
                field.name: _setting(getattr(module, field.name), str(field.type))
                for field in dataclasses.fields(cls)
            }
        )

    def settings(self) -> dict[str, Any]:
        """The fields, as the keyword arguments of the loss's count function."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def _setting(value: Any, type_name: str) -> Any:
    """A module attribute as a config field of type ``type_name``: a tensor (or None) for a
    ``bool`` is whether it is there."""
    if type_name == "bool" and (value is None or isinstance(value, torch.Tensor)):
        return value is not None
    return _SETTING_TYPES[type_name](value)


# -- element-wise losses --------------------------------------------------------------------

OPS_PER_ELEMENT: Mapping[str, int] = MappingProxyType(
    {
        "mse_loss": 2,  # (x - y)^2: 1 subtraction, 1 square
        "l1_loss": 1,  # |x - y|: 1 subtraction (the absolute value is free)
        # z = |x - y|; z < beta ? 0.5 * z * z / beta : z - 0.5 * beta
        # 1 subtraction, 1 comparison, the costlier piece's 2 multiplications and 1 division
        "smooth_l1_loss": 5,
        # z < delta ? 0.5 * z * z : delta * (z - 0.5 * delta): 1 sub, 1 cmp, 2 for each piece
        "huber_loss": 4,
        "soft_margin_loss": 3,  # log1p(exp(-x * y)): 1 multiplication, exp, log1p
        # (y - 1) * max(log1p(-x), -100) - y * max(log(x), -100): log1p, 1 cmp, 1 sub,
        # 1 mul, log, 1 cmp, 1 mul, 1 sub (the kernel's checks that x and y lie in [0, 1]
        # guard the inputs and are not counted)
        "binary_cross_entropy": 8,
    }
)
"""Operations per element of the losses computed element by element, by ATen operator; one
more per element for ``binary_cross_entropy``'s weight."""

_ELEMENT_WISE_MODULES: Mapping[type[nn.Module], str] = MappingProxyType(
    {
        nn.MSELoss: "mse_loss",
        nn.L1Loss: "l1_loss",
        nn.SmoothL1Loss: "smooth_l1_loss",
        nn.HuberLoss: "huber_loss",
        nn.SoftMarginLoss: "soft_margin_loss",
        nn.BCELoss: "binary_cross_entropy",
    }
)


def element_wise_loss_ops(elements: int, ops_per_element: int, reduction: str) -> int:
    """Exact operations of a loss computed element by element over ``n = elements``, then
    reduced::

        ops = k * n + reduce_ops(n)

    Example (MSELoss() on (4, 5): 2 per element, the mean 20):
        >>> element_wise_loss_ops(20, OPS_PER_ELEMENT["mse_loss"], "mean")
        60
    """
    return elements * ops_per_element + reduce_ops(elements, reduction)


@dataclass(frozen=True)
class ElementWiseLossConfig(LossConfig):
    """The per-element cost and the reduction of an element-wise loss module."""

    ops_per_element: int

    @classmethod
    def from_module(cls, module: nn.Module) -> ElementWiseLossConfig:
        """Read an element-wise loss: a ``SmoothL1Loss`` with ``beta=0`` runs as
        ``l1_loss``; a ``BCELoss`` with a weight multiplies by it."""
        name = next(n for t, n in _ELEMENT_WISE_MODULES.items() if isinstance(module, t))
        if isinstance(module, nn.SmoothL1Loss) and module.beta == 0:
            name = "l1_loss"
        weighted = isinstance(module, nn.BCELoss) and module.weight is not None
        return cls(str(module.reduction), OPS_PER_ELEMENT[name] + int(weighted))


@register(*_ELEMENT_WISE_MODULES, describe=ElementWiseLossConfig.from_module)
def count_element_wise_loss(config: ElementWiseLossConfig, call: Call) -> int:
    """Operations of one call of an element-wise loss: :func:`element_wise_loss_ops` over
    the input and target broadcast together."""
    return element_wise_loss_ops(_numel(*call.inputs[:2]), **config.settings())


def count_element_wise_loss_op(ops_per_element: int, call: OpCall) -> int:
    """``mse_loss(self, target, reduction=1)`` and the operators with the same first three
    arguments (``l1_loss``, ``huber_loss``, ``soft_margin_loss``):
    :func:`element_wise_loss_ops` with the operator's :data:`OPS_PER_ELEMENT`."""
    elements = _numel(call.input, call.args[1].shape)
    return element_wise_loss_ops(elements, ops_per_element, _reduction(call, 2))


for _name in ("mse_loss", "l1_loss", "huber_loss", "soft_margin_loss"):
    register_op(*aten_ops(_name), family="loss")(
        partial(count_element_wise_loss_op, OPS_PER_ELEMENT[_name])
    )


@register_op(*aten_ops("smooth_l1_loss"), family="loss")
def count_smooth_l1_loss_op(call: OpCall) -> int:
    """``smooth_l1_loss(self, target, reduction=1, beta=1.0)``: 5 per element, 1 with
    ``beta=0`` (torch then computes ``l1_loss``)."""
    name = "l1_loss" if call.arg(3, "beta", 1.0) == 0 else "smooth_l1_loss"
    return count_element_wise_loss_op(OPS_PER_ELEMENT[name], call)


@register_op(*aten_ops("binary_cross_entropy"), family="loss")
def count_binary_cross_entropy_op(call: OpCall) -> int:
    """``binary_cross_entropy(self, target, weight=None, reduction=1)``: 8 per element, 9
    with a weight (``F.binary_cross_entropy`` expands it to the input's shape)."""
    per_element = OPS_PER_ELEMENT["binary_cross_entropy"] + int(
        call.tensor(2, "weight") is not None
    )
    elements = _numel(call.input, call.args[1].shape)
    return element_wise_loss_ops(elements, per_element, _reduction(call, 3))


# -- BCEWithLogitsLoss ----------------------------------------------------------------------


def bce_with_logits_ops(
    input_shape: Shape,
    target_shape: Shape,
    *,
    weight: bool,
    pos_weight: Shape | None,
    reduction: str,
) -> int:
    """Exact operations of ``binary_cross_entropy_with_logits``, as torch computes it::

        log_sigmoid(x)                      3n
        pos_weight: (pw - 1) * y + 1        numel(pw) + 2n, then log_sigmoid(x) * that: n
        (1 - y) * x - log_sigmoid(x)        3n
        * weight                            n
        + reduce_ops(n)

    (``n`` the input's elements; ``(pw - 1)`` is computed on ``pos_weight``'s own shape,
    ``C`` values for a per-class weight).

    Example (BCEWithLogitsLoss(pos_weight of 5) on (4, 5), mean: 60 + 60 + (5 + 40 + 20) + 20):
        >>> bce_with_logits_ops((4, 5), (4, 5), weight=False, pos_weight=(5,), reduction="mean")
        205
    """
    elements = math.prod(input_shape)
    ops = LOG_SIGMOID * elements + 3 * _numel(target_shape, input_shape)
    if pos_weight is not None:
        ops += math.prod(pos_weight) + 2 * _numel(pos_weight, target_shape) + elements
    if weight:
        ops += elements
    return ops + reduce_ops(elements, reduction)


@dataclass(frozen=True)
class BCEWithLogitsConfig(LossConfig):
    """The settings of a ``BCEWithLogitsLoss``: whether it has a weight, and the shape of its
    ``pos_weight`` (None without one)."""

    weight: bool
    pos_weight: Shape | None

    @classmethod
    def from_module(cls, module: nn.Module) -> BCEWithLogitsConfig:
        """Read the settings of an ``nn.BCEWithLogitsLoss``."""
        pos_weight = module.pos_weight
        shape = None if pos_weight is None else tuple(pos_weight.shape)
        return cls(str(module.reduction), module.weight is not None, shape)


@register(nn.BCEWithLogitsLoss, describe=BCEWithLogitsConfig.from_module)
def count_bce_with_logits(config: BCEWithLogitsConfig, call: Call) -> int:
    """Operations of one ``BCEWithLogitsLoss(input, target)`` call: :func:`bce_with_logits_ops`."""
    return bce_with_logits_ops(*call.inputs[:2], **config.settings())


@register_op(*aten_ops("binary_cross_entropy_with_logits"), family="loss")
def count_bce_with_logits_op(call: OpCall) -> int:
    """``binary_cross_entropy_with_logits(self, target, weight=None, pos_weight=None,
    reduction=1)``: :func:`bce_with_logits_ops`."""
    pos_weight = call.tensor(3, "pos_weight")
    return bce_with_logits_ops(
        call.input, call.args[1].shape, weight=call.tensor(2, "weight") is not None,
        pos_weight=None if pos_weight is None else pos_weight.shape,
        reduction=_reduction(call, 4),
    )  # fmt: skip


# -- NLLLoss and CrossEntropyLoss -----------------------------------------------------------


def nll_loss_ops(samples: int, *, weight: bool, reduction: str) -> int:
    """Exact operations of ``nll_loss`` over ``samples`` class indices (an upper bound when
    some equal ``ignore_index``: torch skips those)::

        loss_i = -w[t_i] * x[i, t_i]        1 multiplication with a weight (the pick and
                                            the sign flip are free)
        'sum':  + (samples - 1) additions
        'mean': + (samples - 1) additions, 1 division by the total weight, whose sum is
                  (samples - 1) more additions with a weight (without, it is a count of
                  samples, not arithmetic on the data)

    >>> [nll_loss_ops(4, weight=w, reduction="mean") for w in (False, True)]
    [4, 11]
    """
    if not samples:
        return 0
    ops = samples * int(weight)
    if reduction == "none":
        return ops
    ops += _total(samples)
    if reduction == "mean":
        ops += 1 + (_total(samples) if weight else 0)
    return ops


def _classes(input_shape: Shape) -> tuple[int, int]:
    """``(class axis, number of samples)`` of a loss over classes: the classes are axis 1 of
    ``(N, C, *)``, or axis 0 of an unbatched ``(C,)``."""
    axis = 0 if len(input_shape) == 1 else 1
    classes = input_shape[axis]
    return axis, math.prod(input_shape) // classes if classes else 0


def label_smoothing_ops(samples: int, classes: int, *, weight: bool, reduction: str) -> int:
    """The operators ``CrossEntropyLoss`` with class indices and ``label_smoothing > 0`` runs
    beside its ``nll_loss`` (``cross_entropy_loss_label_smoothing``)::

        smooth_i = -sum_c (w_c *) logp[i, c]     samples * C (with a weight) + samples * (C - 1)
        ignore mask: target == ignore_index      samples comparisons
        'sum':  + (samples - 1)
        'mean': + (samples - 1) for the smooth losses and (samples - 1) for the weights
                  of the targets (with a weight) or the count of the kept samples (without:
                  the mask inverted first, ``~mask``, samples more), + 1 division
        (1 - ls) * nll + smooth * (ls / C)       3 per output value

    >>> label_smoothing_ops(4, 5, weight=False, reduction="mean")
    34
    """
    elements = samples * classes
    ops = (elements if weight else 0) + reduction_ops(elements, samples, OPS_PER_GROUP["sum"])
    ops += samples
    if reduction == "sum":
        ops += _total(samples)
    elif reduction == "mean":
        ops += 2 * _total(samples) + 1 + (0 if weight else samples)
    outputs = samples if reduction == "none" else 1
    return ops + 3 * outputs


def cross_entropy_ops(
    input_shape: Shape,
    target_shape: Shape,
    *,
    weight: bool,
    reduction: str,
    label_smoothing: float,
) -> int:
    """Exact operations of ``cross_entropy`` on ``(N, C, *)`` (or ``(C,)``) logits, as torch
    computes it: a log-softmax over the classes (``3`` per element,
    :func:`~opscope.formulas.activation.log_softmax_ops`), then

    * class indices (the target has no class axis): :func:`nll_loss_ops` over the
      ``samples = numel / C`` targets, and with ``label_smoothing > 0``
      :func:`label_smoothing_ops`;
    * class probabilities (the target has the input's shape)::

          with label_smoothing: y * (1 - ls) + ls / C    2 per element
          logp * y (* w)                                 1 per element (+1 with a weight)
          'none': the sum over the classes, samples * (C - 1); 'sum': numel - 1;
          'mean': numel - 1 additions and 1 division by the samples (the sign flip free)

    0 for an empty input.

    Example (CrossEntropyLoss() on (4, 5) logits and 4 class indices: 60 + 4):
        >>> cross_entropy_ops((4, 5), (4,), weight=False, reduction="mean", label_smoothing=0.0)
        64
    """
    elements = math.prod(input_shape)
    if not elements:
        return 0
    axis, samples = _classes(input_shape)
    ops = log_softmax_ops(input_shape, axis)
    if tuple(target_shape) != tuple(input_shape):
        ops += nll_loss_ops(samples, weight=weight, reduction=reduction)
        if label_smoothing > 0:
            classes = input_shape[axis]
            ops += label_smoothing_ops(samples, classes, weight=weight, reduction=reduction)
        return ops
    ops += elements * (1 + int(weight) + 2 * int(label_smoothing > 0))
    if reduction == "none":
        return ops + reduction_ops(elements, samples, OPS_PER_GROUP["sum"])
    return ops + _total(elements) + int(reduction == "mean")


@dataclass(frozen=True)
class WeightedLossConfig(LossConfig):
    """The reduction of a loss with an optional per-class ``weight``, and whether it has one
    (``NLLLoss``; ``ignore_index`` changes no count: see the module docstring)."""

    weight: bool


@dataclass(frozen=True)
class CrossEntropyConfig(WeightedLossConfig):
    """The settings of a ``CrossEntropyLoss``: its reduction, weight and label smoothing."""

    label_smoothing: float


@register(nn.NLLLoss, describe=WeightedLossConfig.from_module)
def count_nll_loss(config: WeightedLossConfig, call: Call) -> int:
    """Operations of one ``NLLLoss(input, target)`` (also the deprecated ``NLLLoss2d``):
    :func:`nll_loss_ops` over the target's class indices."""
    return nll_loss_ops(math.prod(call.inputs[1]), **config.settings())


@register(nn.CrossEntropyLoss, describe=CrossEntropyConfig.from_module)
def count_cross_entropy(config: CrossEntropyConfig, call: Call) -> int:
    """Operations of one ``CrossEntropyLoss(input, target)``: :func:`cross_entropy_ops`."""
    return cross_entropy_ops(*call.inputs[:2], **config.settings())


@register_op(
    *aten_ops("nll_loss", "nll_loss_nd", "nll_loss2d", "nll_loss_forward", "nll_loss2d_forward"),
    family="loss",
)  # fmt: skip
def count_nll_loss_op(call: OpCall) -> int:
    """``nll_loss_forward(self, target, weight, reduction, ignore_index)`` (``nll_loss2d_forward``,
    and the composites ``nll_loss``, ``nll_loss_nd``, ``nll_loss2d`` that run them):
    :func:`nll_loss_ops` over the target's class indices."""
    samples = math.prod(call.args[1].shape)
    weight = call.tensor(2, "weight") is not None
    return nll_loss_ops(samples, weight=weight, reduction=_reduction(call, 3))


@register_op(*aten_ops("cross_entropy_loss"), family="loss")
def count_cross_entropy_op(call: OpCall) -> int:
    """``cross_entropy_loss(self, target, weight=None, reduction=1, ignore_index=-100,
    label_smoothing=0.0)``: :func:`cross_entropy_ops`."""
    return cross_entropy_ops(
        call.input, call.args[1].shape, weight=call.tensor(2, "weight") is not None,
        reduction=_reduction(call, 3), label_smoothing=float(call.arg(5, "label_smoothing", 0.0)),
    )  # fmt: skip


# -- KLDivLoss and the likelihood losses ----------------------------------------------------


def kl_div_ops(input_shape: Shape, target_shape: Shape, *, reduction: str, log_target: bool) -> int:
    """Exact operations of ``kl_div(input, target)`` (``input`` log-probabilities), as torch
    computes it, with ``n`` the broadcast elements and ``t`` the target's::

        log_target=False: xlogy(y, y) - y * x    2t (x log y: a multiplication and a log) + 2n
        log_target=True:  exp(y) * (y - x)       t + 2n
        + reduce_ops(n)  ('batchmean': the sum, then one division by the batch size)

    >>> kl_div_ops((4, 5), (4, 5), reduction="batchmean", log_target=False)
    100
    """
    elements, target = _numel(input_shape, target_shape), math.prod(target_shape)
    per_target = 1 if log_target else OPS_PER_OUTPUT_ELEMENT["xlogy"]
    return per_target * target + 2 * elements + reduce_ops(elements, reduction)


@dataclass(frozen=True)
class KLDivConfig(LossConfig):
    """The settings of a ``KLDivLoss``: its reduction and whether the target is a log."""

    log_target: bool


@register(nn.KLDivLoss, describe=KLDivConfig.from_module)
def count_kl_div(config: KLDivConfig, call: Call) -> int:
    """Operations of one ``KLDivLoss(input, target)``: :func:`kl_div_ops`."""
    return kl_div_ops(*call.inputs[:2], **config.settings())


@register_op(*aten_ops("kl_div"), family="loss")
def count_kl_div_op(call: OpCall) -> int:
    """``kl_div(self, target, reduction=1, *, log_target=False)``: :func:`kl_div_ops`."""
    return kl_div_ops(
        call.input, call.args[1].shape, reduction=_reduction(call, 2),
        log_target=bool(call.arg(99, "log_target", False)),
    )  # fmt: skip


STIRLING_OPS_PER_TARGET = 8
"""``PoissonNLLLoss(full=True)``'s Stirling term per target element,
``y * log(y) - y + 0.5 * log(2 * pi * y)`` masked where ``y <= 1``: 2 multiplications and a
log for ``0.5 * log(2 pi y)``, a log and a multiplication for ``y log y``, a subtraction, an
addition, the comparison ``y <= 1``."""


def poisson_nll_ops(
    input_shape: Shape, target_shape: Shape, *, log_input: bool, full: bool, reduction: str
) -> int:
    """Exact operations of ``poisson_nll_loss``, as torch composes it (``i``, ``t`` the
    input's and target's elements, ``n`` their broadcast)::

        log_input=True:  exp(x) - y * x              i + 2n
        log_input=False: x - y * log(x + eps)        2i + 2n
        full: + the Stirling term                    8t, then added to the loss: n
        + reduce_ops(n)

    >>> poisson_nll_ops((4, 5), (4, 5), log_input=True, full=False, reduction="mean")
    80
    """
    elements, inputs = _numel(input_shape, target_shape), math.prod(input_shape)
    ops = inputs * (1 if log_input else 2) + 2 * elements
    if full:
        ops += STIRLING_OPS_PER_TARGET * math.prod(target_shape) + elements
    return ops + reduce_ops(elements, reduction)


@dataclass(frozen=True)
class PoissonNLLConfig(LossConfig):
    """The settings of a ``PoissonNLLLoss`` (``eps`` changes no count)."""

    log_input: bool
    full: bool


@register(nn.PoissonNLLLoss, describe=PoissonNLLConfig.from_module)
def count_poisson_nll(config: PoissonNLLConfig, call: Call) -> int:
    """Operations of one ``PoissonNLLLoss(log_input, target)``: :func:`poisson_nll_ops`."""
    return poisson_nll_ops(*call.inputs[:2], **config.settings())


@register_op(*aten_ops("poisson_nll_loss"), family="loss")
def count_poisson_nll_op(call: OpCall) -> int:
    """``poisson_nll_loss(input, target, log_input, full, eps, reduction)``:
    :func:`poisson_nll_ops`."""
    return poisson_nll_ops(
        call.input, call.args[1].shape, log_input=bool(call.arg(2, "log_input")),
        full=bool(call.arg(3, "full")), reduction=_reduction(call, 5),
    )  # fmt: skip


def gaussian_nll_ops(
    input_shape: Shape, target_shape: Shape, var_shape: Shape | None, *, full: bool, reduction: str
) -> int:
    """Exact operations of ``F.gaussian_nll_loss`` (a Python composition), with ``v`` the
    variance's elements and ``n`` the broadcast elements::

        a tensor variance: var < 0 and any() (torch's check)  v + (v - 1)
        a float variance: var * ones_like(input)              n (then v = n)
        clamp(var, min=eps), log(var)                         2v
        (x - y) ** 2                                          2 * numel(x, y broadcast)
        / var, + log(var), * 0.5                              3n
        full: + 0.5 * log(2 pi)                               n
        + reduce_ops(n)

    ``var_shape`` is None for a float variance.

    >>> gaussian_nll_ops((4, 5), (4, 5), (4, 1), full=False, reduction="mean")
    135
    """
    difference = _numel(input_shape, target_shape)
    if var_shape is None:  # var * ones_like(input), then clamped and logged
        elements = difference
        ops = 3 * elements
    else:
        if tuple(var_shape) == tuple(input_shape[:-1]):  # one variance per row: unsqueezed
            var_shape = (*var_shape, 1)
        elements, variances = _numel(input_shape, target_shape, var_shape), math.prod(var_shape)
        check = variances + reduction_ops(variances, 1, OPS_PER_GROUP["any"])
        ops = check + 2 * variances
    ops += 2 * difference + 3 * elements + (elements if full else 0)
    return ops + reduce_ops(elements, reduction)


@dataclass(frozen=True)
class GaussianNLLConfig(LossConfig):
    """The settings of a ``GaussianNLLLoss`` (``eps`` changes no count)."""

    full: bool


@register(nn.GaussianNLLLoss, describe=GaussianNLLConfig.from_module)
def count_gaussian_nll(config: GaussianNLLConfig, call: Call) -> int:
    """Operations of one ``GaussianNLLLoss(input, target, var)``: :func:`gaussian_nll_ops`
    (a float ``var`` is no tensor: the call has two input shapes)."""
    input_shape, target_shape, *var = call.inputs[:3]
    return gaussian_nll_ops(input_shape, target_shape, var[0] if var else None, **config.settings())


# -- margin losses --------------------------------------------------------------------------


def hinge_embedding_ops(input_shape: Shape, target_shape: Shape, reduction: str) -> int:
    """Exact operations of ``hinge_embedding_loss``, as torch composes it (``i``, ``t`` the
    input's and target's elements, ``n`` their broadcast)::

        max(margin - x, 0)                        2i
        where(y != 1, ...) + where(y != -1, ...)  2t comparisons, n additions
        + reduce_ops(n)

    >>> hinge_embedding_ops((4, 5), (4, 5), "mean")
    120
    """
    elements = _numel(input_shape, target_shape)
    inputs, targets = math.prod(input_shape), math.prod(target_shape)
    return 2 * inputs + 2 * targets + elements + reduce_ops(elements, reduction)


def margin_ranking_ops(
    input1_shape: Shape, input2_shape: Shape, target_shape: Shape, reduction: str
) -> int:
    """Exact operations of ``margin_ranking_loss``, ``max(-y * (x1 - x2) + margin, 0)``::

        x1 - x2                        numel(x1, x2 broadcast)
        * -y, + margin, max(..., 0)    3n (n: all three broadcast; the sign flip is free)
        + reduce_ops(n)

    >>> margin_ranking_ops((4,), (4,), (4,), "mean")
    20
    """
    elements = _numel(input1_shape, input2_shape, target_shape)
    return _numel(input1_shape, input2_shape) + 3 * elements + reduce_ops(elements, reduction)


COSINE_EMBEDDING_OPS_PER_PAIR = 11
"""``cosine_embedding_loss`` per pair of vectors, beside its three sums of products: 2
additions of ``EPSILON`` to the squared norms, their product, its square root, the division,
``1 - cos``, ``cos - margin``, the clamp at 0, 2 comparisons of the target (with 1 and -1)
and the addition of the two ``where``'s."""


def cosine_embedding_ops(input_shape: Shape, reduction: str) -> int:
    """Exact operations of ``cosine_embedding_loss`` on ``(N, D)`` (or ``(D,)``) pairs, as
    torch composes it: ``x1 . x2``, ``|x1|^2`` and ``|x2|^2`` (3 products and 3 sums of ``D``
    per pair), then :data:`COSINE_EMBEDDING_OPS_PER_PAIR`::

        ops = 3ND + 3N(D - 1) + 11N + reduce_ops(N)

    >>> cosine_embedding_ops((4, 5), "mean")  # 60 + 3 * 16 + 44 + 4
    156
    """
    elements = math.prod(input_shape)
    pairs = elements // input_shape[-1] if input_shape[-1] else 0
    sums = reduction_ops(elements, pairs, OPS_PER_GROUP["sum"])
    return (
        3 * elements
        + 3 * sums
        + COSINE_EMBEDDING_OPS_PER_PAIR * pairs
        + reduce_ops(pairs, reduction)
    )


def triplet_margin_ops(
    anchor: Shape, positive: Shape, negative: Shape, *, p: float, swap: bool, reduction: str
) -> int:
    """Exact operations of ``triplet_margin_loss``, ``max(d(a, p) - d(a, n) + margin, 0)``
    with ``d`` the ``pairwise_distance`` of order ``p``
    (:func:`~opscope.formulas.distance.pairwise_distance_ops`)::

        d(a, p), d(a, n)                 two pairwise distances
        swap: d(p, n), min(d(a, n), .)   one more, and N comparisons
        + margin, - d(a, n), max(., 0)   3N
        + reduce_ops(N)

    >>> triplet_margin_ops((4, 5), (4, 5), (4, 5), p=2.0, swap=False, reduction="mean")
    176
    """
    pairs = [(anchor, positive), (anchor, negative)] + ([(positive, negative)] if swap else [])
    distances = sum(pairwise_distance_ops(x1, x2, p) for x1, x2 in pairs)
    shape = torch.broadcast_shapes(tuple(anchor), tuple(positive), tuple(negative))
    triplets = math.prod(shape[:-1])
    return distances + (3 + int(swap)) * triplets + reduce_ops(triplets, reduction)


@dataclass(frozen=True)
class TripletMarginConfig(LossConfig):
    """The settings of a ``TripletMarginLoss`` that change its count: the norm order ``p``
    and ``swap`` (``margin`` and ``eps`` are added whatever their values)."""

    p: float
    swap: bool


@register(nn.HingeEmbeddingLoss, describe=LossConfig.from_module)
def count_hinge_embedding(config: LossConfig, call: Call) -> int:
    """Operations of one ``HingeEmbeddingLoss(input, target)``: :func:`hinge_embedding_ops`."""
    return hinge_embedding_ops(*call.inputs[:2], config.reduction)


@register(nn.MarginRankingLoss, describe=LossConfig.from_module)
def count_margin_ranking(config: LossConfig, call: Call) -> int:
    """Operations of one ``MarginRankingLoss(x1, x2, y)``: :func:`margin_ranking_ops`."""
    return margin_ranking_ops(*call.inputs[:3], config.reduction)


@register(nn.CosineEmbeddingLoss, describe=LossConfig.from_module)
def count_cosine_embedding(config: LossConfig, call: Call) -> int:
    """Operations of one ``CosineEmbeddingLoss(x1, x2, y)``: :func:`cosine_embedding_ops`."""
    return cosine_embedding_ops(call.input, config.reduction)


@register(nn.TripletMarginLoss, describe=TripletMarginConfig.from_module)
def count_triplet_margin(config: TripletMarginConfig, call: Call) -> int:
    """Operations of one ``TripletMarginLoss(anchor, positive, negative)``:
    :func:`triplet_margin_ops`."""
    return triplet_margin_ops(*call.inputs[:3], **config.settings())


@register_op(*aten_ops("hinge_embedding_loss"), family="loss")
def count_hinge_embedding_op(call: OpCall) -> int:
    """``hinge_embedding_loss(self, target, margin=1.0, reduction=1)``."""
    return hinge_embedding_ops(call.input, call.args[1].shape, _reduction(call, 3))


@register_op(*aten_ops("margin_ranking_loss"), family="loss")
def count_margin_ranking_op(call: OpCall) -> int:
    """``margin_ranking_loss(input1, input2, target, margin=0.0, reduction=1)``."""
    shapes = (meta.shape for meta in call.args[:3])
    return margin_ranking_ops(*shapes, _reduction(call, 4))


@register_op(*aten_ops("cosine_embedding_loss"), family="loss")
def count_cosine_embedding_op(call: OpCall) -> int:
    """``cosine_embedding_loss(input1, input2, target, margin=0.0, reduction=1)``."""
    return cosine_embedding_ops(call.input, _reduction(call, 4))


@register_op(*aten_ops("triplet_margin_loss"), family="loss")
def count_triplet_margin_op(call: OpCall) -> int:
    """``triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6,
    swap=False, reduction=1)``."""
    anchor, positive, negative = (meta.shape for meta in call.args[:3])
    return triplet_margin_ops(
        anchor, positive, negative, p=float(call.arg(4, "p", 2.0)),
        swap=bool(call.arg(6, "swap", False)), reduction=_reduction(call, 7),
    )  # fmt: skip


# -- losses over classes --------------------------------------------------------------------


def multi_margin_ops(input_shape: Shape, *, p: int, weight: bool, reduction: str) -> int:
    """Exact operations of ``multi_margin_loss`` on ``(N, C)`` (or ``(C,)``) scores, per
    sample ``sum_{j != y} max(0, margin - x_y + x_j)^p (* w_y) / C``::

        per other class: margin - x_y + x_j, the comparison with 0, the square (p = 2),
                         the weight: 3 (+1, +1), the costlier piece whatever the values
        their sum, C - 2 additions, and 1 division by C
        + reduce_ops(N)

    >>> multi_margin_ops((4, 5), p=1, weight=False, reduction="mean")
    68
    """
    classes = input_shape[-1]
    samples = math.prod(input_shape) // classes if classes else 0
    terms = max(classes - 1, 0)
    per_sample = terms * (3 + int(p == 2) + int(weight)) + _total(terms) + 1
    return samples * per_sample + reduce_ops(samples, reduction)


@dataclass(frozen=True)
class MultiMarginConfig(WeightedLossConfig):
    """The settings of a ``MultiMarginLoss`` that change its count: ``p`` (1 or 2) and the
    weight (``margin`` is added whatever its value)."""

    p: int


@register(nn.MultiMarginLoss, describe=MultiMarginConfig.from_module)
def count_multi_margin(config: MultiMarginConfig, call: Call) -> int:
    """Operations of one ``MultiMarginLoss(input, target)``: :func:`multi_margin_ops`."""
    return multi_margin_ops(call.input, **config.settings())


@register_op(*aten_ops("multi_margin_loss"), family="loss")
def count_multi_margin_op(call: OpCall) -> int:
    """``multi_margin_loss(self, target, p=1, margin=1, weight=None, reduction=1)``."""
    return multi_margin_ops(
        call.input, p=int(call.arg(2, "p", 1)), weight=call.tensor(4, "weight") is not None,
        reduction=_reduction(call, 5),
    )  # fmt: skip


MULTILABEL_SOFT_MARGIN_OPS_PER_ELEMENT = 2 * LOG_SIGMOID + 4
"""``-(y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x))`` per element: two log-sigmoids, two
multiplications, ``1 - y`` and the addition (the sign flips are free)."""


def multilabel_soft_margin_ops(input_shape: Shape, *, weight: bool, reduction: str) -> int:
    """Exact operations of ``F.multilabel_soft_margin_loss`` on ``(N, C)`` (or ``(C,)``)
    scores (a Python composition)::

        per element: MULTILABEL_SOFT_MARGIN_OPS_PER_ELEMENT (10), + 1 with a weight
        per sample: the sum over the classes, C - 1, and 1 division by C
        + reduce_ops(N)

    >>> multilabel_soft_margin_ops((4, 5), weight=False, reduction="mean")
    224
    """
    elements = math.prod(input_shape)
    samples = elements // input_shape[-1] if input_shape[-1] else 0
    per_element = MULTILABEL_SOFT_MARGIN_OPS_PER_ELEMENT + int(weight)
    sums = reduction_ops(elements, samples, OPS_PER_GROUP["sum"])
    return elements * per_element + sums + samples + reduce_ops(samples, reduction)


@register(nn.MultiLabelSoftMarginLoss, describe=WeightedLossConfig.from_module)
def count_multilabel_soft_margin(config: WeightedLossConfig, call: Call) -> int:
    """Operations of one ``MultiLabelSoftMarginLoss(input, target)``:
    :func:`multilabel_soft_margin_ops`."""
    return multilabel_soft_margin_ops(call.input, **config.settings())


# -- Backward pass (ATen ops) ----------------------------------------------------------------

BACKWARD_OPS_PER_ELEMENT: Mapping[str, int] = MappingProxyType(
    {
        # g the incoming gradient (broadcast), x the input, y the target, norm = 1 / n for
        # 'mean' (2 / n for mse), else 1 (2): a per-call constant, worked out once.
        "mse_loss_backward": 3,  # norm * (x - y) * g: 1 sub, 2 mul
        # z = x - y; z <= -beta ? -norm * g : z >= beta ? norm * g : norm * z * g / beta:
        # 1 sub, 2 cmp, the costlier piece's 2 mul and 1 div (beta = 0 runs the same kernel)
        "smooth_l1_loss_backward": 6,
        # z = x - y; z <= -delta ? -norm * g * delta : z >= delta ? norm * g * delta
        # : norm * z * g: 1 sub, 2 cmp, 2 mul
        "huber_loss_backward": 5,
        # z = exp(-y * x); (y * z) * -norm / (1 + z) * g, one operator each: mul, exp, mul,
        # mul, add, div, mul (the sign flip of y is free)
        "soft_margin_loss_backward": 7,
        # g * (x - y) / max((1 - x) * x, EPSILON): sub, mul, cmp, sub, mul, div
        "binary_cross_entropy_backward": 6,
    }
)
"""Operations per element of the gradient of each element-wise loss's backward operator, by
ATen name, as its CPU kernel evaluates it (``docs/formulas/loss.md``, "Backward pass");
``binary_cross_entropy_backward`` adds one per element for a weight and one for ``'mean'``."""


def _count_backward_per_element(ops_per_element: int, call: OpCall) -> int:
    """``ops_per_element`` per element of the gradient (the input's shape)."""
    return ops_per_element * math.prod(call.output)


for _name in (
    "mse_loss_backward",
    "smooth_l1_loss_backward",
    "huber_loss_backward",
    "soft_margin_loss_backward",
):
    register_op(*aten_ops(_name), family="loss")(
        partial(_count_backward_per_element, BACKWARD_OPS_PER_ELEMENT[_name])
    )


def binary_cross_entropy_backward_ops(elements: int, *, weight: bool, reduction: str) -> int:
    """Exact operations of ``binary_cross_entropy_backward`` over ``n = elements``, as the CPU
    kernel runs it: ``g * (x - y) / max((1 - x) * x, EPSILON)`` (6 per element), then
    ``grad.mul_(weight)`` (n with a weight) and ``grad.div_(n)`` for ``'mean'`` (n)::

        ops = (6 + [weight] + [mean]) * n

    >>> binary_cross_entropy_backward_ops(20, weight=True, reduction="mean")
    160
    """
    per_element = BACKWARD_OPS_PER_ELEMENT["binary_cross_entropy_backward"]
    return elements * (per_element + int(weight) + int(reduction == "mean"))


@register_op(*aten_ops("binary_cross_entropy_backward"), family="loss")
def count_binary_cross_entropy_backward(call: OpCall) -> int:
    """``binary_cross_entropy_backward(grad_output, self, target, weight=None, reduction=1)``:
    :func:`binary_cross_entropy_backward_ops`."""
    return binary_cross_entropy_backward_ops(
        math.prod(call.output), weight=call.tensor(3, "weight") is not None,
        reduction=_reduction(call, 4),
    )  # fmt: skip


def nll_loss_backward_ops(samples: int, *, weight: bool, reduction: str) -> int:
    """Exact operations of ``nll_loss_backward`` (and ``nll_loss2d_backward``) over
    ``samples`` class indices, as the CPU kernels run it: the gradient is zero but at each
    sample's target class, written there (the zeros and the scatter are data movement)::

        'none': -w[t_i] * g_i                  samples multiplications with a weight (without
                                               one, -g_i: a sign flip, free)
        'sum', 'mean': grad = -(g / total_weight) for 'mean' (1 division), -g for 'sum'
                       (free), once; then w[t_i] * grad per sample, with a weight

    Samples whose target is ``ignore_index`` are skipped by the kernel: counted as any
    other, an upper bound, exact when none is (as :func:`nll_loss_ops` counts the forward).

    >>> [nll_loss_backward_ops(4, weight=w, reduction="mean") for w in (False, True)]
    [1, 5]
    """
    return samples * int(weight) + int(reduction == "mean")


@register_op(*aten_ops("nll_loss_backward", "nll_loss2d_backward"), family="loss")
def count_nll_loss_backward(call: OpCall) -> int:
    """``nll_loss_backward(grad_output, self, target, weight, reduction, ignore_index,
    total_weight)`` (and ``nll_loss2d_backward``, the same arguments):
    :func:`nll_loss_backward_ops` over the target's class indices."""
    return nll_loss_backward_ops(
        math.prod(call.args[2].shape), weight=call.tensor(3, "weight") is not None,
        reduction=_reduction(call, 4),
    )  # fmt: skip


def multi_margin_backward_ops(input_shape: Shape, *, p: int, weight: bool) -> int:
    """Exact operations of ``multi_margin_loss_backward`` on ``(N, C)`` (or ``(C,)``) scores,
    as the CPU kernel runs it, per sample with target class ``y`` and ``c = 1 / C`` (or
    ``1 / (N C)`` for ``'mean'``, a per-call constant)::

        per other class j: z = margin - x_y + x_j, z > 0 ? h = c (p = 1) or (2 c) * z (p = 2),
                           (* w_y): 3 (+1 for p = 2, +1 with a weight), the costlier piece
                           whatever the values; d x_j = h
        d x_y = -sum_j h: C - 2 additions (the sign flip free)
        then every element times the incoming gradient: C multiplications

        ops = N * ((C - 1) * (3 + [p = 2] + [weight]) + (C - 2) + C)

    The reduction changes only the constant ``c`` (``2 c`` too is worked out once): the same
    count for all three. (The kernel also computes ``z`` for ``j = y``, a value it never
    uses: not counted.)

    >>> multi_margin_backward_ops((4, 5), p=1, weight=False)  # 4 * (12 + 3 + 5)
    80
    """
    classes = input_shape[-1] if input_shape else 1
    samples = math.prod(input_shape) // classes if classes else 0
    terms = max(classes - 1, 0)
    per_sample = terms * (3 + int(p == 2) + int(weight)) + _total(terms) + classes
    return samples * per_sample


@register_op(*aten_ops("multi_margin_loss_backward"), family="loss")
def count_multi_margin_backward(call: OpCall) -> int:
    """``multi_margin_loss_backward(grad_output, self, target, p, margin, weight=None,
    reduction=1)``: :func:`multi_margin_backward_ops`."""
    return multi_margin_backward_ops(
        call.args[1].shape, p=int(call.arg(3, "p", 1)),
        weight=call.tensor(5, "weight") is not None,
    )  # fmt: skip
