"""Operation formulas, one module per layer family, and the registry that maps types to them.

Importing this package registers every built-in family.
"""

from opscope.formulas import conv
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
    "conv",
    "conv_ops",
    "formula_for",
    "register",
    "registered_types",
]
