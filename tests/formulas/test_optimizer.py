"""Optimizer steps: every ``_foreach_*`` operator against the same operator applied tensor by
tensor (counted by its own family), and one step of SGD, Adam and AdamW in each of their
implementations (for-loop, foreach, fused) against closed forms in the number of parameter
elements ``P`` and parameter tensors ``T``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from formulas.op_harness import count_ops
from formulas.step_harness import count_optimizer_step
from torch import nn

from opscope.formulas.foreach import adam_step_ops_per_element, sgd_step_ops_per_element

SHAPES = [(3, 4), (4,), (2, 2, 2)]


def tensors(offset: float = 0.0) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.rand(shape) + 0.5 + offset for shape in SHAPES]


# Each case: the foreach call, and the same work tensor by tensor.
PerTensor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], Any]
CASES: dict[str, tuple[Callable[..., Any], PerTensor]] = {
    "add Scalar": (lambda a, b, c: torch._foreach_add_(a, 2.0), lambda x, y, z, i: x.add_(2.0)),
    "add List alpha": (
        lambda a, b, c: torch._foreach_add_(a, b, alpha=-0.1), lambda x, y, z, i: x.add_(y, alpha=-0.1)
    ),
    "add List": (lambda a, b, c: torch._foreach_add(a, b), lambda x, y, z, i: x.add(y)),
    "add ScalarList": (
        lambda a, b, c: torch._foreach_add_(a, [1.0, 2.0, 3.0]), lambda x, y, z, i: x.add_(i + 1.0)
    ),
    "add Tensor": (
        lambda a, b, c: torch._foreach_add_(a, torch.tensor(1.0), alpha=1.0),
        lambda x, y, z, i: x.add_(torch.tensor(1.0)),
    ),
    "sub List": (lambda a, b, c: torch._foreach_sub_(a, b), lambda x, y, z, i: x.sub_(y)),
    "mul Scalar": (lambda a, b, c: torch._foreach_mul_(a, 0.9), lambda x, y, z, i: x.mul_(0.9)),
    "mul Tensor": (
        lambda a, b, c: torch._foreach_mul_(a, torch.tensor(0.9)),
        lambda x, y, z, i: x.mul_(torch.tensor(0.9)),
    ),
    "div ScalarList": (
        lambda a, b, c: torch._foreach_div_(a, [2.0, 3.0, 4.0]), lambda x, y, z, i: x.div_(i + 2.0)
    ),
    "div List": (lambda a, b, c: torch._foreach_div(a, b), lambda x, y, z, i: x.div(y)),
    "addcmul Scalar": (
        lambda a, b, c: torch._foreach_addcmul_(a, b, c, 0.1),
        lambda x, y, z, i: x.addcmul_(y, z, value=0.1),
    ),
    "addcmul value 1": (
        lambda a, b, c: torch._foreach_addcmul_(a, b, c), lambda x, y, z, i: x.addcmul_(y, z)
    ),
    "addcdiv ScalarList": (
        lambda a, b, c: torch._foreach_addcdiv_(a, b, c, [-0.1, 1.0, -0.3]),
        lambda x, y, z, i: x.addcdiv_(y, z, value=[-0.1, 1.0, -0.3][i]),
    ),
    "addcdiv Tensor": (  # scales in a tensor: never read, always multiplied
        lambda a, b, c: torch._foreach_addcdiv_(a, b, c, torch.tensor([1.0, 1.0, 1.0])),
        lambda x, y, z, i: x.addcdiv_(y, z, value=0.5),
    ),
    "lerp Scalar": (
        lambda a, b, c: torch._foreach_lerp_(a, b, 0.1), lambda x, y, z, i: x.lerp_(y, 0.1)
    ),
    "lerp List": (lambda a, b, c: torch._foreach_lerp_(a, b, c), lambda x, y, z, i: x.lerp_(y, z)),
    "sqrt": (lambda a, b, c: torch._foreach_sqrt(a), lambda x, y, z, i: x.sqrt()),
    "rsqrt": (lambda a, b, c: torch._foreach_rsqrt_(a), lambda x, y, z, i: x.rsqrt_()),
    "exp": (lambda a, b, c: torch._foreach_exp(a), lambda x, y, z, i: x.exp()),
    "sigmoid": (lambda a, b, c: torch._foreach_sigmoid(a), lambda x, y, z, i: x.sigmoid()),
    "maximum": (
        lambda a, b, c: torch._foreach_maximum_(a, b), lambda x, y, z, i: torch.maximum(x, y)
    ),
    "clamp_min": (lambda a, b, c: torch._foreach_clamp_min_(a, 0.7), lambda x, y, z, i: x.clamp_min_(0.7)),
    "neg": (lambda a, b, c: torch._foreach_neg(a), lambda x, y, z, i: x.neg()),
    "abs": (lambda a, b, c: torch._foreach_abs(a), lambda x, y, z, i: x.abs()),
    "sign": (lambda a, b, c: torch._foreach_sign(a), lambda x, y, z, i: x.sign()),
    "pow Scalar": (lambda a, b, c: torch._foreach_pow(a, 2.0), lambda x, y, z, i: x.pow(2.0)),
    "pow ScalarAndTensor": (
        lambda a, b, c: torch._foreach_pow(2.0, a), lambda x, y, z, i: torch.pow(2.0, x)
    ),
    "norm": (lambda a, b, c: torch._foreach_norm(a), lambda x, y, z, i: torch.linalg.vector_norm(x)),
    "norm 1": (
        lambda a, b, c: torch._foreach_norm(a, 1), lambda x, y, z, i: torch.linalg.vector_norm(x, 1)
    ),
    "max": (lambda a, b, c: torch._foreach_max(a), lambda x, y, z, i: x.max()),
    "zero": (lambda a, b, c: torch._foreach_zero_(a), lambda x, y, z, i: x.zero_()),
    "copy": (lambda a, b, c: torch._foreach_copy_(a, b), lambda x, y, z, i: x.copy_(y)),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_foreach_counts_its_operator_tensor_by_tensor(name: str) -> None:
    foreach, per_tensor = CASES[name]
    lists = (tensors(), tensors(1.0), tensors(2.0))
    counts = count_ops(lambda: foreach(*lists), "no_grad")
    assert not counts.uncounted
    lists = (tensors(), tensors(1.0), tensors(2.0))
    expected = count_ops(
        lambda: [per_tensor(x, y, z, i) for i, (x, y, z) in enumerate(zip(*lists))], "no_grad"
    )
    assert not expected.uncounted
    assert counts.ops == expected.ops
    assert counts.by_family["foreach"] == counts.ops


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))


P = 4 * 3 + 3 + 3 * 2  # parameter elements
T = 3  # parameter tensors


def steps(optimizer_of: Callable[[Any], torch.optim.Optimizer], count: int) -> list[int]:
    """The operations of ``count`` successive steps of the optimizer on :func:`model`."""
    net = model()
    optimizer = optimizer_of(net.parameters())
    result = []
    for _ in range(count):
        net.zero_grad(set_to_none=True)
        net(torch.randn(5, 4)).sum().backward()
        counts = count_optimizer_step(optimizer)
        assert not counts.uncounted, counts.uncounted
        result.append(counts.ops)
    return result


IMPLEMENTATIONS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}}


@pytest.mark.parametrize("implementation", [*IMPLEMENTATIONS, "fused"])
@pytest.mark.parametrize(
    "settings, first, later",
    [
        # p - lr * g: 1 mul + 1 sub per element
        ({}, 2, 2),
        # g + wd * p first: 2 more
        ({"weight_decay": 0.01}, 4, 4),
        # momentum: the first step copies g into the buffer (free), later ones
        # b = momentum * b + g (2)
        ({"momentum": 0.9}, 2, 4),
        ({"momentum": 0.9, "dampening": 0.1}, 2, 5),  # (1 - dampening) * g: 1 more
        # nesterov: g + momentum * b (2)
        ({"momentum": 0.9, "nesterov": True}, 4, 6),
        ({"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, 6, 8),
    ],
)
def test_sgd_step(implementation: str, settings: dict[str, Any], first: int, later: int) -> None:
    options = {**IMPLEMENTATIONS.get(implementation, {"fused": True}), **settings}
    counted = steps(lambda params: torch.optim.SGD(params, lr=0.1, **options), 2)
    assert counted == [first * P, later * P]
    closed_forms = [
        sgd_step_ops_per_element(
            weight_decay=settings.get("weight_decay", 0.0),
            momentum=settings.get("momentum", 0.0),
            dampening=settings.get("dampening", 0.0),
            nesterov=settings.get("nesterov", False),
            first_step=first_step,
        )
        for first_step in (True, False)
    ]
    assert closed_forms == [first, later]


ADAM_IMPLEMENTATIONS = {**IMPLEMENTATIONS, "fused": {"fused": True}}


@pytest.mark.parametrize("implementation", ADAM_IMPLEMENTATIONS)
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize(
    "optimizer, weight_decay, per_element",
    [
        # lerp 3, mul 1 + addcmul 3, sqrt 1, div 1, add eps 1, addcdiv 3
        (torch.optim.Adam, 0.0, 13),
        (torch.optim.Adam, 0.01, 15),  # g + wd * p: 2
        (torch.optim.AdamW, 0.01, 14),  # p * (1 - lr * wd): 1
        (torch.optim.AdamW, 0.0, 13),
    ],
)
def test_adam_step(
    implementation: str, amsgrad: bool, optimizer: type, weight_decay: float, per_element: int
) -> None:
    """Per element as above (+1 for amsgrad's maximum), per tensor the step count's ``+= 1``;
    the bias corrections are numbers worked out from the step count, not tensors."""
    options = {**ADAM_IMPLEMENTATIONS[implementation], "amsgrad": amsgrad}
    counted = steps(
        lambda params: optimizer(params, lr=0.01, weight_decay=weight_decay, **options), 2
    )
    expected = (per_element + amsgrad) * P + T
    assert counted == [expected, expected]
    decoupled = optimizer is torch.optim.AdamW
    assert (
        adam_step_ops_per_element(decoupled=decoupled, weight_decay=weight_decay, amsgrad=amsgrad)
        == per_element + amsgrad
    )
