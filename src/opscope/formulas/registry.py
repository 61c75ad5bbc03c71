"""The formula registry: which module types are counted, and how.

A *formula* is two pure pieces, registered together per module family:

* ``describe(module) -> config``: reads the module's static settings (kernel size, groups,
  bias, ...) once, when the profiler hooks the module, into a frozen dataclass;
* ``count(config, input_shape, output_shape) -> int``: the exact number of operations of one
  call, from that config and the shapes that really flowed through the module.

Neither ever sees a tensor, so the profiler can stay ignorant of every formula and the hot
path (the forward hook) only records shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

Shape = tuple[int, ...]
"""A tensor shape as plain integers (``torch.Size`` is a ``tuple[int, ...]`` too)."""

CountFn = Callable[[Any, Shape, Shape], int]
CountFnT = TypeVar("CountFnT", bound=CountFn)


@dataclass(frozen=True)
class Formula:
    """How one module family is counted.

    Attributes:
        module_type: the registered base type; subclasses resolve to it.
        describe: reads a module's static settings into a frozen, hashable config.
        count: exact operations of one call, from the config and the call's shapes.
    """

    module_type: type[nn.Module]
    describe: Callable[[nn.Module], Any]
    count: CountFn


_REGISTRY: dict[type[nn.Module], Formula] = {}


def register(
    module_type: type[nn.Module], *, describe: Callable[[nn.Module], Any]
) -> Callable[[CountFnT], CountFnT]:
    """Register ``count`` as the formula of ``module_type`` (and of its subclasses).

    Example (how :mod:`opscope.formulas.conv` registers the convolutions)::

        @register(nn.Conv2d, describe=ConvConfig.from_module)
        def count_conv(config: ConvConfig, input_shape: Shape, output_shape: Shape) -> int:
            ...
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register() expects a torch.nn.Module subclass, got {module_type!r}")

    def decorator(count: CountFnT) -> CountFnT:
        _REGISTRY[module_type] = Formula(module_type, describe, count)
        return count

    return decorator


def formula_for(module_type: type[nn.Module]) -> Formula | None:
    """The formula of the nearest registered base class of ``module_type``, or None."""
    for base in module_type.__mro__:
        formula = _REGISTRY.get(base)
        if formula is not None:
            return formula
    return None


def registered_types() -> tuple[type[nn.Module], ...]:
    """Every module type that has a formula, in registration order."""
    return tuple(_REGISTRY)
