"""The formula registry: which module types are counted, and how.

A *formula* is two pure pieces, registered together per module family:

* ``describe(module) -> config``: reads the module's static settings (kernel size, groups,
  bias, ...) into a frozen dataclass (or None), once per block, when results are first read
  (not when the module is hooked: entering stays cheap, and a lazy module has its
  parameters by then);
* ``count(config, call) -> int``: the exact number of operations of one call, from that config
  and the :class:`Call`: the shapes that really flowed through the module.

Neither ever sees a tensor, so the profiler can stay ignorant of every formula and the hot
path (the forward hook) only records shapes. A module type resolves to the formula of its
nearest registered base class.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

Shape = tuple[int, ...]
"""A tensor shape as plain integers (``torch.Size`` is a ``tuple[int, ...]`` too)."""


@dataclass(frozen=True, slots=True)
class Call:
    """What a formula may know of one module call.

    Attributes:
        inputs: shapes of the tensors among the call's arguments, in order (positional, then
            keyword; tuples, lists and dicts are looked into, so an LSTM's ``(x, (h0, c0))``
            gives three shapes and a PackedSequence gives its data first).
        outputs: shapes of the tensors in the call's output, in the same order.
        training: the module's ``training`` flag at the time of the call.
    """

    inputs: tuple[Shape, ...]
    outputs: tuple[Shape, ...]
    training: bool = False

    @property
    def input(self) -> Shape:
        """The first input's shape."""
        if not self.inputs:
            raise ValueError("the call had no tensor input")
        return self.inputs[0]

    @property
    def output(self) -> Shape:
        """The first output's shape."""
        if not self.outputs:
            raise ValueError("the call had no tensor output")
        return self.outputs[0]


CountFn = Callable[[Any, Call], int]
CountFnT = TypeVar("CountFnT", bound=CountFn)


def _no_config(module: nn.Module) -> None:
    return None


@dataclass(frozen=True)
class Formula:
    """How one module family is counted.

    Attributes:
        module_type: the registered base type; subclasses resolve to it.
        count: exact operations of one call, from the config and the call's shapes.
        describe: reads a module's static settings into a frozen, hashable config (when
            results are first read).
    """

    module_type: type[nn.Module]
    count: CountFn
    describe: Callable[[nn.Module], Any] = _no_config


_REGISTRY: dict[type[nn.Module], Formula] = {}
# Formulas for types named "module.QualName", for libraries opscope should not import
# (importing torchvision costs seconds): matched when a model contains such a module.
_REGISTRY_BY_NAME: dict[str, Formula] = {}


def _check_module_type(module_type: object) -> None:
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"expected a torch.nn.Module subclass, got {module_type!r}")


def register(
    *module_types: type[nn.Module], describe: Callable[[nn.Module], Any] = _no_config
) -> Callable[[CountFnT], CountFnT]:
    """Register ``count`` as the formula of ``module_types`` (and of their subclasses).

    Registering a type again replaces its formula. Example::

        @opscope.register(MyBlock)
        def count_my_block(config: None, call: opscope.Call) -> int:
            batch, features = call.input
            return 2 * batch * features
    """
    for module_type in module_types:
        _check_module_type(module_type)

    def decorator(count: CountFnT) -> CountFnT:
        for module_type in module_types:
            _REGISTRY[module_type] = Formula(module_type, count, describe)
        return count

    return decorator


def register_by_name(*qualified_names: str) -> Callable[[CountFnT], CountFnT]:
    """Register ``count`` (no config) for types named ``"package.module.ClassName"``, without
    importing them; their subclasses resolve to it as with :func:`register`."""

    def decorator(count: CountFnT) -> CountFnT:
        for name in qualified_names:
            _REGISTRY_BY_NAME[name] = Formula(nn.Module, count)
        return count

    return decorator


def as_formulas(
    formulas: Mapping[type[nn.Module], Formula | CountFn],
) -> dict[type[nn.Module], Formula]:
    """Per-profiler formulas: a bare count function gets no config."""
    result = {}
    for module_type, formula in formulas.items():
        _check_module_type(module_type)
        result[module_type] = (
            formula if isinstance(formula, Formula) else Formula(module_type, formula)
        )
    return result


def formula_for(
    module_type: type[nn.Module], overrides: Mapping[type[nn.Module], Formula] | None = None
) -> Formula | None:
    """The formula of the nearest base class of ``module_type`` that has one (``overrides``
    first at each level, then the registry), or None."""
    for base in module_type.__mro__:
        if overrides and base in overrides:
            return overrides[base]
        if base in _REGISTRY:
            return _REGISTRY[base]
        by_name = _REGISTRY_BY_NAME.get(f"{base.__module__}.{base.__qualname__}")
        if by_name is not None:
            return Formula(base, by_name.count)
    return None


def config_types() -> dict[str, type]:
    """The config classes of the registered formulas whose ``describe`` is a classmethod of
    their config, by ``"module.QualName"``."""
    types = (getattr(formula.describe, "__self__", None) for formula in _REGISTRY.values())
    return {
        f"{config_type.__module__}.{config_type.__qualname__}": config_type
        for config_type in types
        if isinstance(config_type, type)
    }


def config_type_named(name: str) -> type | None:
    """The config class an exported record names (``"module.QualName"``), or None.

    A classmethod ``describe`` names its class; for any other ``describe`` (a function, a
    lambda), a dataclass is accepted from a module that is already imported and defines a
    registered formula's ``count`` or ``describe``: reading a report never imports anything.
    """
    known = config_types().get(name)
    if known is not None:
        return known
    for module_name in _formula_modules():
        prefix = f"{module_name}."
        if not name.startswith(prefix) or module_name not in sys.modules:
            continue
        found: Any = sys.modules[module_name]
        for part in name[len(prefix) :].split("."):
            found = getattr(found, part, None)
        if isinstance(found, type) and dataclasses.is_dataclass(found):
            return found
    return None


def _formula_modules() -> set[str]:
    """The modules that define the registered formulas' functions."""
    functions = (f for formula in _REGISTRY.values() for f in (formula.count, formula.describe))
    return {module for module in (getattr(f, "__module__", None) for f in functions) if module}


def registered_types() -> tuple[type[nn.Module], ...]:
    """Every module type that has a formula, in registration order."""
    return tuple(_REGISTRY)
