"""The op registry's API: calls as the capture layer builds them, lookups, precedence, MACs."""

from __future__ import annotations

import math

import pytest
import torch
from formulas.op_harness import count_ops
from torch import nn

from opscope.formulas import memory, passthrough
from opscope.formulas.registry import (
    Call,
    Formula,
    NestedShape,
    NestedTensorMeta,
    OpCall,
    OpFormula,
    TensorMeta,
    aten_ops,
    formula_for,
    formula_macs,
    op_formula_for,
    register,
    register_by_name,
    register_op,
    register_zero_ops,
    vectors,
)

aten = torch.ops.aten


def test_op_call_replaces_tensors_by_their_meta_and_is_hashable() -> None:
    x = torch.empty(2, 3, dtype=torch.float16)
    y = torch.empty(4, dtype=torch.int64)
    call = OpCall.of([x, [x, y], 2, None, "mean", torch.float32], {"alpha": 0.5, "out": x}, (x, y))
    half, long = TensorMeta((2, 3), torch.float16), TensorMeta((4,), torch.int64)
    assert call.args == (half, (half, long), 2, None, "mean", torch.float32)
    assert call.kwargs == (("alpha", 0.5), ("out", half))
    assert call.outputs == ((2, 3), (4,))
    assert hash(call) == hash(OpCall.of([x, (x, y), 2, None, "mean", torch.float32],
                                        {"alpha": 0.5, "out": x}, [x, y]))  # fmt: skip
    assert half.numel == 6


def test_op_call_arguments_by_position_or_keyword() -> None:
    call = OpCall((TensorMeta((3,), torch.float32), 1), (("alpha", 2), ("bias", None)), ((3,),))
    assert call.arg(1, "other") == 1
    assert call.arg(2, "alpha", 1) == 2
    assert call.arg(5, "beta", 1) == 1
    assert call.tensor(0, "self") == TensorMeta((3,), torch.float32)
    assert call.tensor(3, "bias") is None
    assert call.input == (3,) and call.output == (3,)
    with pytest.raises(TypeError):
        _ = OpCall((1,), (), ()).input
    with pytest.raises(ValueError):
        _ = OpCall().output


def test_overload_formula_takes_precedence_over_its_packet() -> None:
    assert op_formula_for(aten.max.other).family == "elementwise"
    assert op_formula_for(aten.max.dim).family == "reduction"
    assert op_formula_for(aten.max.default).family == "reduction"
    assert op_formula_for(aten.scatter.src).family == "memory"
    index = TensorMeta((2, 2), torch.int64)
    reduce = OpCall((TensorMeta((3, 2), torch.float32), 0, index, 1.0), (("reduce", "add"),))
    assert op_formula_for(aten.scatter.value_reduce).count(reduce) == 4
    assert op_formula_for(aten.scatter.value).count(reduce) == 0


def test_unknown_operators_have_no_formula() -> None:
    # never silently zero: the capture layer decomposes them or lists them as uncounted
    assert op_formula_for(aten.matmul.default) is None
    assert op_formula_for(aten.einsum.default) is None
    assert op_formula_for(aten._upsample_bilinear2d_aa.default) is None


@torch.library.custom_op("opscope_test::scale", mutates_args=())
def scale(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@scale.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def test_registering_a_formula_refreshes_lookups_and_counts_end_to_end() -> None:
    packet = torch.ops.opscope_test.scale
    x = torch.randn(3, 4)
    assert op_formula_for(packet.default) is None  # looked up, and remembered, as unknown
    assert count_ops(lambda: scale(x)).uncounted == {"opscope_test.scale.default": 1}

    register_op(packet, family="custom", macs=lambda call: 1)(
        lambda call: call.input[0] * call.input[1]
    )
    counts = count_ops(lambda: scale(x))
    assert (counts.ops, counts.macs, dict(counts.by_family)) == (12, 1, {"custom": 12})

    register_op(packet.default, family="overload")(lambda call: 5)  # the overload wins
    assert op_formula_for(packet.default).family == "overload"
    assert count_ops(lambda: scale(x)).ops == 5


def test_register_op_checks_its_targets() -> None:
    with pytest.raises(TypeError):
        register_op("aten::add", family="elementwise")
    with pytest.raises(TypeError):
        register_zero_ops(torch.add)


def test_zero_ops_count_nothing_and_have_no_macs() -> None:
    formula = op_formula_for(aten.view.default)
    assert formula == OpFormula("memory", formula.count)
    assert formula.count(OpCall()) == 0 and formula.call_macs(OpCall()) == 0
    assert op_formula_for(aten.dropout.default).family == "passthrough"


@pytest.mark.parametrize(
    "names", [memory.ZERO_OP_NAMES, passthrough.DROPOUT_OPS], ids=["memory", "passthrough"]
)
def test_every_listed_operator_exists(names: tuple[str, ...]) -> None:
    """A misspelt name would silently drop out of the registry (aten_ops skips names the
    running torch lacks, for older versions)."""
    assert [name for name in names if not aten_ops(name)] == []
    for packet in aten_ops(*names):
        overload = getattr(packet, packet.overloads()[0])
        assert op_formula_for(overload).count(OpCall()) == 0, packet


def test_module_formula_macs() -> None:
    linear = formula_for(nn.Linear)
    config = linear.describe(nn.Linear(4, 3))
    call = Call(inputs=((6, 4),), outputs=((6, 3),))
    assert formula_macs(linear, config, call) == 6 * 3 * 4
    assert formula_macs(formula_for(nn.ReLU), None, call) == 0
    assert formula_for(nn.Bilinear).macs is None  # FlopCounterMode counts no _trilinear


def test_register_with_macs_and_by_name() -> None:
    class Block(nn.Module):
        pass

    register(Block, macs=lambda config, call: 5)(lambda config, call: 9)
    assert formula_macs(formula_for(Block), None, Call((), ())) == 5
    register_by_name(f"{__name__}.Named")(lambda config, call: 1)

    class Named(nn.Module):
        pass

    Named.__qualname__ = "Named"
    formula = formula_for(Named)
    assert isinstance(formula, Formula) and formula.module_type is Named
    assert formula.macs is None


PROTOTYPE = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
"""torch's note that strided nested tensors are a prototype."""


def nested(*shapes: tuple[int, ...]) -> torch.Tensor:
    return torch.nested.nested_tensor([torch.randn(shape) for shape in shapes])


@PROTOTYPE
def test_a_nested_tensor_becomes_the_shapes_of_its_components() -> None:
    x = nested((5, 8), (3, 8))
    call = OpCall.of([x, 2], {"other": x}, x)
    sizes = NestedShape(((5, 8), (3, 8)))
    meta = NestedTensorMeta(sizes, torch.float32)
    assert call.args == (meta, 2) and call.kwargs == (("other", meta),)
    assert call.outputs == (sizes,) and hash(call) == hash(OpCall.of([x, 2], {"other": x}, x))
    assert meta.components == ((5, 8), (3, 8)) and meta.numel == 64 == sizes.numel
    assert call.tensor(0, "self") == meta  # a nested argument is there, dense or not
    assert vectors(meta) == (8, 8) and vectors(TensorMeta((2, 3, 4), torch.float32)) == (6, 4)
    with pytest.raises(ValueError, match="differ"):
        vectors(NestedTensorMeta(NestedShape(((2, 3), (2, 4))), torch.float32))


def test_a_nested_shape_has_no_dimension_to_read() -> None:
    """A formula that reads a dimension fails instead of miscounting; a product of sizes
    (per-element counts, bytes) is the number of elements."""
    sizes = NestedShape(((5, 8), (3, 8)))
    meta = NestedTensorMeta(sizes, torch.float32)
    call = OpCall((meta, -1), (), (sizes,))
    for read in (lambda: call.input, lambda: meta.shape, lambda: sizes[0], lambda: len(sizes),
                 lambda: sizes[:-1]):  # fmt: skip
        with pytest.raises(TypeError):
            read()
    with pytest.raises(ValueError, match="not enough values"):
        _rows, _length = call.output
    assert math.prod(call.output) == 64
    with pytest.raises(TypeError):  # softmax reads a dimension
        op_formula_for(aten._softmax.default).count(call)
    assert op_formula_for(aten.relu.default).count(call) == 64


class _DeviceSizes:
    """A stand-in for a nested tensor whose sizes live off the CPU."""

    is_nested = True
    layout = torch.strided

    def _nested_tensor_size(self) -> torch.Tensor:
        return torch.empty(2, 2, dtype=torch.int64, device="meta")


@PROTOTYPE
def test_nested_sizes_are_read_only_from_the_cpu_and_the_strided_layout() -> None:
    with pytest.raises(TypeError, match="not the CPU"):
        NestedShape.of(_DeviceSizes())  # type: ignore[arg-type]
    jagged = torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)], layout=torch.jagged)
    with pytest.raises(TypeError, match="strided"):
        OpCall.of([jagged], {}, None)
    with pytest.raises(TypeError, match="strided"):
        NestedShape.of(torch.randn(2))


@PROTOTYPE
def test_element_wise_and_linear_operators_count_nested_tensors() -> None:
    first, second = torch.randn(1, 5, 8), torch.randn(1, 3, 8)
    x = torch.nested.nested_tensor([first[0], second[0]])
    linear = nn.Linear(8, 4)
    runs = (torch.relu, lambda t: t * 2 + t, nn.functional.gelu, linear)
    for run in runs:
        with torch.no_grad():
            counts = count_ops(lambda run=run: run(x))
            alone = [count_ops(lambda run=run, t=t: run(t)) for t in (first, second)]
        assert not counts.uncounted
        assert (counts.ops, counts.macs) == (sum(c.ops for c in alone), sum(c.macs for c in alone))
