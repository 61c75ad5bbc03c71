"""Distances: cosine similarity, pairwise distance, pdist, counted as torch computes them.

None of them has a kernel of its own except ``pdist``: ``cosine_similarity`` and
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

The ATen operators ``cosine_similarity``, ``pairwise_distance``, ``pdist`` and
``_pdist_forward`` are counted by the same functions (``family="distance"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

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


def pdist_ops(rows: int, length: int, norm: float) -> int:
    """Operations of ``torch.pdist`` on ``rows`` vectors of ``length`` elements, one distance
    per pair of rows (``P = rows * (rows - 1) / 2``)::

        ops = P * (length + norm_p(length))

    ``length`` subtractions per pair, then the ``p``-norm of the differences.

    Example (pdist of (5, 3), p = 2: 10 pairs, 3 + 6 each):
        >>> pdist_ops(5, 3, norm=2.0)
        90
    """
    pairs = rows * (rows - 1) // 2
    elements = pairs * length
    return elements + reduction_ops(elements, pairs, vector_norm_per_group(norm))


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
