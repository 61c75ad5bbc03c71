"""What a model is called with, as the command line says it: ``[NAME=]SIZES[:DTYPE]``.

``1x3x224x224`` is one float image batch, ``4x64`` a batch of vectors, ``1x128:int64`` token
ids, ``attention_mask=1x128:int64`` a keyword argument. Several inputs are several positional
(or keyword) arguments, in order. Plain data, importable without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from opscope.format import format_shape

DTYPES = {
    "float32": "float32", "float": "float32", "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "float64": "float64", "double": "float64", "int64": "int64",
    "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "int8": "int8",
    "uint8": "uint8", "bool": "bool",
}  # fmt: skip
"""Accepted dtype names, and the ``torch`` dtype each means."""
MAX_NUMEL = 2**63 - 1  # torch sizes are int64: a larger input cannot even be described


@dataclass(frozen=True)
class InputSpec:
    """One argument of the forward pass.

    Attributes:
        shape: its sizes.
        dtype: a ``torch`` dtype name (``"float32"``, ``"int64"``...): floats are random
            normal values on a real device, integers zeros (a valid token id), bools false.
        name: the keyword it is passed as, or None for a positional argument.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    name: str | None = None

    def __str__(self) -> str:
        dtype = "" if self.dtype == "float32" else f":{self.dtype}"
        return f"{self.name + '=' if self.name else ''}{format_shape(self.shape)}{dtype}"


def parse_input(text: str) -> InputSpec:
    """``[NAME=]SIZES[:DTYPE]`` as an :class:`InputSpec`.

    Raises:
        ValueError: a malformed specification; the message shows the syntax.

    Example:
        >>> parse_input("1x3x224x224"), parse_input("ids=1x128:int64")
        (InputSpec(shape=(1, 3, 224, 224), dtype='float32', name=None), InputSpec(shape=(1, 128), dtype='int64', name='ids'))
    """
    name, equals, rest = text.partition("=")
    if not equals:
        name, rest = "", text
    sizes, _, dtype = rest.partition(":")
    parts = sizes.lower().replace("×", "x").split("x")
    valid = all(part.isascii() and part.isdigit() and int(part) > 0 for part in parts)
    if not valid or (equals and not name.isidentifier()) or (dtype and dtype not in DTYPES):
        raise ValueError(
            f"invalid input {text!r}: expected [NAME=]SIZES[:DTYPE], sizes as positive integers "
            "joined by 'x' (1x3x224x224, 4x64, ids=1x128:int64), dtype one of "
            f"{', '.join(sorted(set(DTYPES.values())))}"
        )
    shape = tuple(int(part) for part in parts)
    if math.prod(shape) > MAX_NUMEL:
        raise ValueError(f"input {text!r} is too large: more than 2**63 - 1 elements")
    return InputSpec(shape, DTYPES[dtype or "float32"], name or None)


def describe_inputs(inputs: Sequence[InputSpec]) -> str:
    """The inputs as the command line writes them: ``1×3×224×224``, ``ids=1×128:int64, ...``."""
    return ", ".join(map(str, inputs))
