"""Embeddings against brute-force reimplementations that count their own work: the bag
reductions of EmbeddingBag, and max_norm's renormalisation (an upper bound, exact when every
index is distinct and every row exceeds max_norm)."""

from __future__ import annotations

import math

import pytest
import torch
from formulas.scalar_oracle import Counted, Tally, largest, norm, total
from helpers import profiled_ops
from torch import nn

import opscope.formulas.embedding  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.embedding import (
    EmbeddingBagConfig,
    EmbeddingConfig,
    embedding_bag_ops,
    renorm_ops,
)


@pytest.mark.parametrize(
    "module, indices",
    [
        (nn.Embedding(10, 4), torch.tensor([[1, 2, 2], [3, 4, 9]])),
        (nn.Embedding(10, 4, padding_idx=0), torch.tensor([0, 2, 0, 5])),
        (nn.Embedding(10, 4, scale_grad_by_freq=True), torch.tensor(3)),
        (nn.Embedding.from_pretrained(torch.randn(5, 3)), torch.tensor([[[4]], [[0]]])),
    ],
)
def test_a_lookup_counts_nothing(module: nn.Module, indices: torch.Tensor) -> None:
    with Profiler(module) as p:
        module(indices)
    (record,) = p.records
    assert record.ops == 0
    assert record.config == EmbeddingConfig(max_norm=None, norm_type=2.0)


def test_configs_in_records() -> None:
    module = nn.EmbeddingBag(10, 3, mode="max", max_norm=2, norm_type=1)
    with Profiler(module) as p:
        module(torch.tensor([[1, 2], [3, 4]]))
    assert p.records[0].config == EmbeddingBagConfig(max_norm=2.0, norm_type=1.0, mode="max")


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        embedding_bag_ops("median", indices=4, bags=2, dim=3, weighted=False)


# ---------------------------------------------------------------------------------------------
# max_norm: torch's embedding_renorm_ in counted scalars (sorted distinct indices, each row's
# norm, a comparison, the rescale of a row that exceeds), checked against the renormalised table.


def brute_force_renorm(
    weight: torch.Tensor, indices: torch.Tensor, max_norm: float, norm_type: float
) -> tuple[torch.Tensor, int]:
    tally = Tally()
    renormed = weight.clone()
    for index in sorted(set(indices.reshape(-1).tolist())):
        row = [Counted(float(v), tally) for v in weight[index]]
        row_norm = norm(row, norm_type)
        if row_norm > max_norm:
            scale = max_norm / (row_norm + 1e-7)
            renormed[index] = torch.tensor([(value * scale).value for value in row])
    return renormed, tally.ops


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize(
    "indices, exact",
    [
        (torch.tensor([[3, 0, 7], [5, 1, 2]]), True),  # distinct, every row too long
        (torch.tensor([3, 3, 7, 3]), False),  # repeated rows: their norm is computed once
    ],
    ids=["distinct", "repeated"],
)
def test_max_norm_is_a_brute_force_upper_bound(
    norm_type: float, indices: torch.Tensor, exact: bool
) -> None:
    torch.manual_seed(0)
    module = nn.Embedding(8, 5, max_norm=0.5, norm_type=norm_type)
    nn.init.uniform_(module.weight, 1.0, 2.0)  # every row's norm exceeds 0.5
    weight = module.weight.detach().clone()
    expected_weight, brute_ops = brute_force_renorm(weight, indices, 0.5, norm_type)
    ops = profiled_ops(module, indices)
    torch.testing.assert_close(module.weight.detach(), expected_weight)
    assert ops == renorm_ops(indices.numel(), 5, norm_type)
    assert (ops == brute_ops) if exact else (ops > brute_ops)


def test_max_norm_rows_within_the_bound_are_not_rescaled() -> None:
    """Rows whose norm is within max_norm skip the rescale: the bound counts it anyway."""
    module = nn.Embedding(8, 5, max_norm=100.0)
    indices = torch.tensor([0, 1, 2])
    weight = module.weight.detach().clone()
    renormed, brute_ops = brute_force_renorm(weight, indices, 100.0, 2.0)
    assert torch.equal(renormed, weight)
    assert profiled_ops(module, indices) == brute_ops + 3 * (2 + 5)


# ---------------------------------------------------------------------------------------------
# EmbeddingBag: each bag reduced column by column in counted scalars.


def brute_force_bags(
    weight: torch.Tensor,
    bags: list[list[int]],
    mode: str,
    weights: list[list[float]] | None,
    padding_idx: int | None = None,
) -> tuple[torch.Tensor, int]:
    tally = Tally()
    rows = []
    for bag_index, bag in enumerate(bags):
        kept = [(i, position) for position, i in enumerate(bag) if i != padding_idx]
        if not kept:  # torch's output for an empty bag: zeros, nothing computed
            rows.append([0.0] * weight.shape[1])
            continue
        row = []
        for column in range(weight.shape[1]):
            values = [Counted(float(weight[i, column]), tally) for i, _ in kept]
            if weights is not None:
                values = [
                    v * weights[bag_index][position]
                    for v, (_, position) in zip(values, kept, strict=True)
                ]
            if mode == "max":
                result = largest(values)
            else:
                result = total(values)
                if mode == "mean":
                    result = result / len(values)
            row.append(result.value)
        rows.append(row)
    return torch.tensor(rows, dtype=weight.dtype), tally.ops


BAG_SIZES = [3, 1, 4, 2]  # non-empty bags of different sizes


def bag_inputs(
    layout: str, weighted: bool
) -> tuple[dict[str, torch.Tensor | None], list[list[int]], list[list[float]] | None]:
    """The keyword arguments of an EmbeddingBag call in ``layout``, its bags' indices, and their
    per-sample weights (None when not ``weighted``)."""
    if layout == "2-D":
        indices = torch.randint(0, 12, (4, 3))
        weights = torch.rand(4, 3) if weighted else None
        kwargs = {"input": indices, "per_sample_weights": weights}
        return kwargs, indices.tolist(), None if weights is None else weights.tolist()
    indices = torch.randint(0, 12, (sum(BAG_SIZES),))
    weights = torch.rand(indices.shape) if weighted else None
    starts = [sum(BAG_SIZES[:i]) for i in range(len(BAG_SIZES))]
    if layout == "last offset":  # the last offset ends the last bag
        starts.append(len(indices))
    kwargs = {"input": indices, "offsets": torch.tensor(starts), "per_sample_weights": weights}
    bags = [part.tolist() for part in indices.split(BAG_SIZES)]
    return kwargs, bags, None if weights is None else [w.tolist() for w in weights.split(BAG_SIZES)]


@pytest.mark.parametrize(
    "mode, weighted", [("sum", False), ("mean", False), ("max", False), ("sum", True)]
)
@pytest.mark.parametrize("layout", ["offsets", "last offset", "2-D"])
def test_embedding_bag_equals_a_brute_force_count(mode: str, weighted: bool, layout: str) -> None:
    torch.manual_seed(0)
    module = nn.EmbeddingBag(12, 5, mode=mode, include_last_offset=layout == "last offset")
    kwargs, bags, bag_weights = bag_inputs(layout, weighted)
    expected, brute_ops = brute_force_bags(module.weight.detach(), bags, mode, bag_weights)
    with Profiler(module) as p:
        output = module(**kwargs)
    torch.testing.assert_close(output, expected)
    assert p.records[0].ops == brute_ops


def test_keyword_order_does_not_matter() -> None:
    module = nn.EmbeddingBag(12, 5, mode="sum")
    indices, offsets, weights = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 2]), torch.rand(4)
    ops = profiled_ops(module, indices, offsets, weights)
    assert ops == profiled_ops(module, indices, per_sample_weights=weights, offsets=offsets)
    assert ops == embedding_bag_ops("sum", indices=4, bags=2, dim=5, weighted=True)
    assert profiled_ops(module, indices, offsets) == (4 - 2) * 5


@pytest.mark.parametrize("mode, difference", [("sum", 5), ("max", 5), ("mean", 0)])
def test_empty_bags_are_counted_as_documented(mode: str, difference: int) -> None:
    """An empty bag (equal offsets) costs nothing, so 'sum' and 'max' do D more operations per
    empty bag than counted (a lower bound), while 'mean' stays exact."""
    module = nn.EmbeddingBag(12, 5, mode=mode)
    indices, offsets = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([0, 2, 2, 5])
    bags = [[1, 2], [], [3, 4, 5], []]
    _, brute_ops = brute_force_bags(module.weight.detach(), bags, mode, None)
    assert profiled_ops(module, indices, offsets) == brute_ops - 2 * difference


def test_padding_entries_are_counted_as_values() -> None:
    """torch skips entries equal to padding_idx: the count is then an upper bound."""
    module = nn.EmbeddingBag(12, 5, mode="sum", padding_idx=0)
    indices = torch.tensor([[1, 0, 3], [0, 4, 5]])
    expected, brute_ops = brute_force_bags(
        module.weight.detach(), indices.tolist(), "sum", None, padding_idx=0
    )
    torch.testing.assert_close(module(indices), expected)
    assert profiled_ops(module, indices) == brute_ops + 2 * 5


def test_bag_renormalisation_is_counted_too() -> None:
    module = nn.EmbeddingBag(12, 5, mode="mean", max_norm=1.0)
    indices = torch.tensor([[1, 2], [3, 4]])
    assert profiled_ops(module, indices) == 4 * 5 + renorm_ops(4, 5, 2.0)
