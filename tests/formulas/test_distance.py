"""Cosine similarity, pairwise distance and pdist against torch's evaluation reimplemented in
counted scalars (values checked against torch's), and hand-computed counts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from formulas.op_harness import count_ops, flop_counter_flops
from formulas.scalar_oracle import Counted, Tally, maximum, norm, sqrt, total
from helpers import profiled_ops
from torch import nn

import opscope.formulas.distance  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.distance import (
    CosineSimilarityConfig,
    PairwiseDistanceConfig,
    cdist_ops,
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


def brute_force_cdist(
    x1: torch.Tensor, x2: torch.Tensor, order: float, mm: bool
) -> tuple[torch.Tensor, int]:
    """torch's cdist on 3-D inputs (batch dims broadcast first): every distance directly, or,
    with ``mm``, as ``_euclidean_dist`` computes them: the squared norms, the rows
    ``[-2 x1, |x1|^2, 1]`` and ``[x2, 1, |x2|^2]``, their dot products, clamped at 0, rooted."""
    batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
    a, b = x1.expand(*batch, *x1.shape[-2:]), x2.expand(*batch, *x2.shape[-2:])
    tally = Tally()
    values = []
    for left, right in zip(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), strict=True):
        rows1, rows2 = vectors(left, 1, tally), vectors(right, 1, tally)
        if mm:
            rows1 = [[u * -2 for u in row] + [total([u * u for u in row]), 1.0] for row in rows1]
            rows2 = [[*row, 1.0, total([v * v for v in row])] for row in rows2]
            values += [
                sqrt(maximum(total([u * v for u, v in zip(p, q, strict=True)]), 0.0)).value
                for p in rows1
                for q in rows2
            ]
        else:
            values += [
                norm([u - v for u, v in zip(p, q, strict=True)], order).value
                for p in rows1
                for q in rows2
            ]
    shape = (*batch, x1.shape[-2], x2.shape[-2])
    return torch.tensor(values, dtype=x1.dtype).reshape(shape), tally.ops


CDIST_SHAPES = [((3, 4), (5, 4)), ((2, 3, 4), (2, 5, 4)), ((1, 3, 2), (2, 4, 2)), ((4, 1), (2, 1))]


@pytest.mark.parametrize("order", [order for order in ORDERS if order >= 0])  # as torch
@pytest.mark.parametrize("shape1, shape2", CDIST_SHAPES)
@pytest.mark.parametrize("grad_mode", ["inference_mode", "no_grad"])
def test_cdist_equals_a_brute_force_count(
    order: float, shape1: tuple[int, ...], shape2: tuple[int, ...], grad_mode: str
) -> None:
    x1, x2 = random_pair(shape1, shape2)
    expected, brute_ops = brute_force_cdist(x1, x2, order, mm=False)
    torch.testing.assert_close(torch.cdist(x1, x2, order), expected)
    counts = count_ops(lambda: torch.cdist(x1, x2, order), grad_mode)
    assert not counts.uncounted and counts.macs == 0
    assert counts.ops == brute_ops == cdist_ops(shape1, shape2, order, None)


@pytest.mark.parametrize(
    "shape1, shape2, mode",
    [
        ((30, 3), (4, 3), "use_mm_for_euclid_dist_if_necessary"),  # more than 25 rows
        ((2, 3, 4), (2, 5, 4), "use_mm_for_euclid_dist"),
        ((1, 3, 2), (2, 26, 2), "use_mm_for_euclid_dist_if_necessary"),  # a broadcast batch
    ],
)
@pytest.mark.parametrize("grad_mode", ["inference_mode", "no_grad"])
def test_cdist_by_matrix_product_equals_a_brute_force_count(
    shape1: tuple[int, ...], shape2: tuple[int, ...], mode: str, grad_mode: str
) -> None:
    x1, x2 = random_pair(shape1, shape2)
    expected, brute_ops = brute_force_cdist(x1, x2, 2.0, mm=True)
    torch.testing.assert_close(torch.cdist(x1, x2, compute_mode=mode), expected)
    counts = count_ops(lambda: torch.cdist(x1, x2, compute_mode=mode), grad_mode)
    assert not counts.uncounted and counts.macs == 0
    assert counts.ops == brute_ops
    direct = count_ops(lambda: torch.cdist(x1, x2, compute_mode="donot_use_mm_for_euclid_dist"))
    assert direct.ops == brute_force_cdist(x1, x2, 2.0, mm=False)[1]


def test_cdist_operators_called_directly() -> None:
    """``_cdist_forward`` takes the product path itself on large inputs in the default mode;
    ``_euclidean_dist`` norms its arguments as given (a broadcast batch once);
    ``FlopCounterMode`` counts none of them: 0 MACs."""
    x1, x2 = random_pair((30, 3), (4, 3))
    forward = count_ops(lambda: torch.ops.aten._cdist_forward(x1, x2, 2.0, None))
    assert forward.ops == brute_force_cdist(x1, x2, 2.0, mm=True)[1]
    a, b = random_pair((1, 3, 2), (4, 5, 2))
    counts = count_ops(lambda: torch.ops.aten._euclidean_dist(a, b))
    squares_a, squares_b = 3 * (2 + 1), 4 * 5 * (2 + 1)  # per row: M squares, M - 1 additions
    products = 4 * 3 * 5 * (2 * (2 + 2) - 1 + 2)  # B * P * R: dot of M + 2, clamp, root
    assert counts.ops == squares_a + 3 * 2 + squares_b + products  # + the -2 scaling of a
    assert counts.macs == 0 == flop_counter_flops(lambda: torch.ops.aten._euclidean_dist(a, b))
    assert flop_counter_flops(lambda: torch.cdist(x1, x2)) == 0


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
    # cdist: 15 pairs of 4-vectors, directly (4 + 8 each); nothing for empty or 0-wide rows
    assert cdist_ops((3, 4), (5, 4), norm=2.0, compute_mode=None) == 15 * 12
    assert cdist_ops((3, 4), (5, 4), norm=1.0, compute_mode=1) == 15 * (4 + 3)
    assert cdist_ops((0, 4), (5, 4), 2.0, None) == cdist_ops((3, 0), (5, 0), 2.0, None) == 0
    # by matrix product (30 rows): norms 30 * (3 * 4 - 1) + 5 * (2 * 4 - 1), then 150 * 13
    assert cdist_ops((30, 4), (5, 4), 2.0, None) == 330 + 35 + 150 * 13
    assert cdist_ops((30, 4), (5, 4), 2.0, 2) == 150 * 12


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
