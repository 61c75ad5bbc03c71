"""Pass-through modules: no arithmetic, zero operations.

``Identity``, ``Flatten`` and ``Unflatten`` only hand over, or re-view, their input. The
dropout family is the identity in eval mode; in training mode it also draws a random mask and
rescales the kept elements (``Dropout`` multiplies by ``1 / (1 - p)``, ``AlphaDropout`` applies
an affine map), but that is a regulariser of training, not part of the model's inference
arithmetic, so it is deliberately not counted: a model's count is the same in both modes and
what it describes is the function the trained network computes.

Registering these types, rather than leaving them without a formula, records their calls with
0 ops and keeps them off the report's list of uncounted modules.
"""

from __future__ import annotations

from torch import nn

from opscope.formulas.registry import (
    Call,
    aten_ops,
    register,
    register_by_name,
    register_zero_ops,
)

PASSTHROUGH_TYPES: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
"""Module types that count zero operations, in eval and in training mode alike."""

TORCHVISION_PASSTHROUGH_TYPES: tuple[str, ...] = (
    "torchvision.ops.misc.Permute",
    "torchvision.ops.stochastic_depth.StochasticDepth",
    "torchvision.models.maxvit.WindowPartition",
    "torchvision.models.maxvit.WindowDepartition",
    "torchvision.models.maxvit.SwapAxes",
)
"""torchvision's layers that only permute, reshape or (in training) drop paths, by name so
that counting does not import torchvision."""


@register_by_name(*TORCHVISION_PASSTHROUGH_TYPES)
@register(*PASSTHROUGH_TYPES)
def count_passthrough(config: None, call: Call) -> int:
    """Operations of one pass-through call: always ``0``, whatever the shapes and mode.

    >>> count_passthrough(None, Call(inputs=((8, 3, 4, 4),), outputs=((8, 48),), training=True))
    0
    """
    return 0


# -- ATen operators -----------------------------------------------------------------------

DROPOUT_OPS: tuple[str, ...] = (
    "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout",
    "alpha_dropout_", "feature_alpha_dropout", "feature_alpha_dropout_", "native_dropout",
)  # fmt: skip
"""The dropout operators, counted 0 in training and eval as the dropout modules are. (Under
``torch.no_grad`` a training-mode CPU dropout reaches a dispatch mode already decomposed,
as the mask draw, a multiplication and a division, which are counted.)"""

register_zero_ops(*aten_ops(*DROPOUT_OPS), family="passthrough")
