"""Operation formulas, one module per layer family, and the registries that map module types
and ATen operators to them.

Importing this package registers every built-in family.
"""

from opscope.formulas import (
    activation,
    attention,
    conv,
    conv_transpose,
    elementwise,
    embedding,
    linear,
    memory,
    norm,
    passthrough,
    pooling,
    recurrent,
    reduction,
    upsample,
)
from opscope.formulas.conv import ConvConfig, conv_ops
from opscope.formulas.registry import (
    Call,
    Formula,
    OpCall,
    OpFormula,
    Shape,
    TensorMeta,
    as_formulas,
    formula_for,
    formula_macs,
    op_formula_for,
    register,
    register_op,
    register_zero_ops,
    registered_ops,
    registered_types,
)

__all__ = [
    "Call",
    "ConvConfig",
    "Formula",
    "OpCall",
    "OpFormula",
    "Shape",
    "TensorMeta",
    "activation",
    "as_formulas",
    "attention",
    "conv",
    "conv_ops",
    "conv_transpose",
    "elementwise",
    "embedding",
    "formula_for",
    "formula_macs",
    "linear",
    "memory",
    "norm",
    "op_formula_for",
    "passthrough",
    "pooling",
    "recurrent",
    "reduction",
    "register",
    "register_op",
    "register_zero_ops",
    "registered_ops",
    "registered_types",
    "upsample",
]
