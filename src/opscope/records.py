"""The record of one counted module call: what ran, on which shapes, and its exact operations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from opscope.formulas.registry import Shape


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """One call of one counted module.

    Attributes:
        name: qualified name of the module in the profiled model (``"layer1.0.conv1"``);
            ``""`` when the profiled model is itself the counted module.
        module_type: class name of the module (a subclass shows its own name).
        call_index: 1 for the module's first call inside the block, 2 for its second, ...
        input_shape: shape of the call's input tensor.
        output_shape: shape of the call's output tensor.
        config: the module family's static settings (for convolutions a
            :class:`~opscope.formulas.ConvConfig`); its fields read as record attributes too,
            so ``record.kernel_size`` is ``record.config.kernel_size``.
        params: number of parameters of the module.
        ops: exact multiplications plus additions of this call.
    """

    name: str
    module_type: str
    call_index: int
    input_shape: Shape
    output_shape: Shape
    config: Any
    params: int
    ops: int

    def __getattr__(self, attribute: str) -> Any:
        # Only reached when normal lookup fails: expose the family's settings
        # (kernel_size, stride, ...) as attributes of the record itself.
        if attribute == "config":  # not yet set (copy/pickle): avoid recursion
            raise AttributeError(attribute)
        try:
            return getattr(self.config, attribute)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {attribute!r}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping: shapes and tuples as lists, the config's fields inlined."""
        settings = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else {}
        row: dict[str, Any] = {
            "name": self.name,
            "type": self.module_type,
            "call_index": self.call_index,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
        }
        row.update({key: _jsonable(value) for key, value in settings.items()})
        row.update(params=self.params, ops=self.ops)
        return row


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
