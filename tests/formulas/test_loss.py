"""The losses: each module's count equals its operators' count (whole in inference mode,
decomposed under no_grad) and a brute force, torch's evaluation redone in counting scalars
whose values are checked against torch's; 0 MACs, as FlopCounterMode counts them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from formulas.op_harness import GRAD_MODES, count_ops, flop_counter_flops
from formulas.scalar_oracle import Counted, Tally, exp, log, maximum, minimum, norm, sqrt, total
from helpers import profiled_ops
from torch import nn

from opscope import Profiler
from opscope.formulas.loss import (
    CrossEntropyConfig,
    cross_entropy_ops,
    element_wise_loss_ops,
    nll_loss_ops,
    reduce_ops,
)
from opscope.formulas.registry import formula_for

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using a target size"),  # MSELoss broadcast on purpose
    pytest.mark.filterwarnings("ignore:`NLLLoss2d` has been deprecated"),
    pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss"),  # KLDivLoss
]

REDUCTIONS = ("mean", "sum", "none")
N, C = 4, 5


def data(seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs and targets of every case, in float64."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64)

    def signs(*shape: int) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=generator).double() * 2 - 1

    return {
        "x": randn(N, C), "y": randn(N, C), "z": randn(N, C),
        "p": rand(N, C) * 0.9 + 0.05, "t": rand(N, C), "w": rand(C) + 0.5,
        "classes": torch.randint(0, C, (N,), generator=generator),
        "signs": signs(N, C), "signs1": signs(N), "x1": randn(N), "x2": randn(N),
        "x4": randn(2, C, 3, 2), "classes4": torch.randint(0, C, (2, 3, 2), generator=generator),
    }  # fmt: skip


# name: (module factory taking the reduction and the data, the call's inputs from the data)
Factory = Callable[[str, dict[str, torch.Tensor]], nn.Module]
CASES: dict[str, tuple[Factory, Callable[[dict[str, torch.Tensor]], tuple[Any, ...]]]] = {
    "MSELoss": (lambda r, d: nn.MSELoss(reduction=r), lambda d: (d["x"], d["y"])),
    "MSELoss (broadcast)": (lambda r, d: nn.MSELoss(reduction=r), lambda d: (d["x"], d["y"][:1])),
    "L1Loss": (lambda r, d: nn.L1Loss(reduction=r), lambda d: (d["x"], d["y"])),
    "SmoothL1Loss": (lambda r, d: nn.SmoothL1Loss(reduction=r, beta=0.5), lambda d: (d["x"], d["y"])),
    "SmoothL1Loss(beta=0)": (
        lambda r, d: nn.SmoothL1Loss(reduction=r, beta=0.0), lambda d: (d["x"], d["y"])
    ),
    "HuberLoss": (lambda r, d: nn.HuberLoss(reduction=r, delta=0.7), lambda d: (d["x"], d["y"])),
    "SoftMarginLoss": (lambda r, d: nn.SoftMarginLoss(reduction=r), lambda d: (d["x"], d["signs"])),
    "BCELoss": (lambda r, d: nn.BCELoss(reduction=r), lambda d: (d["p"], d["t"])),
    "BCELoss(weight)": (
        lambda r, d: nn.BCELoss(weight=d["w"], reduction=r), lambda d: (d["p"], d["t"])
    ),
    "BCEWithLogitsLoss": (lambda r, d: nn.BCEWithLogitsLoss(reduction=r), lambda d: (d["x"], d["t"])),
    "BCEWithLogitsLoss(weight, pos_weight)": (
        lambda r, d: nn.BCEWithLogitsLoss(weight=d["w"], pos_weight=d["w"] * 2, reduction=r),
        lambda d: (d["x"], d["t"]),
    ),
    "NLLLoss": (lambda r, d: nn.NLLLoss(reduction=r), lambda d: (d["x"], d["classes"])),
    "NLLLoss(weight)": (
        lambda r, d: nn.NLLLoss(weight=d["w"], reduction=r), lambda d: (d["x"], d["classes"])
    ),
    "NLLLoss(4-D, weight)": (
        lambda r, d: nn.NLLLoss(weight=d["w"], reduction=r), lambda d: (d["x4"], d["classes4"])
    ),
    "NLLLoss2d": (lambda r, d: nn.NLLLoss2d(reduction=r), lambda d: (d["x4"], d["classes4"])),
    "CrossEntropyLoss": (
        lambda r, d: nn.CrossEntropyLoss(reduction=r), lambda d: (d["x"], d["classes"])
    ),
    "CrossEntropyLoss(unbatched)": (
        lambda r, d: nn.CrossEntropyLoss(reduction=r), lambda d: (d["x"][0], d["classes"][0])
    ),
    "CrossEntropyLoss(weight, label_smoothing)": (
        lambda r, d: nn.CrossEntropyLoss(weight=d["w"], label_smoothing=0.1, reduction=r),
        lambda d: (d["x"], d["classes"]),
    ),
    "CrossEntropyLoss(4-D, label_smoothing)": (
        lambda r, d: nn.CrossEntropyLoss(label_smoothing=0.2, reduction=r),
        lambda d: (d["x4"], d["classes4"]),
    ),
    "CrossEntropyLoss(probabilities)": (
        lambda r, d: nn.CrossEntropyLoss(reduction=r), lambda d: (d["x"], d["t"].softmax(1))
    ),
    "CrossEntropyLoss(probabilities, weight, label_smoothing)": (
        lambda r, d: nn.CrossEntropyLoss(weight=d["w"], label_smoothing=0.1, reduction=r),
        lambda d: (d["x"], d["t"].softmax(1)),
    ),
    "KLDivLoss": (
        lambda r, d: nn.KLDivLoss(reduction=r), lambda d: (d["x"].log_softmax(1), d["p"])
    ),
    "KLDivLoss(log_target)": (
        lambda r, d: nn.KLDivLoss(reduction=r, log_target=True), lambda d: (d["x"], d["y"])
    ),
    "PoissonNLLLoss": (lambda r, d: nn.PoissonNLLLoss(reduction=r), lambda d: (d["x"], d["t"])),
    "PoissonNLLLoss(full, not log_input)": (
        lambda r, d: nn.PoissonNLLLoss(log_input=False, full=True, reduction=r),
        lambda d: (d["p"], d["t"] * 3 + 0.1),
    ),
    "GaussianNLLLoss": (
        lambda r, d: nn.GaussianNLLLoss(reduction=r), lambda d: (d["x"], d["y"], d["p"])
    ),
    "GaussianNLLLoss(one variance per row, full)": (
        lambda r, d: nn.GaussianNLLLoss(full=True, reduction=r),
        lambda d: (d["x"], d["y"], d["p"][:, 0]),
    ),
    "GaussianNLLLoss(float variance)": (
        lambda r, d: nn.GaussianNLLLoss(reduction=r), lambda d: (d["x"], d["y"], 0.5)
    ),
    "HingeEmbeddingLoss": (
        lambda r, d: nn.HingeEmbeddingLoss(reduction=r), lambda d: (d["x"], d["signs"])
    ),
    "MarginRankingLoss": (
        lambda r, d: nn.MarginRankingLoss(margin=0.1, reduction=r),
        lambda d: (d["x1"], d["x2"], d["signs1"]),
    ),
    "CosineEmbeddingLoss": (
        lambda r, d: nn.CosineEmbeddingLoss(margin=0.2, reduction=r),
        lambda d: (d["x"], d["y"], d["signs1"]),
    ),
    "CosineEmbeddingLoss(unbatched)": (
        lambda r, d: nn.CosineEmbeddingLoss(reduction=r),
        lambda d: (d["x"][0], d["y"][0], d["signs1"][0]),
    ),
    "MultiMarginLoss": (
        lambda r, d: nn.MultiMarginLoss(margin=10.0, reduction=r), lambda d: (d["x"], d["classes"])
    ),
    "MultiMarginLoss(p=2, weight)": (
        lambda r, d: nn.MultiMarginLoss(p=2, margin=10.0, weight=d["w"], reduction=r),
        lambda d: (d["x"], d["classes"]),
    ),
    "MultiLabelSoftMarginLoss": (
        lambda r, d: nn.MultiLabelSoftMarginLoss(reduction=r),
        lambda d: (d["x"], (d["t"] > 0.5).double()),
    ),
    "MultiLabelSoftMarginLoss(weight)": (
        lambda r, d: nn.MultiLabelSoftMarginLoss(weight=d["w"], reduction=r),
        lambda d: (d["x"], (d["t"] > 0.5).double()),
    ),
    "TripletMarginLoss": (
        lambda r, d: nn.TripletMarginLoss(reduction=r), lambda d: (d["x"], d["y"], d["z"])
    ),
    "TripletMarginLoss(p=1, swap)": (
        lambda r, d: nn.TripletMarginLoss(p=1, swap=True, reduction=r),
        lambda d: (d["x"], d["y"], d["z"]),
    ),
}  # fmt: skip


def built(name: str, reduction: str, seed: int = 0) -> tuple[nn.Module, tuple[Any, ...]]:
    factory, inputs = CASES[name]
    values = data(seed)
    return factory(reduction, values), inputs(values)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", CASES)
def test_the_module_counts_what_its_operators_count(name: str, reduction: str) -> None:
    module, inputs = built(name, reduction)
    with Profiler(module) as profiler:
        module(*inputs)
    (record,) = profiler.records
    assert formula_for(type(module)) is not None and record.macs == 0
    for grad_mode in GRAD_MODES:
        counts = count_ops(lambda: module(*inputs), grad_mode)
        assert not counts.uncounted
        assert (counts.ops, counts.macs) == (record.ops, 0), (grad_mode, counts.by_op)


@pytest.mark.parametrize("name", CASES)
def test_flop_counter_counts_nothing(name: str) -> None:
    module, inputs = built(name, "mean")
    assert flop_counter_flops(lambda: module(*inputs)) == 0


# -- brute force ----------------------------------------------------------------------------


def scalars(tensor: torch.Tensor, tally: Tally) -> list[Counted]:
    return [Counted(float(value), tally) for value in tensor.flatten().tolist()]


def reduced(values: list[Counted], reduction: str) -> list[Counted]:
    """``values`` reduced: a sum, the sum divided by their number, or all of them."""
    if reduction == "none":
        return values
    summed = total(values)
    return [summed / len(values) if reduction == "mean" else summed]


def element_wise(
    definition: Callable[..., Counted], operands: Sequence[torch.Tensor], reduction: str
) -> tuple[list[float], int]:
    """``definition`` at every element of the broadcast operands, each on a tally of its own:
    the costliest element's count for every element (a piecewise definition is charged its
    costliest piece), then the reduction."""
    shape = torch.broadcast_shapes(*(operand.shape for operand in operands))
    columns = [operand.expand(shape).flatten().tolist() for operand in operands]
    values, costs = [], []
    for element in zip(*columns, strict=True):
        tally = Tally()
        values.append(definition(*(Counted(float(v), tally) for v in element)).value)
        costs.append(tally.ops)
    tally = Tally()
    result = reduced([Counted(v, tally) for v in values], reduction)
    return [r.value for r in result], max(costs) * len(values) + tally.ops


def log1p(x: Counted) -> Counted:
    return x.apply(math.log1p)


def log_sigmoid(x: Counted) -> Counted:
    return -log(1 + exp(-x))


def smooth_l1(beta: float) -> Callable[[Counted, Counted], Counted]:
    def definition(a: Counted, b: Counted) -> Counted:
        z = abs(a - b)
        return 0.5 * z * z / beta if z < beta else z - 0.5 * beta  # 0.5 * beta: a constant

    return definition


def huber(delta: float) -> Callable[[Counted, Counted], Counted]:
    def definition(a: Counted, b: Counted) -> Counted:
        z = abs(a - b)
        return 0.5 * z * z if z < delta else delta * (z - 0.5 * delta)

    return definition


def squared_difference(a: Counted, b: Counted) -> Counted:
    difference = a - b
    return difference * difference


def bce(x: Counted, y: Counted, w: Counted | None = None) -> Counted:
    loss = (y - 1) * maximum(log1p(-x), -100) - y * maximum(log(x), -100)
    return loss if w is None else loss * w


ELEMENT_WISE: dict[str, Callable[[nn.Module], Callable[..., Counted]]] = {
    "MSELoss": lambda m: squared_difference,
    "MSELoss (broadcast)": lambda m: squared_difference,
    "L1Loss": lambda m: lambda a, b: abs(a - b),
    "SmoothL1Loss": lambda m: smooth_l1(m.beta),
    "SmoothL1Loss(beta=0)": lambda m: lambda a, b: abs(a - b),
    "HuberLoss": lambda m: huber(m.delta),
    "SoftMarginLoss": lambda m: lambda x, y: log1p(exp(-x * y)),
    "BCELoss": lambda m: bce,
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", [*ELEMENT_WISE, "BCELoss(weight)"])
def test_element_wise_losses_equal_a_brute_force_count(name: str, reduction: str) -> None:
    module, inputs = built(name, reduction)
    if name == "BCELoss(weight)":
        operands, definition = (*inputs, module.weight), bce
    else:
        operands, definition = inputs, ELEMENT_WISE[name](module)
    values, ops = element_wise(definition, operands, reduction)
    assert_brute_force(module, inputs, values, ops)


def assert_brute_force(
    module: nn.Module, inputs: tuple[Any, ...], values: list[float], ops: int
) -> None:
    """The module's output is the brute force's values, its profiled count the brute
    force's."""
    expected = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(module(*inputs).flatten(), expected)
    assert profiled_ops(module, *inputs) == ops


def log_softmax(row: list[Counted]) -> list[Counted]:
    """``x_i - log(sum_j exp(x_j))``: 3 per element (the stabilising maximum not counted)."""
    log_sum = log(total([exp(value) for value in row]))
    return [value - log_sum for value in row]


def class_rows(x: torch.Tensor, tally: Tally) -> list[list[Counted]]:
    """The class vectors of ``(N, C, *)`` (or ``(C,)``) scores, class axis last."""
    moved = x if x.dim() == 1 else x.movedim(1, -1)
    return [scalars(row, tally) for row in moved.reshape(-1, moved.shape[-1])]


def brute_force_cross_entropy(
    module: nn.Module, x: torch.Tensor, target: torch.Tensor, *, log_probabilities: bool = False
) -> tuple[list[float], int]:
    """torch's cross entropy (and its ``nll_loss`` alone, on log-probabilities) on class
    indices: the log-softmax, the picked (weighted) log-probabilities, their reduction, and
    with label smoothing the smoothed losses, the ignore mask and the mix of the two."""
    tally, reduction = Tally(), module.reduction
    weight = None if module.weight is None else module.weight.tolist()
    smoothing = getattr(module, "label_smoothing", 0.0)
    rows = class_rows(x, tally)
    logp = rows if log_probabilities else [log_softmax(row) for row in rows]
    classes = target.flatten().tolist()
    picked = [row[c] if weight is None else row[c] * weight[c] for row, c in zip(logp, classes)]
    losses = [-value for value in picked]
    if reduction == "mean" and weight is not None:  # divided by the total weight
        nll = [total(losses) / total([Counted(weight[c], tally) for c in classes])]
    else:
        nll = reduced(losses, reduction)
    if not smoothing:
        return [v.value for v in nll], tally.ops
    n_classes = len(logp[0])
    smooth = [
        -total(row if weight is None else [v * w for v, w in zip(row, weight)]) for row in logp
    ]
    tally.ops += len(classes)  # target == ignore_index
    if reduction == "mean":
        if weight is None:
            tally.ops += len(classes)  # ~mask
            kept = total([Counted(1.0, tally) for _ in classes])
        else:
            kept = total([Counted(weight[c], tally) for c in classes])
        smooth = [total(smooth) / kept]
    elif reduction == "sum":
        smooth = [total(smooth)]
    mixed = [
        (1 - smoothing) * n + s * (smoothing / n_classes) for n, s in zip(nll, smooth, strict=True)
    ]
    return [v.value for v in mixed], tally.ops


def brute_force_soft_cross_entropy(
    module: nn.Module, x: torch.Tensor, target: torch.Tensor
) -> tuple[list[float], int]:
    """torch's cross entropy on class probabilities."""
    tally, reduction = Tally(), module.reduction
    weight, smoothing = module.weight, module.label_smoothing
    logp = [log_softmax(row) for row in class_rows(x, tally)]
    probabilities = class_rows(target, tally)
    n_classes = len(logp[0])
    if smoothing:
        probabilities = [
            [p * (1 - smoothing) + smoothing / n_classes for p in row] for row in probabilities
        ]
    products = [[lp * p for lp, p in zip(a, b, strict=True)] for a, b in zip(logp, probabilities)]
    if weight is not None:
        products = [[v * w for v, w in zip(row, weight.tolist())] for row in products]
    if reduction == "none":
        return [-total(row).value for row in products], tally.ops
    summed = -total([v for row in products for v in row])
    result = summed / len(products) if reduction == "mean" else summed
    return [result.value], tally.ops


def brute_force_bce_with_logits(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[float], int]:
    """``(1 - y) * x - log_sigmoid(x) * ((pw - 1) * y + 1)``, times the weight."""
    tally = Tally()
    pos_weight = None if module.pos_weight is None else scalars(module.pos_weight, tally)
    shifted = None if pos_weight is None else [pw - 1 for pw in pos_weight]  # once per class
    weight = None if module.weight is None else module.weight.tolist()
    losses = []
    for index, (xi, yi) in enumerate(zip(scalars(x, tally), scalars(y, tally))):
        ls = log_sigmoid(xi)
        if shifted is not None:
            ls = ls * (shifted[index % len(shifted)] * yi + 1)
        loss = (1 - yi) * xi - ls
        losses.append(loss if weight is None else loss * weight[index % len(weight)])
    return [v.value for v in reduced(losses, module.reduction)], tally.ops


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "name",
    [name for name in CASES if name.startswith(("NLLLoss", "CrossEntropyLoss", "BCEWithLogits"))],
)
def test_class_losses_equal_a_brute_force_count(name: str, reduction: str) -> None:
    module, (x, target) = built(name, reduction)
    if name.startswith("BCEWithLogits"):
        values, ops = brute_force_bce_with_logits(module, x, target)
    elif "probabilities" in name:
        values, ops = brute_force_soft_cross_entropy(module, x, target)
    else:
        nll = isinstance(module, nn.NLLLoss)
        values, ops = brute_force_cross_entropy(module, x, target, log_probabilities=nll)
    assert_brute_force(module, (x, target), values, ops)


Outcome = tuple[list[float], int]


def _finish(losses: list[Counted], reduction: str, tally: Tally) -> Outcome:
    return [v.value for v in reduced(losses, reduction)], tally.ops


def brute_force_kl_div(module: nn.Module, inputs: tuple[Any, ...], tally: Tally) -> Outcome:
    x, y = (scalars(t, tally) for t in inputs)
    if module.log_target:
        losses = [exp(b) * (b - a) for a, b in zip(x, y)]
    else:
        losses = [b * log(b) - b * a for a, b in zip(x, y)]  # xlogy(y, y): 2 each
    if module.reduction == "batchmean":
        return [(total(losses) / inputs[0].shape[0]).value], tally.ops
    return _finish(losses, module.reduction, tally)


def brute_force_poisson_nll(module: nn.Module, inputs: tuple[Any, ...], tally: Tally) -> Outcome:
    x, y = (scalars(t, tally) for t in inputs)
    losses = []
    for a, b in zip(x, y):
        loss = exp(a) - b * a if module.log_input else a - b * log(a + module.eps)
        if module.full:
            stirling = b * log(b) - b + 0.5 * log(2 * math.pi * b)
            kept = b > 1  # torch's mask, y <= 1: one comparison
            loss = loss + (stirling if kept else Counted(0.0, tally))
        losses.append(loss)
    return _finish(losses, module.reduction, tally)


def brute_force_gaussian_nll(module: nn.Module, inputs: tuple[Any, ...], tally: Tally) -> Outcome:
    x, y, var = inputs
    if isinstance(var, float):
        var = var * torch.ones_like(x)
        tally.ops += x.numel()  # var * ones_like(input)
    else:
        var = var.unsqueeze(-1) if var.dim() == x.dim() - 1 else var
        negative = [v < 0 for v in scalars(var, tally)]  # torch's check: a comparison each
        tally.ops += len(negative) - 1  # any(): the logical or of the comparisons
        assert not any(negative)
    clamped = [maximum(v, module.eps) for v in scalars(var, tally)]
    logs = [log(v) for v in clamped]
    width, columns = var.shape[-1], x.shape[-1]
    losses = []
    for index, (a, b) in enumerate(zip(scalars(x, tally), scalars(y, tally))):
        j = index // columns * width + index % width  # the variance of this element
        difference = a - b
        loss = 0.5 * (logs[j] + difference * difference / clamped[j])
        losses.append(loss + 0.5 * math.log(2 * math.pi) if module.full else loss)
    return _finish(losses, module.reduction, tally)


def selected(condition: bool, value: Counted, tally: Tally) -> Counted:
    """``where(condition, value, 0)``: one comparison (made by the caller), no arithmetic."""
    return value if condition else Counted(0.0, tally)


def brute_force_hinge(module: nn.Module, inputs: tuple[Any, ...], tally: Tally) -> Outcome:
    losses = []
    for a, b in zip(*(scalars(t, tally) for t in inputs)):
        tally.ops += 2  # y != 1, y != -1
        margin_term = maximum(module.margin - a, 0.0)
        losses.append(
            selected(b.value != 1, margin_term, tally) + selected(b.value != -1, a, tally)
        )
    return _finish(losses, module.reduction, tally)


def brute_force_margin_ranking(module: nn.Module, inputs: tuple[Any, ...], tally: Tally) -> Outcome:
    x1, x2, y = (scalars(t, tally) for t in inputs)
    losses = [maximum(-c * (a - b) + module.margin, 0.0) for a, b, c in zip(x1, x2, y)]
    return _finish(losses, module.reduction, tally)


def brute_force_cosine_embedding(
    module: nn.Module, inputs: tuple[Any, ...], tally: Tally
) -> Outcome:
    x1, x2, y = inputs
    losses = []
    for a, b, label in zip(class_rows(x1, tally), class_rows(x2, tally), y.flatten().tolist()):
        dot = total([u * v for u, v in zip(a, b)])
        squares1 = total([u * u for u in a]) + 1e-12
        squares2 = total([v * v for v in b]) + 1e-12
        cos = dot / sqrt(squares1 * squares2)
        positive, negative = 1 - cos, maximum(cos - module.margin, 0.0)
        tally.ops += 2  # y == 1, y == -1
        losses.append(
            selected(label == 1, positive, tally) + selected(label == -1, negative, tally)
        )
    return _finish(losses, module.reduction, tally)


def brute_force_multi_margin(module: nn.Module, inputs: tuple[Any, ...], tally: Tally) -> Outcome:
    x, target = inputs
    weight = None if module.weight is None else module.weight.tolist()
    losses = []
    for row, c in zip(class_rows(x, tally), target.tolist()):
        terms = []
        for j, value in enumerate(row):
            if j == c:
                continue
            z = module.margin - row[c] + value
            assert z > 0  # a margin of 10: every term takes the costlier piece
            h = z * z if module.p == 2 else z
            terms.append(h if weight is None else h * weight[c])
        losses.append(total(terms) / len(row))
    return _finish(losses, module.reduction, tally)


def brute_force_multilabel_soft_margin(
    module: nn.Module, inputs: tuple[Any, ...], tally: Tally
) -> Outcome:
    x, y = inputs
    weight = None if module.weight is None else module.weight.tolist()
    losses = []
    for row, labels in zip(class_rows(x, tally), class_rows(y, tally)):
        terms = [-(b * log_sigmoid(a) + (1 - b) * log_sigmoid(-a)) for a, b in zip(row, labels)]
        if weight is not None:
            terms = [term * w for term, w in zip(terms, weight)]
        losses.append(total(terms) / len(row))
    return _finish(losses, module.reduction, tally)


def brute_force_triplet_margin(module: nn.Module, inputs: tuple[Any, ...], tally: Tally) -> Outcome:
    def distance(u: list[Counted], v: list[Counted]) -> Counted:
        return norm([s - t + module.eps for s, t in zip(u, v)], module.p)

    losses = []
    for a, p, n in zip(*(class_rows(t, tally) for t in inputs)):
        to_negative = distance(a, n)
        if module.swap:
            to_negative = minimum(to_negative, distance(p, n))
        losses.append(maximum(module.margin + distance(a, p) - to_negative, 0.0))
    return _finish(losses, module.reduction, tally)


OTHERS: dict[str, Callable[[nn.Module, tuple[Any, ...], Tally], Outcome]] = {
    "KLDivLoss": brute_force_kl_div,
    "PoissonNLLLoss": brute_force_poisson_nll,
    "GaussianNLLLoss": brute_force_gaussian_nll,
    "HingeEmbeddingLoss": brute_force_hinge,
    "MarginRankingLoss": brute_force_margin_ranking,
    "CosineEmbeddingLoss": brute_force_cosine_embedding,
    "MultiMarginLoss": brute_force_multi_margin,
    "MultiLabelSoftMarginLoss": brute_force_multilabel_soft_margin,
    "TripletMarginLoss": brute_force_triplet_margin,
}
"""The remaining losses' brute forces, each as torch computes the loss, by module type."""


@pytest.mark.parametrize(
    "name, reduction",
    [
        (name, reduction)
        for name in CASES
        if name.split("(")[0] in OTHERS
        for reduction in (*REDUCTIONS, *(("batchmean",) if name.startswith("KLDiv") else ()))
    ],
)
def test_other_losses_equal_a_brute_force_count(name: str, reduction: str) -> None:
    module, inputs = built(name, reduction)
    values, ops = OTHERS[type(module).__name__](module, inputs, Tally())
    assert_brute_force(module, inputs, values, ops)


# -- hand-computed counts and settings --------------------------------------------------------


def test_hand_computed() -> None:
    # MSELoss on 20 elements: 2 each, then the mean (19 additions, 1 division)
    assert element_wise_loss_ops(20, 2, "mean") == 40 + 20
    assert [reduce_ops(1, r) for r in ("none", "sum", "mean")] == [0, 0, 1]
    # NLLLoss over 4 samples with a weight: 4 products, 3 + 3 additions, 1 division
    assert nll_loss_ops(4, weight=True, reduction="mean") == 4 + 3 + 3 + 1
    assert nll_loss_ops(4, weight=False, reduction="none") == 0  # a pick and a sign flip
    # CrossEntropyLoss on (4, 5): log-softmax 3 * 20, then NLLLoss's mean 4
    assert cross_entropy_ops((4, 5), (4,), weight=False, reduction="mean", label_smoothing=0) == 64
    # probabilities: log-softmax 60, products 20, the mean 20
    probabilities = cross_entropy_ops(
        (4, 5), (4, 5), weight=False, reduction="mean", label_smoothing=0
    )
    assert probabilities == 60 + 20 + 20


def test_ignored_targets_make_an_upper_bound() -> None:
    """A sample whose class is ``ignore_index`` is skipped by torch: the count, which cannot
    read the targets, charges it as any other (an upper bound)."""
    x, classes = torch.randn(4, 5), torch.tensor([0, -100, 2, -100])
    module = nn.CrossEntropyLoss()
    assert profiled_ops(module, x, classes) == profiled_ops(module, x, torch.tensor([0, 1, 2, 3]))


def test_configs_in_records() -> None:
    module = nn.CrossEntropyLoss(weight=torch.ones(5), label_smoothing=0.25, reduction="sum")
    with Profiler(module) as profiler:
        module(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))
    assert profiler.records[0].config == CrossEntropyConfig("sum", True, 0.25)
