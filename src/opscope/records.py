"""The record of one counted module call: what ran, on which shapes, and its exact operations."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opscope.formulas.registry import Shape, config_type_named

FUNCTIONAL = "functional"
"""The family of the work a module did outside counted modules (ATen operators)."""
OUTSIDE_NAME = "(outside the model)"
"""The name of the work run in the block while no module of the model ran."""
OPTIMIZER_NAME = "(optimizer step)"
"""The name of the work an optimizer's ``step()`` ran in the block."""
PHASES = ("forward", "backward", "recompute", "step")
"""A record's phase, in the order a training step runs them: the forward pass; the backward
pass (gradients); a forward recomputed in the backward pass (activation checkpointing); an
optimizer step."""


@dataclass(frozen=True)
class FunctionalOps:
    """The settings of a functional record: the ATen operators it stands for.

    Attributes:
        ops: ``(name, calls)`` of each operator (``(("bmm", 2), ("softmax", 1))``), most
            frequent first.
        families: ``(family, calls, ops)`` of each formula family among them
            (``("matmul", 2, 4096)``), heaviest first.
    """

    ops: tuple[tuple[str, int], ...]
    families: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """One call of one counted module, or the functional work of one call of a module.

    A module that has a formula is counted by it, one record per call. The ATen operators
    run outside every counted module (``x + y``, ``q @ k.transpose(-2, -1)``, ``F.linear`` on
    a child's weight) are counted by their own formulas and attributed to the innermost module
    that ran them: one record of family ``"functional"`` per call of that module.

    Attributes:
        name: qualified name of the module in the profiled model (``"layer1.0.conv1"``);
            ``""`` when the profiled model is itself the counted module.
        module_type: class name of the module (a subclass shows its own name).
        family: name of the registered type whose formula counted it (``"Conv2d"`` for a
            Conv2d subclass too).
        call_index: 1 for the module's first call inside the block, 2 for its second, ...
        input_shapes: shapes of the call's tensor arguments, in order.
        output_shapes: shapes of the tensors in the call's output, in order.
        training: whether the module was in training mode during the call.
        config: the family's static settings (for convolutions a
            :class:`~opscope.formulas.ConvConfig`; None for families without settings); its
            fields read as record attributes too, so ``record.kernel_size`` is
            ``record.config.kernel_size``.
        params: number of parameters of the module (its submodules' included); 0 for the
            functional work of a module (family ``"functional"``).
        ops: exact operations of this call (in summary mode, of its ``calls`` calls).
        calls: 1; in summary mode, how many calls with these shapes the record stands for
            (``call_index`` then numbers the module's distinct shapes).
        macs: multiply-accumulates of the call's convolution, matrix and attention products,
            bias excluded (what torchvision publishes as "GFLOPS", in billions); like
            ``ops``, a total over ``calls``.
        input_bytes, output_bytes, param_bytes: bytes read and written, from metadata only
            (numel times the dtype's element size) of the call's input and output tensors and
            of the module's parameters; like ``ops``, totals over ``calls``.
        time_ns: with ``timing=True``, the call's duration in nanoseconds (over repeated runs,
            the median), else None.
        time_spread_ns: over repeated runs, the spread (max - min) of the call's duration.
        uncounted: why the call could not be counted (its formula failed on it: a nested
            tensor has no single shape), its ``ops`` then 0; None for a counted call.
        phase: ``"forward"``; ``"backward"`` for the gradients a module's autograd nodes
            computed (counted by operators, one record per module and block);
            ``"recompute"`` for a forward recomputed in the backward pass (activation
            checkpointing); ``"step"`` for an optimizer's step.
    """

    name: str
    module_type: str
    family: str
    call_index: int
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    training: bool
    config: Any
    params: int
    ops: int
    calls: int = 1
    macs: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    param_bytes: int = 0
    time_ns: int | None = None
    time_spread_ns: int | None = None
    uncounted: str | None = None
    phase: str = "forward"

    @property
    def throughput(self) -> float | None:
        """Achieved operations per second, when timed."""
        return self.ops / (self.time_ns * 1e-9) if self.time_ns else None

    @property
    def bytes(self) -> int:
        """Bytes moved: inputs and parameters read, outputs written."""
        return self.input_bytes + self.output_bytes + self.param_bytes

    @property
    def intensity(self) -> float | None:
        """Arithmetic intensity, operations per byte moved (None when nothing moved)."""
        return self.ops / self.bytes if self.bytes else None

    @property
    def input_shape(self) -> Shape:
        """The first input's shape (``()`` if the call had no tensor input)."""
        return self.input_shapes[0] if self.input_shapes else ()

    @property
    def output_shape(self) -> Shape:
        """The first output's shape (``()`` if the call returned no tensor)."""
        return self.output_shapes[0] if self.output_shapes else ()

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
            "family": self.family,
            "call_index": self.call_index,
            "training": self.training,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "input_shapes": [list(shape) for shape in self.input_shapes],
            "output_shapes": [list(shape) for shape in self.output_shapes],
        }
        if settings:
            config_type = type(self.config)
            row["config_type"] = f"{config_type.__module__}.{config_type.__qualname__}"
        # A setting named like one of the record's own keys is written as "config.<name>".
        row.update({_setting_key(key): _jsonable(value) for key, value in settings.items()})
        row.update(
            params=self.params,
            ops=self.ops,
            macs=self.macs,
            calls=self.calls,
            input_bytes=self.input_bytes,
            output_bytes=self.output_bytes,
            param_bytes=self.param_bytes,
            time_ns=self.time_ns,
            time_spread_ns=self.time_spread_ns,
            uncounted=self.uncounted,
            phase=self.phase,
        )
        return row

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> LayerRecord:
        """The record that :meth:`to_dict` wrote (a config of a registered formula's type).

        Raises:
            ValueError: the row names a config type no registered formula uses (nothing is
                imported to find it: import and register the formula's module first).
        """
        config = None
        if "config_type" in row:
            config_type = _OWN_CONFIGS.get(row["config_type"]) or config_type_named(
                row["config_type"]
            )
            if config_type is None:
                raise ValueError(
                    f"unknown config type {row['config_type']!r}: register its formula first"
                )
            config = config_type(
                **{
                    field.name: _tupled(row[_setting_key(field.name)])
                    for field in dataclasses.fields(config_type)
                }
            )
        return cls(
            name=row["name"],
            module_type=row["type"],
            family=row["family"],
            call_index=row["call_index"],
            input_shapes=_tupled(row["input_shapes"]),
            output_shapes=_tupled(row["output_shapes"]),
            training=row["training"],
            config=config,
            params=row["params"],
            ops=row["ops"],
            macs=row.get("macs", 0),
            calls=row["calls"],
            input_bytes=row["input_bytes"],
            output_bytes=row["output_bytes"],
            param_bytes=row["param_bytes"],
            time_ns=row.get("time_ns"),
            time_spread_ns=row.get("time_spread_ns"),
            uncounted=row.get("uncounted"),
            phase=row.get("phase", "forward"),
        )


_RECORD_KEYS = frozenset(
    {
        "name", "type", "family", "call_index", "training", "input_shape", "output_shape",
        "input_shapes", "output_shapes", "config_type", "params", "ops", "macs", "calls", "input_bytes",
        "output_bytes", "param_bytes", "time_ns", "time_spread_ns", "uncounted", "phase",
    }
)  # fmt: skip
"""The keys :meth:`LayerRecord.to_dict` writes besides the config's settings."""


_OWN_CONFIGS: dict[str, type] = {
    f"{FunctionalOps.__module__}.{FunctionalOps.__qualname__}": FunctionalOps
}


def _setting_key(name: str) -> str:
    return f"config.{name}" if name in _RECORD_KEYS else name


def _jsonable(value: Any) -> Any:
    """Tuples, nested ones too, as the lists JSON has."""
    return [_jsonable(item) for item in value] if isinstance(value, tuple) else value


def _tupled(value: Any) -> Any:
    """JSON lists back into the tuples they were (nested for lists of shapes)."""
    return tuple(_tupled(item) for item in value) if isinstance(value, list) else value
