"""Operation formulas, one module per layer family, and the registry that maps types to them.

Importing this package registers every built-in family.
"""

from opscope.formulas import (
    activation,
    attention,
    conv,
    conv_transpose,
    linear,
    norm,
    passthrough,
    pooling,
    recurrent,
    upsample,
)
from opscope.formulas.conv import ConvConfig, conv_ops
from opscope.formulas.registry import (
    Call,
    Formula,
    Shape,
    as_formulas,
    formula_for,
    register,
    registered_types,
)

__all__ = [
    "Call",
    "ConvConfig",
    "Formula",
    "Shape",
    "as_formulas",
    "activation",
    "attention",
    "conv",
    "conv_ops",
    "conv_transpose",
    "formula_for",
    "linear",
    "norm",
    "passthrough",
    "pooling",
    "recurrent",
    "register",
    "registered_types",
    "upsample",
]
