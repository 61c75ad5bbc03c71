"""Cosine similarity, pairwise distance and pdist against torch's evaluation reimplemented in
counted scalars (values checked against torch's), and hand-computed counts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from formulas.op_harness import count_ops
from formulas.scalar_oracle import Counted, Tally, maximum, norm, total
from helpers import profiled_ops
from torch import nn

import opscope.formulas.distance  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.distance import (
    CosineSimilarityConfig,
    PairwiseDistanceConfig,
    cosine_similarity_ops,
    pairwise_distance_ops,
    pdist_ops,
)

ORDERS = [2.0, 1.0, 3.0, 0.0, math.inf, -math.inf]


def vectors(x: torch.Tensor, axis: int, tally: Tally) -> list[list[Counted]]:
    """The vectors of ``x`` along ``axis``, as counted scalars."""
    rows = x.movedim(axis, -1).reshape(-1, x.shape[axis]).tolist()
    return [[Counted(float(v), tally) for v in row] for row in rows]


def brute_force_cosine(
    x1: torch.Tensor, x2: torch.Tensor, dim: int, eps: float
) -> tuple[torch.Tensor, int]:
    """torch's cosine_similarity: each input divided by its 2-norm clamped below by eps, then
    the products summed."""
    a, b = torch.broadcast_tensors(x1, x2)
    axis = dim % a.dim()
    tally = Tally()
    values = []
    for u, v in zip(vectors(a, axis, tally), vectors(b, axis, tally), strict=True):
        u_norm, v_norm = maximum(norm(u, 2), eps), maximum(norm(v, 2), eps)
        values.append(total([(p / u_norm) * (q / v_norm) for p, q in zip(u, v, strict=True)]).value)
    shape = a.movedim(axis, -1).shape[:-1]
    return torch.tensor(values, dtype=a.dtype).reshape(shape), tally.ops


def brute_force_pairwise(
    x1: torch.Tensor, x2: torch.Tensor, order: float, eps: float
) -> tuple[torch.Tensor, int]:
    """torch's pairwise_distance: the ``order``-norm of ``x1 - x2 + eps`` over the last axis."""
    a, b = torch.broadcast_tensors(x1, x2)
    tally = Tally()
    values = [
        norm([p - q + eps for p, q in zip(u, v, strict=True)], order).value
        for u, v in zip(vectors(a, -1, tally), vectors(b, -1, tally), strict=True)
    ]
    return torch.tensor(values, dtype=a.dtype).reshape(a.shape[:-1]), tally.ops


def random_pair(
    shape1: tuple[int, ...], shape2: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(shape1, dtype=torch.float64), torch.randn(shape2, dtype=torch.float64)


def assert_brute_force(
    module: nn.Module, x1: torch.Tensor, x2: torch.Tensor, brute_force: tuple[torch.Tensor, int]
) -> int:
    """Check ``module(x1, x2)`` against the brute force's values and its profiled count
    against the brute force's; return that count."""
    expected, brute_ops = brute_force
    torch.testing.assert_close(module(x1, x2), expected)
    assert profiled_ops(module, x1, x2) == brute_ops
    return brute_ops


@pytest.mark.parametrize(
    "shape1, shape2, dim",
    [
        ((4, 5), (4, 5), 1),
        ((3, 4, 5), (1, 4, 5), 1),  # x2 broadcast: torch normalises the expanded copy
        ((2, 3), (3,), -1),
        ((6,), (6,), 0),
        ((2, 3, 4), (2, 3, 1), 0),
    ],
)
def test_cosine_similarity_equals_a_brute_force_count(
    shape1: tuple[int, ...], shape2: tuple[int, ...], dim: int
) -> None:
    x1, x2 = random_pair(shape1, shape2)
    module = nn.CosineSimilarity(dim=dim, eps=1e-6)
    brute_ops = assert_brute_force(module, x1, x2, brute_force_cosine(x1, x2, dim, 1e-6))
    assert count_ops(lambda: module(x1, x2)).ops == brute_ops


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "shape1, shape2", [((4, 5), (4, 5)), ((3, 5), (5,)), ((2, 3, 4), (3, 4)), ((4,), (4,))]
)
def test_pairwise_distance_equals_a_brute_force_count(
    order: float, shape1: tuple[int, ...], shape2: tuple[int, ...]
) -> None:
    x1, x2 = random_pair(shape1, shape2)
    module = nn.PairwiseDistance(p=order, eps=1e-6)
    brute_ops = assert_brute_force(module, x1, x2, brute_force_pairwise(x1, x2, order, 1e-6))
    keepdim = nn.PairwiseDistance(p=order, keepdim=True)
    assert profiled_ops(keepdim, x1, x2) == brute_ops


@pytest.mark.parametrize("order", [order for order in ORDERS if order >= 0])  # as torch
@pytest.mark.parametrize("grad_mode", ["inference_mode", "no_grad"])
def test_pdist_equals_a_brute_force_count(order: float, grad_mode: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64)
    tally = Tally()
    rows = vectors(x, 1, tally)
    distances = [
        norm([p - q for p, q in zip(rows[i], rows[j], strict=True)], order).value
        for i, j in itertools.combinations(range(len(rows)), 2)
    ]
    torch.testing.assert_close(torch.pdist(x, order), torch.tensor(distances, dtype=x.dtype))
    counts = count_ops(lambda: torch.pdist(x, order), grad_mode)
    assert not counts.uncounted
    assert counts.ops == tally.ops == pdist_ops(5, 3, order)


def test_hand_computed() -> None:
    # 8D + 1 per output
    assert cosine_similarity_ops((2, 3), (2, 3), dim=1) == 2 * (8 * 3 + 1)
    # 2 per element, then p = 2: 2D per output; p = 1: D - 1; p = 0: 2D - 1
    assert pairwise_distance_ops((2, 3), (3,), norm=2.0) == 12 + 2 * 6
    assert pairwise_distance_ops((2, 3), (3,), norm=1.0) == 12 + 2 * 2
    assert pairwise_distance_ops((2, 3), (3,), norm=0.0) == 12 + 2 * 5
    # 3 pairs of 2-vectors: 2 subtractions and 2 * 2 for each 2-norm
    assert pdist_ops(3, 2, norm=2.0) == 3 * (2 + 4)
    assert pdist_ops(1, 4, norm=2.0) == 0


def test_configs_in_records() -> None:
    cosine, distance = nn.CosineSimilarity(dim=0, eps=0.1), nn.PairwiseDistance(p=3, eps=0)
    x = torch.randn(4, 2)
    with Profiler(nn.ModuleList([cosine, distance])) as p:
        cosine(x, x)
        distance(x, x)
    assert [r.config for r in p.records] == [
        CosineSimilarityConfig(dim=0),
        PairwiseDistanceConfig(norm=3.0),
    ]
