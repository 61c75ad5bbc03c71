"""Functional work: the ATen operators run outside counted modules, counted exactly and
attributed to the innermost module that ran them (``capture.OpCapture``, ``counting``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opscope import Profiler
from opscope.tables import notes


def matmul(m: int, k: int, n: int) -> int:
    """Brute force: m * n dot products of k pairs, k multiplications and k - 1 additions."""
    return sum(k + (k - 1) for _ in range(m * n))


class Functional(nn.Module):
    """Work done with functional calls only, around one counted child."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 6)  # used through its weights, never called
        self.norm = nn.LayerNorm(6)  # called: counted by its formula

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.proj.weight, self.proj.bias)  # (2, 5, 6)
        h = self.norm(h)
        scores = h @ h.transpose(-2, -1)  # (2, 5, 5)
        mixed = torch.einsum("bij,bjk->bik", scores, h)  # (2, 5, 6)
        return mixed + y


def profile(model: nn.Module, *args: torch.Tensor, **options) -> Profiler:
    with Profiler(model, **options) as p:
        model(*args)
    return p


def test_each_functional_operation_is_counted_exactly() -> None:
    model = Functional()
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    p = profile(model, x, y)
    names = [(r.name, r.module_type, r.family) for r in p.records]
    assert names == [("", "Functional", "functional"), ("norm", "LayerNorm", "LayerNorm")]
    linear = matmul(10, 8, 6) + 10 * 6  # the bias: one addition per output
    scores = 2 * matmul(5, 6, 5)
    mixed = 2 * matmul(5, 5, 6)
    residual = 2 * 5 * 6
    functional = p.records[0]
    assert functional.ops == linear + scores + mixed + residual
    assert functional.macs == 10 * 8 * 6 + 2 * 5 * 6 * 5 + 2 * 5 * 5 * 6
    assert p.total_ops == functional.ops + p.records[1].ops
    # Every parameter counts once, the never-called Linear's too.
    assert p.report.total_params == sum(q.numel() for q in model.parameters())


def test_attention_interpolation_and_a_child_weight_equal_their_module_counts() -> None:
    """The same work through a module's formula (hooks) and through operators agrees."""
    q = torch.randn(2, 3, 7, 4)
    plain = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"))
    image = torch.randn(1, 3, 5, 5)

    class Interpolate(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=2, mode="bilinear")

    assert profile(Interpolate(), image).total_ops == profile(plain, image).total_ops > 0

    class Attention(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, q, q)

    class Spelled(nn.Module):  # the query scaled first, as docs/formulas/attention.md counts
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            scores = (q * (1 / math.sqrt(q.shape[-1]))) @ q.transpose(-2, -1)
            return scores.softmax(-1) @ q

    fused, spelled = profile(Attention(), q), profile(Spelled(), q)
    assert fused.total_ops == spelled.total_ops
    assert fused.report.total_macs == spelled.report.total_macs == 2 * (2 * 3 * 7 * 7 * 4)


@pytest.mark.parametrize(
    "context",
    [torch.inference_mode, torch.no_grad, torch.enable_grad,
     lambda: torch.autocast("cpu", dtype=torch.bfloat16)],
)  # fmt: skip
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_same_count_in_every_mode_and_on_meta(context, device: str) -> None:
    model = Functional().to(device)
    x, y = torch.randn(2, 5, 8, device=device), torch.randn(2, 5, 6, device=device)
    with context():
        p = profile(model, x, y)
    reference = profile(Functional(), torch.randn(2, 5, 8), torch.randn(2, 5, 6))
    assert (p.total_ops, p.report.total_macs) == (reference.total_ops, reference.report.total_macs)


def test_residual_additions_of_a_resnet_are_counted() -> None:
    import torchvision

    model = torchvision.models.resnet18(weights=None).eval()
    with torch.inference_mode():
        p = profile(model, torch.randn(1, 3, 64, 64))
    blocks = [r for r in p.records if r.family == "functional"]
    assert [r.name for r in blocks] == [f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)]
    assert all(r.config.ops == (("add_", 1),) for r in blocks)  # out += identity
    # The addition is the block's output size: one operation per element.
    outputs = {r.name.rsplit(".", 1)[0]: math.prod(r.output_shape) for r in p.records if r.name.endswith("bn2")}
    assert [r.ops for r in blocks] == [outputs[r.name] for r in blocks]


def test_hooks_only_and_the_conv2d_view_count_no_functional_work() -> None:
    model = Functional()
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    assert [r.family for r in profile(model, x, y, functional=False).records] == ["LayerNorm"]
    assert [r.family for r in profile(model, x, y, include=[nn.LayerNorm]).records] == ["LayerNorm"]
    assert len(profile(model, x, y, include=[nn.LayerNorm], functional=True).records) == 2


def test_work_inside_counted_modules_is_never_counted_twice() -> None:
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    p = profile(nn.Sequential(), x)  # nothing counted, nothing ran
    assert p.records == ()

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = attention

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attention(x, x, x, need_weights=False)[0]

    p = profile(Wrapper(), x)
    assert [(r.name, r.family) for r in p.records] == [("attention", "MultiheadAttention")]


def test_work_outside_the_model_is_its_own_row_and_other_models_are_not_counted() -> None:
    model, other = nn.Linear(4, 4), nn.Linear(4, 4)
    with Profiler(model) as p:
        loss = model(torch.randn(3, 4)).sum()  # inside the block, outside the model
        other(torch.randn(3, 4))  # another model's work: not this profiler's
        loss.backward()  # the backward pass: its own phase
    forward = [(r.name, r.family) for r in p.records if r.phase == "forward"]
    assert forward == [("", "Linear"), ("(outside the model)", "functional")]
    assert p.records[1].ops == 3 * 4 - 1  # a sum of 12 elements: 11 additions
    # The backward belongs to the module whose forward made the gradient's nodes.
    assert {r.name for r in p.records if r.phase == "backward"} <= {"", "(outside the model)"}


def test_an_operator_without_a_formula_is_listed_never_zero() -> None:
    @torch.library.custom_op("opscope_test::frobnicate", mutates_args=())
    def frobnicate(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @frobnicate.register_fake
    def _(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    class Custom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return frobnicate(frobnicate(x)) + 1

    p = profile(Custom(), torch.randn(3))
    assert p.report.uncounted_ops == (("opscope_test.frobnicate", 2),)
    assert p.total_ops == 3  # the addition
    assert "no formula for these operators: opscope_test.frobnicate ×2" in " ".join(notes(p.report))
    assert p.to_dict()["uncounted_ops"] == [{"op": "opscope_test.frobnicate", "calls": 2}]


def test_the_capture_reads_no_tensor_data() -> None:
    from helpers import OpLog

    model = Functional()
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    with OpLog() as bare:
        model(x, y)
    with Profiler(model), OpLog() as profiled:
        model(x, y)
    assert profiled.ops == bare.ops  # no .item(), copy or sync added


class _Doubled(nn.Linear):
    """A subclass that overrides its counted type's forward, adding work of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def test_a_subclass_overriding_forward_is_counted_by_its_types_formula_unless_excluded() -> None:
    """As the README says: the type's formula, on the call's shapes (the product by 2 is not
    seen); excluded, the subclass is counted by its operators, the product included."""
    model, x = _Doubled(4, 3), torch.randn(5, 4)
    linear = 5 * 3 * (2 * 4)  # 4 products and 3 additions per output, and the bias
    with Profiler(model) as p:
        model(x)
    assert [(r.family, r.ops) for r in p.records] == [("Linear", linear)]
    with Profiler(model, exclude=[_Doubled]) as q:
        model(x)
    assert q.total_ops == linear + 5 * 3
