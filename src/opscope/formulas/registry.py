"""The formula registries: which module types and which ATen ops are counted, and how.

A module *formula* is pure pieces, registered together per module family:

* ``describe(module) -> config``: reads the module's static settings (kernel size, groups,
  bias, ...) into a frozen dataclass (or None), once per block, when results are first read
  (not when the module is hooked: entering stays cheap, and a lazy module has its
  parameters by then);
* ``count(config, call) -> int``: the exact number of operations of one call, from that config
  and the :class:`Call`: the shapes that really flowed through the module;
* ``macs(config, call) -> int`` (optional): the call's multiply-accumulates, see below.

Neither ever sees a tensor, so the profiler can stay ignorant of every formula and the hot
path (the forward hook) only records shapes. A module type resolves to the formula of its
nearest registered base class.

An *op formula* counts one call of an ATen operator (``torch.ops.aten.*``), for work done
outside counted modules (functional calls, ``x @ w``, residual additions): a
``TorchDispatchMode`` turns the call into an :class:`OpCall` (tensors replaced by their
:class:`TensorMeta`) and asks :func:`op_formula_for` for the :class:`OpFormula` of the
operator. An operator with no formula is either decomposed by the caller or reported as
uncounted, never silently zero: the ops that do no arithmetic are registered, with count 0,
in the ``memory`` family.

*MACs* (multiply-accumulates) are counted for the products that
``torch.utils.flop_counter.FlopCounterMode`` counts, matrix products (``mm``, ``addmm``,
``bmm``, ``baddbmm``, whatever calls them), convolutions and attention, one per
multiplication of those products, bias excluded, so that ``macs == FlopCounterMode FLOPs / 2``
(torchvision's published "GFLOPS") for the same call. See ``docs/formulas/README.md``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
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
        macs: multiply-accumulates of the call's matrix, convolution and attention products
            (bias excluded), equal to ``FlopCounterMode`` FLOPs / 2 for the same call; None
            for a family that has no such products (0 MACs).
        children: the names of the module's children whose work ``count`` includes
            (``MultiheadAttention``'s ``out_proj``); None for the default of
            :meth:`accounts_for`.
    """

    module_type: type[nn.Module]
    count: CountFn
    describe: Callable[[nn.Module], Any] = _no_config
    macs: CountFn | None = None
    children: tuple[str, ...] | None = None

    def accounts_for(self, child: str) -> bool:
        """Whether ``count`` includes the work of the module's child named ``child``: those
        it names; when it names none, every child for a formula of your own (a block counted
        as a whole), none for a built-in family's (a subclass that adds children, a Conv2d
        that also runs a BatchNorm2d, has them counted on their own)."""
        if self.children is not None:
            return child in self.children
        return not getattr(self.count, "__module__", "").startswith(_BUILT_IN)


_BUILT_IN = "opscope.formulas."
_REGISTRY: dict[type[nn.Module], Formula] = {}
# Formulas for types named "module.QualName", for libraries opscope should not import
# (importing torchvision costs seconds): matched when a model contains such a module.
_REGISTRY_BY_NAME: dict[str, Formula] = {}


def _check_module_type(module_type: object) -> None:
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"expected a torch.nn.Module subclass, got {module_type!r}")


def register(
    *module_types: type[nn.Module],
    describe: Callable[[nn.Module], Any] = _no_config,
    macs: CountFn | None = None,
    children: Iterable[str] | None = None,
) -> Callable[[CountFnT], CountFnT]:
    """Register ``count`` as the formula of ``module_types`` (and of their subclasses), with
    ``macs`` as its multiply-accumulate count when the family has matrix products, and
    ``children`` the names of the children whose work ``count`` includes (default: all of
    them: a registered block is counted as a whole).

    Registering a type again replaces its formula, with a warning that says so. Example::

        @opscope.register(MyBlock)
        def count_my_block(config: None, call: opscope.Call) -> int:
            batch, features = call.input
            return 2 * batch * features
    """
    for module_type in module_types:
        _check_module_type(module_type)

    def decorator(count: CountFnT) -> CountFnT:
        for module_type in module_types:
            previous = _REGISTRY.get(module_type)
            if previous is not None and previous.count is not count:
                warnings.warn(
                    f"{module_type.__name__} already has a formula "
                    f"({getattr(previous.count, '__qualname__', previous.count)}); "
                    f"{getattr(count, '__qualname__', count)} replaces it",
                    stacklevel=2,
                )
            named = None if children is None else tuple(children)
            _REGISTRY[module_type] = Formula(module_type, count, describe, macs, named)
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
    """Per-profiler formulas: a bare count function gets no config.

    Raises:
        TypeError: not a mapping of module types to formulas or count functions.
    """
    if not isinstance(formulas, Mapping):
        raise TypeError(
            "formulas expects a mapping of module types to formulas or count functions, "
            f"such as {{MyBlock: count_my_block}}; got a {type(formulas).__name__}"
        )
    result = {}
    for module_type, formula in formulas.items():
        _check_module_type(module_type)
        if not (isinstance(formula, Formula) or callable(formula)):
            raise TypeError(
                f"formulas[{module_type.__name__}] must be a Formula or a count function "
                f"(config, call) -> int; got {formula!r}"
            )
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
            return dataclasses.replace(by_name, module_type=base)
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


def formula_macs(formula: Formula, config: Any, call: Call) -> int:
    """The multiply-accumulates of one call counted by ``formula``: 0 for a family that has
    no matrix, convolution or attention products."""
    return formula.macs(config, call) if formula.macs is not None else 0


# -- ATen operators -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """What an op formula knows of a tensor argument: its shape and dtype, never its data."""

    shape: Shape
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        """The number of elements."""
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class NestedShape:
    """The shapes of the components of a nested tensor (``torch.nested``, strided layout),
    which has no single shape, as a nested output of an :class:`OpCall` is described.

    It cannot be indexed, sliced or measured with ``len``, so a formula that reads a
    dimension of it fails (and the call is listed as uncounted) instead of counting it as if
    it had one shape. Iterating over it gives the one size of the flat buffer that holds the
    components, ``numel``: a product of its sizes (``math.prod(call.output)``, as the
    per-element formulas and the byte counts take it) is the number of elements, which is
    exact for an operator that computes each output element on its own.

    >>> nested = NestedShape(((5, 8), (3, 8)))
    >>> nested.numel, math.prod(nested)
    (64, 64)
    """

    components: tuple[Shape, ...]

    @property
    def numel(self) -> int:
        """The number of elements, over every component."""
        return sum(math.prod(shape) for shape in self.components)

    def __iter__(self) -> Iterator[int]:
        """The sizes of the flat buffer: ``(numel,)``."""
        yield self.numel

    @classmethod
    def of(cls, tensor: torch.Tensor) -> NestedShape:
        """The component shapes of a strided nested tensor, read from its sizes
        (``_nested_tensor_size()``, a CPU tensor of metadata: reading it never reads the
        tensor's data nor waits for a device).

        Raises:
            TypeError: ``tensor`` is not a strided nested tensor, or its sizes are not on the
                CPU (then the call it is an argument of is listed as uncounted).
        """
        if not tensor.is_nested or tensor.layout != torch.strided:
            raise TypeError(f"not a strided nested tensor (layout {tensor.layout})")
        sizes = tensor._nested_tensor_size()
        if sizes.device.type != "cpu":
            raise TypeError(f"the nested tensor's sizes are on {sizes.device}, not the CPU")
        return cls(tuple(tuple(shape) for shape in sizes.tolist()))


@dataclass(frozen=True, slots=True)
class NestedTensorMeta:
    """What an op formula knows of a nested tensor argument: its components' shapes and its
    dtype. It has no ``shape``: reading one raises ``TypeError``, so a formula that does not
    handle nested tensors fails cleanly; one that does reads :attr:`components` (or
    :func:`vectors`)."""

    sizes: NestedShape
    dtype: torch.dtype

    @property
    def components(self) -> tuple[Shape, ...]:
        """The shape of each component, in order."""
        return self.sizes.components

    @property
    def numel(self) -> int:
        """The number of elements, over every component."""
        return self.sizes.numel

    @property
    def shape(self) -> Shape:
        """Raises ``TypeError``: a nested tensor has no single shape."""
        raise TypeError(f"a nested tensor has no single shape (components {self.components})")


AnyTensorMeta = TensorMeta | NestedTensorMeta
"""A tensor argument as an op formula sees it: dense or nested."""


def vectors(meta: AnyTensorMeta) -> tuple[int, int]:
    """``(rows, size)``: how many vectors lie along the last axis of a tensor and their size,
    ``(prod(shape[:-1]), shape[-1])``, over every component of a nested tensor (whose
    components must then agree on their last size).

    >>> vectors(NestedTensorMeta(NestedShape(((5, 8), (3, 8))), torch.float32))
    (8, 8)

    Raises:
        ValueError: the components of a nested tensor differ in their last size.
    """
    shapes = meta.components if isinstance(meta, NestedTensorMeta) else (meta.shape,)
    sizes = {shape[-1] for shape in shapes}
    if len(sizes) > 1:
        raise ValueError(f"the components' last sizes differ: {sorted(sizes)}")
    last = sizes.pop() if sizes else 0
    return sum(math.prod(shape[:-1]) for shape in shapes), last


OPAQUE_TYPES: tuple[type, ...] = tuple(
    kind
    for kind in (
        torch.ScriptObject,  # TorchBind: a profiler marker's handle, packed quantized weights
        torch.UntypedStorage,  # set_(storage), as unpickling and DataLoader workers do
        torch.TypedStorage,
        torch.Generator,  # randn(generator=...), dropout's
        getattr(torch, "Stream", None),
        getattr(torch, "Event", None),
    )
    if isinstance(kind, type)
)
"""The arguments an op formula knows by their class only (:class:`OpaqueMeta`)."""


@dataclass(frozen=True, slots=True)
class OpaqueMeta:
    """What an op formula knows of an opaque argument (a TorchBind object, a storage, a
    generator, a stream; :data:`OPAQUE_TYPES`): its class's name. A new object at each call
    (every optimizer step's marker, every batch's storage) is then no new distinct call, and
    none is held: a storage holds its memory."""

    name: str

    @classmethod
    def of(cls, value: Any) -> OpaqueMeta:
        if isinstance(value, torch.ScriptObject):
            return cls(value._type().qualified_name())
        kind = type(value)
        return cls(f"{kind.__module__}.{kind.__qualname__}")


def _meta_of(value: Any) -> Any:
    """``value`` with every tensor replaced by its :class:`TensorMeta` (a nested one by its
    :class:`NestedTensorMeta`), every opaque object by its :class:`OpaqueMeta` and every
    list or tuple by a tuple (hashable, and as a formula expects to read it)."""
    if isinstance(value, torch.Tensor):
        if value.is_nested:
            return NestedTensorMeta(NestedShape.of(value), value.dtype)
        return TensorMeta(tuple(value.shape), value.dtype)
    if isinstance(value, (list, tuple)):
        return tuple(_meta_of(item) for item in value)
    if isinstance(value, OPAQUE_TYPES):
        return OpaqueMeta.of(value)
    return value


def _output_shapes(out: Any) -> tuple[Shape | NestedShape, ...]:
    if isinstance(out, torch.Tensor):
        return (NestedShape.of(out) if out.is_nested else tuple(out.shape),)
    if isinstance(out, (list, tuple)):
        return tuple(shape for item in out for shape in _output_shapes(item))
    return ()


@dataclass(frozen=True, slots=True)
class OpCall:
    """What an op formula may know of one ATen operator call.

    Attributes:
        args: the positional arguments, each tensor replaced by its :class:`TensorMeta`
            (a nested tensor by its :class:`NestedTensorMeta`), each list or tuple by a tuple
            (of TensorMeta for a list of tensors), every other value (int, float, bool, None,
            str, torch.dtype, ...) as given.
        kwargs: the keyword arguments as ``(name, value)`` pairs, converted the same way.
        outputs: the shapes of the tensor outputs, flattened, in order (a
            :class:`NestedShape` for a nested output).
    """

    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    outputs: tuple[Shape | NestedShape, ...] = ()

    @classmethod
    def of(cls, args: Iterable[Any], kwargs: Mapping[str, Any] | None, out: Any) -> OpCall:
        """The call of an operator with ``args`` and ``kwargs`` that returned ``out``, as a
        ``TorchDispatchMode`` sees it.

        >>> x = torch.empty(2, 3, device="meta")
        >>> call = OpCall.of((x, 1.0), {"alpha": 2}, x)
        >>> call.args, call.kwargs, call.outputs
        ((TensorMeta(shape=(2, 3), dtype=torch.float32), 1.0), (('alpha', 2),), ((2, 3),))
        """
        pairs = tuple((name, _meta_of(value)) for name, value in (kwargs or {}).items())
        return cls(_meta_of(tuple(args)), pairs, _output_shapes(out))

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """The argument the op's schema names ``name`` at position ``index``: given
        positionally, else by keyword, else ``default``."""
        if index < len(self.args):
            return self.args[index]
        for key, value in self.kwargs:
            if key == name:
                return value
        return default

    def tensor(self, index: int, name: str) -> AnyTensorMeta | None:
        """The tensor argument at ``index`` / ``name``, dense or nested, or None when absent
        (or not a tensor)."""
        value = self.arg(index, name)
        return value if isinstance(value, (TensorMeta, NestedTensorMeta)) else None

    @property
    def input(self) -> Shape:
        """The shape of the first argument, which is a tensor for most operators.

        Raises:
            TypeError: the first argument is not a tensor, or is a nested one.
        """
        first = self.args[0] if self.args else None
        if not isinstance(first, (TensorMeta, NestedTensorMeta)):
            raise TypeError(f"the first argument is not a tensor: {first!r}")
        return first.shape

    @property
    def output(self) -> Shape | NestedShape:
        """The first output's shape (a :class:`NestedShape` for a nested output, which only
        a product of sizes can read)."""
        if not self.outputs:
            raise ValueError("the call had no tensor output")
        return self.outputs[0]


OpCountFn = Callable[[OpCall], int]
OpCountFnT = TypeVar("OpCountFnT", bound=OpCountFn)
OpTarget = torch._ops.OpOverload | torch._ops.OpOverloadPacket


def _zero(call: OpCall) -> int:
    return 0


@dataclass(frozen=True)
class OpFormula:
    """How one ATen operator is counted.

    Attributes:
        family: the formula family, e.g. ``"matmul"``, ``"conv"``, ``"attention"``,
            ``"elementwise"``, ``"activation"``, ``"norm"``, ``"softmax"``, ``"pool"``,
            ``"interpolate"``, ``"reduction"``, ``"recurrent"``, ``"embedding"``, ``"fold"``,
            ``"distance"``, ``"loss"``, ``"transformer"``, ``"foreach"`` (lists of tensors,
            optimizer steps), ``"memory"`` (no arithmetic).
        count: exact operations of one call.
        macs: multiply-accumulates of its matrix, convolution and attention products (bias
            excluded); None for 0.
        coarse_scalars: whether ``count`` and ``macs`` read a float argument only as 0, 1,
            -1 or another number (``alpha != 1``, a weight decay or none): the calls are then
            logged with every other float as :data:`OTHER_NUMBER`, so that a learning rate
            or a bias correction that changes at every step makes no new distinct call.
    """

    family: str
    count: OpCountFn
    macs: OpCountFn | None = None
    coarse_scalars: bool = False

    def call_macs(self, call: OpCall) -> int:
        """The call's multiply-accumulates (0 without a ``macs`` function)."""
        return self.macs(call) if self.macs is not None else 0


_OP_REGISTRY: dict[OpTarget, OpFormula] = {}
# op_formula_for's answers per OpOverload, None included; cleared by every registration.
_OP_RESOLVED: dict[torch._ops.OpOverload, OpFormula | None] = {}


def _check_op_target(target: object) -> None:
    if not isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        raise TypeError(f"expected an OpOverload or OpOverloadPacket, got {target!r}")


def register_op(
    *targets: OpTarget,
    family: str,
    macs: OpCountFn | None = None,
    coarse_scalars: bool = False,
) -> Callable[[OpCountFnT], OpCountFnT]:
    """Register ``count`` as the formula of ATen operators: an ``OpOverloadPacket``
    (``torch.ops.aten.add``) covers all its overloads, an ``OpOverload``
    (``torch.ops.aten.add.Tensor``) that overload only, and takes precedence over its packet.

    Registering an operator again replaces its formula. With ``coarse_scalars``, the formula
    declares that it reads a float argument only as 0, 1, -1 or another number (see
    :class:`OpFormula`). Example::

        @register_op(torch.ops.mylib.scale, family="elementwise")
        def count_scale(call: OpCall) -> int:
            return math.prod(call.output)
    """
    for target in targets:
        _check_op_target(target)

    def decorator(count: OpCountFnT) -> OpCountFnT:
        formula = OpFormula(family, count, macs, coarse_scalars)
        for target in targets:
            _OP_REGISTRY[target] = formula
        _OP_RESOLVED.clear()
        return count

    return decorator


OTHER_NUMBER = float("nan")
"""A float argument a formula with ``coarse_scalars`` does not read the value of: not 0, 1
or -1 (NaN compares unequal to each). One object, equal to itself by identity, so calls
holding it are equal keys."""

_EXACT_NUMBERS = frozenset({0.0, 1.0, -1.0})


def coarsened(value: Any) -> Any:
    """``value`` (an operator's arguments) with every float other than 0, 1 and -1, alone or
    in a list or tuple, replaced by :data:`OTHER_NUMBER`; lists become tuples.

    >>> coarsened(((0.9, 1.0), {"alpha": -0.001, "maximize": False}))
    ((nan, 1.0), {'alpha': nan, 'maximize': False})
    """
    if type(value) is float:
        return value if value in _EXACT_NUMBERS else OTHER_NUMBER
    if isinstance(value, (tuple, list)):
        return tuple([coarsened(item) for item in value])
    if isinstance(value, dict):
        return {name: coarsened(item) for name, item in value.items()}
    return value


def register_zero_ops(*targets: OpTarget, family: str = "memory") -> None:
    """Register operators that do no arithmetic (data movement, views, creation): each call
    counts 0 operations and 0 MACs, and is known, so never reported as uncounted."""
    register_op(*targets, family=family)(_zero)


def op_formula_for(func: torch._ops.OpOverload) -> OpFormula | None:
    """The formula of ``func``: its overload's own, else its packet's, else None. One dict
    lookup once an overload has been asked about (it runs on every operator call)."""
    try:
        return _OP_RESOLVED[func]
    except KeyError:
        pass
    formula = _OP_REGISTRY.get(func)
    if formula is None:
        formula = _OP_REGISTRY.get(getattr(func, "overloadpacket", None))
    _OP_RESOLVED[func] = formula
    return formula


def registered_ops() -> dict[OpTarget, OpFormula]:
    """Every registered operator target (packet or overload) and its formula."""
    return dict(_OP_REGISTRY)


def aten_ops(*names: str) -> tuple[torch._ops.OpOverloadPacket, ...]:
    """``torch.ops.aten.<name>`` for each name that the running torch has (some operators
    are newer than the oldest torch opscope supports)."""
    packets = (getattr(torch.ops.aten, name, None) for name in names)
    return tuple(packet for packet in packets if isinstance(packet, torch._ops.OpOverloadPacket))
