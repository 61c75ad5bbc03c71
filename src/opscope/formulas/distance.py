"""Distances: cosine similarity, pairwise distance, pdist, cdist, counted as torch computes them.

None of them has a kernel of its own except ``pdist`` and ``cdist``: ``cosine_similarity`` and
``pairwise_distance`` are compositions of ATen operators (norms, divisions, products, sums),
the only implementation on every device, so their count is the count of those operators, and
the module, its functional form, and the operators it decomposes into agree exactly.

* ``CosineSimilarity(dim, eps)``: torch broadcasts ``x1`` and ``x2``, divides each by its
  2-norm along ``dim`` clamped below by ``eps`` (more stable than dividing the dot product by
  the product of the norms), multiplies and sums. Per output, over ``D`` elements::

      2 norms (2D each) + 2 clamps + 2D divisions + D products + (D - 1) additions = 8D + 1

* ``PairwiseDistance(p, eps, keepdim)``: ``norm(x1 - x2 + eps, p)`` over the last dimension
  of the broadcast inputs: 2 per element, then the norm's count per output
  (:func:`~opscope.formulas.reduction.vector_norm_per_group`).
* ``torch.pdist(x, p)`` (``_pdist_forward``): for each of the ``N (N - 1) / 2`` pairs of rows
  of an ``(N, M)`` input, ``M`` subtractions and the ``p``-norm of the differences.

* ``torch.cdist(x1, x2, p)``, as torch computes it: each of the ``B * P * R`` distances
  between the rows of ``(*, P, M)`` and ``(*, R, M)`` directly (``_cdist_forward``: ``M``
  subtractions and the ``p``-norm, like ``pdist``), or, for ``p = 2`` on more than 25 rows or
  with ``compute_mode='use_mm_for_euclid_dist'``, through a matrix product
  (``_euclidean_dist``: squared norms, ``[-2 x1, |x1|^2, 1] @ [x2, 1, |x2|^2]^T``, a clamp at 0
  and a square root).

The ATen operators ``cosine_similarity``, ``pairwise_distance``, ``pdist``,
``_pdist_forward``, ``cdist``, ``_cdist_forward`` and ``_euclidean_dist`` are counted by the
same functions (``family="distance"``), with 0 MACs: ``FlopCounterMode`` counts none of them
(not even the product inside ``_euclidean_dist``, an operator that does not decompose).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from opscope.formulas.linear import matmul_ops
from opscope.formulas.reduction import OPS_PER_GROUP, reduction_ops, vector_norm_per_group
from opscope.formulas.registry import Call, OpCall, Shape, aten_ops, register, register_op


def _broadcast(x1: Sequence[int], x2: Sequence[int]) -> Shape:
    return tuple(torch.broadcast_shapes(tuple(x1), tuple(x2)))


def _groups(shape: Shape, axis: int) -> int:
    """The number of vectors along ``axis`` of ``shape`` (the product of the other sizes)."""
    return math.prod(size for index, size in enumerate(shape) if index != axis)


def cosine_similarity_ops(x1: Sequence[int], x2: Sequence[int], dim: int) -> int:
    """Operations of ``cosine_similarity(x1, x2, dim)`` as torch evaluates it, on the broadcast
    shape of ``x1`` and ``x2`` with ``G`` vectors of ``D`` elements along ``dim``::

        ops = 2 * G * 2D      the two 2-norms (D squares, D - 1 additions, 1 root each)
            + 2 * G           clamping each norm below by eps
            + 2 * G * D       dividing x1 and x2 by their norms
            + G * D           the products
            + G * (D - 1)     their sums
            = G * (8D + 1)

    Example (CosineSimilarity(dim=1) of (8, 128) and (8, 128)):
        >>> cosine_similarity_ops((8, 128), (8, 128), dim=1)
        8200
    """
    shape = _broadcast(x1, x2)
    groups = _groups(shape, dim % len(shape))
    numel = math.prod(shape)
    norms = 2 * reduction_ops(numel, groups, vector_norm_per_group(2.0))
    return norms + 2 * groups + 3 * numel + reduction_ops(numel, groups, OPS_PER_GROUP["sum"])


def pairwise_distance_ops(x1: Sequence[int], x2: Sequence[int], norm: float) -> int:
    """Operations of ``pairwise_distance(x1, x2, p=norm)``, ``norm(x1 - x2 + eps, p)`` over
    the last dimension of their broadcast shape (``G`` vectors of ``D`` elements)::

        ops = 2 * G * D + G * norm_p(D)

    one subtraction and one addition of ``eps`` per element, then the ``p``-norm of each
    vector (``2D`` for ``p = 2``; see :func:`~opscope.formulas.reduction.vector_norm_per_group`).

    Example (PairwiseDistance() of (8, 128) and (8, 128)):
        >>> pairwise_distance_ops((8, 128), (8, 128), norm=2.0)
        4096
    """
    shape = _broadcast(x1, x2)
    numel = math.prod(shape)
    groups = _groups(shape, len(shape) - 1) if shape else 1
    return 2 * numel + reduction_ops(numel, groups, vector_norm_per_group(norm))


def pair_distances_ops(pairs: int, length: int, norm: float) -> int:
    """Operations of ``pairs`` distances between two vectors of ``length`` elements, each
    computed directly: ``length`` subtractions, then the ``p``-norm of the differences::

        ops = pairs * (length + norm_p(length))

    >>> pair_distances_ops(10, 3, norm=2.0)  # 10 pairs, 3 + 6 each
    90
    """
    elements = pairs * length
    return elements + reduction_ops(elements, pairs, vector_norm_per_group(norm))


def pdist_ops(rows: int, length: int, norm: float) -> int:
    """Operations of ``torch.pdist`` on ``rows`` vectors of ``length`` elements, one distance
    per pair of rows (``P = rows * (rows - 1) / 2``): :func:`pair_distances_ops`::

        ops = P * (length + norm_p(length))

    Example (pdist of (5, 3), p = 2: 10 pairs, 3 + 6 each):
        >>> pdist_ops(5, 3, norm=2.0)
        90
    """
    return pair_distances_ops(rows * (rows - 1) // 2, length, norm)


MM_FOR_EUCLID_ROWS = 25
"""``cdist``'s default mode computes ``p = 2`` distances with a matrix product when either
input has more rows than this."""


def uses_mm_for_euclid(norm: float, compute_mode: int | None, rows1: int, rows2: int) -> bool:
    """Whether ``cdist`` computes its distances with a matrix product (``_euclidean_dist``):
    ``p = 2`` and ``compute_mode`` 1 (``'use_mm_for_euclid_dist'``), or the default (``None``
    or 0, ``'use_mm_for_euclid_dist_if_necessary'``) on more than 25 rows; mode 2
    (``'donot_use_mm_for_euclid_dist'``) never does.

    >>> uses_mm_for_euclid(2.0, None, 30, 5), uses_mm_for_euclid(2.0, 2, 30, 5)
    (True, False)
    """
    mode = compute_mode or 0
    large = rows1 > MM_FOR_EUCLID_ROWS or rows2 > MM_FOR_EUCLID_ROWS
    return norm == 2 and (mode == 1 or (mode == 0 and large))


def euclidean_dist_ops(x1: Sequence[int], x2: Sequence[int]) -> int:
    """Operations of ``_euclidean_dist(x1, x2)``, the matrix-product form of the ``p = 2``
    distances between the ``P`` rows of ``x1`` ``(*, P, M)`` and the ``R`` rows of ``x2``
    ``(*, R, M)`` (their batch dims broadcast to ``B`` pairs of matrices), as torch computes
    it: ``x1_ = [-2 x1, |x1|^2, 1]``, ``x2_ = [x2, 1, |x2|^2]``, then
    ``sqrt(clamp_min(x1_ @ x2_^T, 0))``::

        ops = numel(x1) * 3 - rows(x1)    squares, their sums, the -2 scaling
            + numel(x2) * 2 - rows(x2)    squares, their sums
            + B * P * R * (2(M + 2) - 1)  the product (the padding's 1s and norms included)
            + B * P * R * 2               the clamp at 0 and the square root

    with ``numel`` and ``rows`` those of the arguments as given (a broadcast batch is not
    normed twice).

    Example (30 rows against 5 rows of 4: 30 * 11 + 5 * 7 + 150 * 13):
        >>> euclidean_dist_ops((30, 4), (5, 4))
        2315
    """
    batch = math.prod(_broadcast(x1[:-2], x2[:-2]))
    rows1, rows2, length = x1[-2], x2[-2], x1[-1]
    norms = sum(
        math.prod(shape)
        + reduction_ops(math.prod(shape), math.prod(shape[:-1]), OPS_PER_GROUP["sum"])
        for shape in (x1, x2)
    )
    outputs = batch * rows1 * rows2
    return norms + math.prod(x1) + batch * matmul_ops(rows1, length + 2, rows2) + 2 * outputs


def cdist_ops(x1: Sequence[int], x2: Sequence[int], norm: float, compute_mode: int | None) -> int:
    """Operations of ``torch.cdist(x1, x2, p=norm)`` on ``(*, P, M)`` and ``(*, R, M)`` (batch
    dims broadcast to ``B``), by the path torch takes (:func:`uses_mm_for_euclid`): the
    matrix-product form :func:`euclidean_dist_ops` on the broadcast inputs, or each of the
    ``B * P * R`` distances directly (:func:`pair_distances_ops`)::

        direct:  ops = B * P * R * (M + norm_p(M))

    (0 for an empty output, and for ``M = 0``, whose distances torch fills with 0).

    >>> cdist_ops((3, 4), (5, 4), 2.0, None), cdist_ops((30, 4), (5, 4), 2.0, None)
    (180, 2315)
    """
    batch = math.prod(_broadcast(x1[:-2], x2[:-2]))
    rows1, rows2, length = x1[-2], x2[-2], x1[-1]
    if not batch * rows1 * rows2 * length:
        return 0
    if uses_mm_for_euclid(norm, compute_mode, rows1, rows2):
        return euclidean_dist_ops((batch, rows1, length), (batch, rows2, length))
    return pair_distances_ops(batch * rows1 * rows2, length, norm)


@dataclass(frozen=True)
class CosineSimilarityConfig:
    """The dimension an ``nn.CosineSimilarity`` reduces (``eps`` changes values, not the
    count)."""

    dim: int

    @classmethod
    def from_module(cls, module: nn.Module) -> CosineSimilarityConfig:
        """Read the settings of an ``nn.CosineSimilarity``."""
        return cls(dim=int(module.dim))


@dataclass(frozen=True)
class PairwiseDistanceConfig:
    """The norm order ``p`` of an ``nn.PairwiseDistance`` (``eps`` is always added, whatever
    its value; ``keepdim`` only shapes the output)."""

    norm: float

    @classmethod
    def from_module(cls, module: nn.Module) -> PairwiseDistanceConfig:
        """Read the settings of an ``nn.PairwiseDistance``."""
        return cls(norm=float(module.norm))


@register(nn.CosineSimilarity, describe=CosineSimilarityConfig.from_module)
def count_cosine_similarity(config: CosineSimilarityConfig, call: Call) -> int:
    """Operations of one ``nn.CosineSimilarity(x1, x2)`` call: :func:`cosine_similarity_ops`."""
    x1, x2 = call.inputs[:2]
    return cosine_similarity_ops(x1, x2, config.dim)


@register(nn.PairwiseDistance, describe=PairwiseDistanceConfig.from_module)
def count_pairwise_distance(config: PairwiseDistanceConfig, call: Call) -> int:
    """Operations of one ``nn.PairwiseDistance(x1, x2)`` call: :func:`pairwise_distance_ops`."""
    x1, x2 = call.inputs[:2]
    return pairwise_distance_ops(x1, x2, config.norm)


# -- ATen operators -----------------------------------------------------------------------


@register_op(*aten_ops("cosine_similarity"), family="distance")
def count_cosine_similarity_op(call: OpCall) -> int:
    """``cosine_similarity(x1, x2, dim=1, eps=1e-8)``: :func:`cosine_similarity_ops`."""
    return cosine_similarity_ops(call.input, call.args[1].shape, int(call.arg(2, "dim", 1)))


@register_op(*aten_ops("pairwise_distance"), family="distance")
def count_pairwise_distance_op(call: OpCall) -> int:
    """``pairwise_distance(x1, x2, p=2, eps=1e-6, keepdim=False)``:
    :func:`pairwise_distance_ops`."""
    return pairwise_distance_ops(call.input, call.args[1].shape, float(call.arg(2, "p", 2.0)))


@register_op(*aten_ops("pdist", "_pdist_forward"), family="distance")
def count_pdist_op(call: OpCall) -> int:
    """``pdist(self, p=2)`` / ``_pdist_forward(self, p=2)`` on an ``(N, M)`` input:
    :func:`pdist_ops`."""
    rows, length = call.input
    return pdist_ops(rows, length, float(call.arg(1, "p", 2.0)))


@register_op(*aten_ops("cdist", "_cdist_forward"), family="distance")
def count_cdist_op(call: OpCall) -> int:
    """``cdist(x1, x2, p=2, compute_mode=None)`` / ``_cdist_forward(x1, x2, p, compute_mode)``:
    :func:`cdist_ops`, whichever path the call takes. 0 MACs: ``FlopCounterMode`` counts
    neither operator (nor the product inside ``_euclidean_dist``, which does not decompose)."""
    return cdist_ops(
        call.input, call.args[1].shape, float(call.arg(2, "p", 2.0)), call.arg(3, "compute_mode")
    )


@register_op(*aten_ops("_euclidean_dist"), family="distance")
def count_euclidean_dist_op(call: OpCall) -> int:
    """``_euclidean_dist(x1, x2)``, what ``cdist`` runs for ``p = 2`` on large inputs:
    :func:`euclidean_dist_ops`. 0 MACs, as ``FlopCounterMode`` counts it."""
    return euclidean_dist_ops(call.input, call.args[1].shape)
