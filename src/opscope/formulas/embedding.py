"""Embeddings: a lookup is free; bag reductions, per-sample weights and ``max_norm`` are not.

* ``nn.Embedding`` copies one row of its table per index: 0 operations.
* ``nn.EmbeddingBag`` looks up ``n`` rows of ``D`` values and reduces them into ``B`` bags, per
  column: ``mode='sum'`` adds (``b - 1`` additions for a bag of ``b`` rows), ``'max'``
  compares (``b - 1`` comparisons), ``'mean'`` adds and divides once (``b``), and
  ``per_sample_weights`` (``'sum'`` only) multiplies every looked-up value first (``n * D``).
  The bags' sizes are data (``offsets``), but their total is ``n``: see
  :func:`embedding_bag_ops` for what is exact and what is a bound.
* ``max_norm`` (either module) renormalises, in place and before the lookup, every row the call
  reads whose ``norm_type``-norm exceeds ``max_norm``: which rows, and whether they exceed, is
  data. It is counted as an upper bound, :func:`renorm_ops`.

The ATen operators: ``embedding`` counts 0 (``memory`` family); ``embedding_renorm_`` is
counted by :func:`renorm_ops`; ``embedding_bag``, ``_embedding_bag`` and
``_embedding_bag_forward_only`` by :func:`embedding_bag_ops`, reading the mode, the
per-sample weights and the shapes from their arguments (``family="embedding"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

from torch import nn

from opscope.formulas.reduction import reduction_ops, vector_norm_per_group
from opscope.formulas.registry import Call, OpCall, aten_ops, register, register_op

RESCALE_OPS = 2
"""Per renormalised row, before its ``D`` multiplications: ``scale = max_norm / (norm + 1e-7)``,
one addition and one division."""


def renorm_ops(indices: int, dim: int, norm_type: float) -> int:
    """Upper bound on the operations of ``embedding_renorm_`` over ``indices`` looked-up rows
    of ``dim`` values (torch's in-place ``max_norm`` renormalisation)::

        ops = indices * (norm(D) + 1 + 2 + D)

    Per row: its ``norm_type``-norm (:func:`~opscope.formulas.reduction.vector_norm_per_group`:
    ``2D`` for ``p = 2``), one comparison with ``max_norm``, and, if the norm exceeds it, the
    scale ``max_norm / (norm + 1e-7)`` (2) and ``D`` multiplications. torch computes the norm
    once per *distinct* index and rescales only the rows that exceed, so this is exact when
    the call's indices are distinct and every row they pick exceeds ``max_norm``, and an upper
    bound otherwise: which rows repeat or exceed is data, and a count is a function of shapes.

    Example (8 indices into a table of 16-dimensional rows, p = 2):
        >>> renorm_ops(8, 16, 2.0)
        408
    """
    norms = reduction_ops(indices * dim, indices, vector_norm_per_group(norm_type))
    return norms + indices * (1 + RESCALE_OPS + dim)


EMBEDDING_BAG_MODES: tuple[str, ...] = ("sum", "mean", "max")
"""The bag reductions, in the order of ATen's integer ``mode`` argument (0, 1, 2)."""


def embedding_bag_ops(mode: str, indices: int, bags: int, dim: int, weighted: bool) -> int:
    """Operations of reducing ``n = indices`` looked-up rows of ``D = dim`` values into
    ``B = bags`` bags::

        sum, max:  ops = max(n - B, 0) * D    (b - 1 additions / comparisons per bag of b rows)
        mean:      ops = n * D                (b - 1 additions + 1 division per bag)
        + n * D multiplications with per_sample_weights ('sum' only)

    Exact when no bag is empty, which always holds for a 2-D input (``B`` bags of ``n / B``).
    With ``offsets`` a bag may be empty (equal consecutive offsets); its output is zeros and
    costs nothing, so ``'sum'`` and ``'max'`` do ``D`` more operations per empty bag than
    counted (the count is then a lower bound), while ``'mean'`` stays exact. Entries equal to
    ``padding_idx`` are skipped by torch and counted as values here (an upper bound).

    Example (EmbeddingBag(10, 3, mode='mean') on 6 indices in 2 bags):
        >>> embedding_bag_ops("mean", indices=6, bags=2, dim=3, weighted=False)
        18
        >>> embedding_bag_ops("sum", indices=6, bags=2, dim=3, weighted=True)
        30
    """
    if mode not in EMBEDDING_BAG_MODES:
        raise ValueError(f"unknown EmbeddingBag mode {mode!r}")
    reduced = indices if mode == "mean" else max(indices - bags, 0)
    return (reduced + indices * int(weighted)) * dim


@dataclass(frozen=True)
class EmbeddingConfig:
    """The settings of an ``nn.Embedding`` that matter to its count: ``max_norm`` (None: no
    renormalisation) and its ``norm_type``. The row size is the output's last dimension."""

    max_norm: float | None
    norm_type: float

    @classmethod
    def from_module(cls, module: nn.Module) -> EmbeddingConfig:
        """Read the renormalisation settings of an ``nn.Embedding`` (or ``nn.EmbeddingBag``)."""
        max_norm = module.max_norm
        return cls(
            max_norm=None if max_norm is None else float(max_norm),
            norm_type=float(module.norm_type),
        )

    def renorm_ops(self, indices: int, dim: int) -> int:
        """:func:`renorm_ops` when ``max_norm`` is set, else 0."""
        return 0 if self.max_norm is None else renorm_ops(indices, dim, self.norm_type)


@dataclass(frozen=True)
class EmbeddingBagConfig(EmbeddingConfig):
    """The settings of an ``nn.EmbeddingBag``: the reduction ``mode`` (``'sum'``, ``'mean'``,
    ``'max'``) besides the renormalisation's. ``include_last_offset`` and ``padding_idx`` are
    not kept: the first only sets the number of bags, which the output's shape carries, and
    the second is data-dependent (see :func:`embedding_bag_ops`)."""

    mode: str

    @classmethod
    def from_module(cls, module: nn.Module) -> EmbeddingBagConfig:
        """Read the settings of an ``nn.EmbeddingBag``."""
        base = EmbeddingConfig.from_module(module)
        return cls(max_norm=base.max_norm, norm_type=base.norm_type, mode=str(module.mode))


@register(nn.Embedding, describe=EmbeddingConfig.from_module)
def count_embedding(config: EmbeddingConfig, call: Call) -> int:
    """Operations of one ``nn.Embedding`` call: 0 for the lookup, plus :func:`renorm_ops`
    over the ``numel(input)`` indices when ``max_norm`` is set."""
    return config.renorm_ops(math.prod(call.input), call.output[-1])


@register(nn.EmbeddingBag, describe=EmbeddingBagConfig.from_module)
def count_embedding_bag(config: EmbeddingBagConfig, call: Call) -> int:
    """Operations of one ``nn.EmbeddingBag`` call: :func:`embedding_bag_ops` for the ``(B, D)``
    output, plus :func:`renorm_ops` when ``max_norm`` is set.

    The call's tensors are the indices, then ``offsets`` (required with a 1-D input, refused
    with a 2-D one), then ``per_sample_weights`` if given, in whatever order they were passed:
    the weights are there when one tensor more than the indices and offsets was passed.
    """
    indices = math.prod(call.input)
    bags, dim = call.output
    weighted = len(call.inputs) > (2 if len(call.input) == 1 else 1)
    bag_ops = embedding_bag_ops(config.mode, indices, bags, dim, weighted)
    return bag_ops + config.renorm_ops(indices, dim)


# -- ATen operators -----------------------------------------------------------------------


@register_op(*aten_ops("embedding_renorm_"), family="embedding")
def count_embedding_renorm(call: OpCall) -> int:
    """``embedding_renorm_(self, indices, max_norm, norm_type)``: :func:`renorm_ops` over
    ``numel(indices)`` rows of ``self.shape[1]`` values."""
    dim = call.input[1]
    return renorm_ops(math.prod(call.args[1].shape), dim, float(call.arg(3, "norm_type")))


OP_MODES: Mapping[int, str] = MappingProxyType(dict(enumerate(EMBEDDING_BAG_MODES)))
"""ATen's integer ``mode`` argument of the embedding-bag operators, by name."""


@register_op(
    *aten_ops("embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"), family="embedding"
)
def count_embedding_bag_op(call: OpCall) -> int:
    """``embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode, sparse,
    per_sample_weights, include_last_offset, padding_idx)`` (and ``_embedding_bag``,
    ``_embedding_bag_forward_only``): :func:`embedding_bag_ops` for the first output, ``(B, D)``,
    the indices flattened (a 2-D input reaches the operator as 1-D indices and offsets)."""
    bags, dim = call.output
    return embedding_bag_ops(
        OP_MODES[int(call.arg(4, "mode", 0))],
        math.prod(call.args[1].shape),
        bags,
        dim,
        weighted=call.tensor(6, "per_sample_weights") is not None,
    )


# -- Backward pass (ATen ops) ----------------------------------------------------------------


@register_op(*aten_ops("embedding_dense_backward"), family="embedding")
def count_embedding_dense_backward(call: OpCall) -> int:
    """``embedding_dense_backward(grad_output, indices, num_weights, padding_idx,
    scale_grad_by_freq)``: the gradient of each of the ``n = numel(indices)`` lookups, a row of
    ``D`` values, added into the weight's gradient at its row (``n * D`` additions, the first
    into the zeroed gradient included: which rows repeat is data), each row first scaled by
    ``1 / frequency`` with ``scale_grad_by_freq`` (``n * D`` multiplications). Lookups of
    ``padding_idx``, which torch skips, are counted like the others (an upper bound, as for the
    forward's renormalisation)."""
    looked_up = math.prod(call.args[0].shape)
    return looked_up * (1 + int(bool(call.arg(4, "scale_grad_by_freq", False))))


def count_embedding_bag_backward(positions: tuple[int, int, int], call: OpCall) -> int:
    """The backward of an embedding bag for the weight, its ``scale_grad_by_freq``, ``mode``
    and ``per_sample_weights`` at ``positions``: the gradient of each bag, ``D`` values, added
    into the weight's gradient at the rows the bag reduced, into the zeroed gradient, as
    :func:`count_embedding_dense_backward` does:

    * ``'sum'``, ``'mean'``: at each of the ``n`` looked-up rows, ``n * D`` additions; first
      divided by the bag's size for ``'mean'``, multiplied by the lookup's weight with
      ``per_sample_weights`` and by ``1 / frequency`` with ``scale_grad_by_freq`` (``n * D``
      operations each);
    * ``'max'``: at each bag's maximal row, per column: ``B * D`` additions.
    """
    bags, dim = call.input
    scale_by_freq, mode, weights = (
        call.arg(index, name)
        for index, name in zip(positions, ("scale_grad_by_freq", "mode", "per_sample_weights"))
    )
    if OP_MODES[int(mode)] == "max":
        return bags * dim
    scalings = int(OP_MODES[int(mode)] == "mean") + int(weights is not None)
    return math.prod(call.args[1].shape) * dim * (1 + scalings + int(bool(scale_by_freq)))


# _embedding_bag_backward(grad, indices, offsets, offset2bag, bag_size, maximum_indices,
# num_weights, scale_grad_by_freq, mode, sparse, per_sample_weights, padding_idx)
register_op(*aten_ops("_embedding_bag_backward"), family="embedding")(
    partial(count_embedding_bag_backward, (7, 8, 10))
)
# _embedding_bag_dense_backward(grad, indices, offset2bag, bag_size, maximum_indices,
# num_weights, scale_grad_by_freq, mode, per_sample_weights, padding_idx)
register_op(*aten_ops("_embedding_bag_dense_backward"), family="embedding")(
    partial(count_embedding_bag_backward, (6, 7, 8))
)


@register_op(*aten_ops("_embedding_bag_per_sample_weights_backward"), family="embedding")
def count_embedding_bag_weights_backward(call: OpCall) -> int:
    """``_embedding_bag_per_sample_weights_backward(grad, weight, indices, offsets,
    offset2bag, mode, padding_idx)``: the gradient of each lookup's weight, the dot product of
    its bag's gradient with its row, ``n`` dot products of ``D`` pairs."""
    return math.prod(call.args[2].shape) * max(2 * call.input[-1] - 1, 0)
