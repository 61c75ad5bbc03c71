"""Pass-through modules: no arithmetic, zero operations.

``Identity``, ``Flatten`` and ``Unflatten`` only hand over, or re-view, their input. The
data-movement modules only copy input elements to new places: padding (constant, zero,
reflection, replication, circular: the padded values are copies or a constant), the pixel and
channel shuffles, ``Unfold`` (a gather of sliding blocks, ``im2col``) and ``MaxUnpool`` (a
scatter of the pooled values into zeros). The dropout family is the identity in eval mode; in
training mode it also draws a random mask and rescales the kept elements (``Dropout``
multiplies by ``1 / (1 - p)``, ``AlphaDropout`` applies an affine map), but that is a
regulariser of training, not part of the model's inference arithmetic, so it is deliberately
not counted: a model's count is the same in both modes and what it describes is the function
the trained network computes.

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

SHAPE_TYPES: tuple[type[nn.Module], ...] = (nn.Identity, nn.Flatten, nn.Unflatten)
"""Modules that hand over or re-view their input."""

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)  # fmt: skip
"""The dropout family: the identity in eval mode, not counted in training mode either."""

PADDING_TYPES: tuple[type[nn.Module], ...] = (
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ZeroPad1d, nn.ZeroPad2d,
    nn.ZeroPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.CircularPad1d,
    nn.CircularPad2d, nn.CircularPad3d,
)  # fmt: skip
"""Padding modules: every padded value is a constant or a copy of an input element."""

REARRANGEMENT_TYPES: tuple[type[nn.Module], ...] = (
    nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle, nn.Unfold, nn.MaxUnpool1d,
    nn.MaxUnpool2d, nn.MaxUnpool3d,
)  # fmt: skip
"""Modules that move each input element to one or more new places (gathers and scatters)."""

PASSTHROUGH_TYPES: tuple[type[nn.Module], ...] = (
    SHAPE_TYPES + DROPOUT_TYPES + PADDING_TYPES + REARRANGEMENT_TYPES
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
"""The dropout operators, counted 0 in training and eval as the dropout modules are. (On
the CPU and meta torch decomposes a training-mode dropout before a dispatch mode sees it, into
the mask draw, a division and a multiplication, which are counted; CUDA runs
``native_dropout``.)"""

register_zero_ops(*aten_ops(*DROPOUT_OPS), family="passthrough")

DROPOUT_BACKWARD_OPS: tuple[str, ...] = ("native_dropout_backward",)
"""``native_dropout_backward(grad_output, mask, scale)``, the backward of a training dropout:
``grad_output * mask * scale``, the forward's mask and rescaling applied to the gradient. It is
counted 0 like the forward it differentiates, so that a training step costs the same with and
without dropout, as a forward does."""

register_zero_ops(*aten_ops(*DROPOUT_BACKWARD_OPS), family="passthrough")
