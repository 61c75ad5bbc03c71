"""Multi-head attention: every multiplication, addition, division and ``exp`` of the call.

``nn.MultiheadAttention`` is counted as a whole, from the shapes of its call: the three input
projections, the query scaling, the scaled dot products, the masks, the softmax, the
attention-weighted sums, the output projection and, when the weights are returned averaged,
the mean over heads. Attention dropout counts 0, in training as in eval, like ``nn.Dropout``.
The terms, and why each is counted the way it is, are in ``docs/formulas/attention.md``.

Its core, softmax(q k^T * scale + mask) v, is also counted on its own, for
``F.scaled_dot_product_attention`` and the fused kernels torch runs it with
(:func:`attention_ops`): the query scaled, the scores, one addition per score for a mask (a
causal mask included), the softmax over the keys, the weighted sums of the values.

MACs are the products ``FlopCounterMode`` counts (halved): the projections' ``mm``/``addmm``
and the two batched products of the attention, ``q k^T`` and ``weights @ v``.

The fused fast paths are counted as the modules they stand for: ``_native_multi_head_attention``
as ``nn.MultiheadAttention``, and ``_transformer_encoder_layer_fwd`` (family ``transformer``)
as the slow path of ``nn.TransformerEncoderLayer``: its attention, two LayerNorms, two Linears,
activation and residual additions (:class:`EncoderLayerSettings`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from opscope.formulas.activation import GELU_OPS_PER_ELEMENT, OPS_PER_ELEMENT, softmax_ops
from opscope.formulas.linear import linear_ops, matmul_ops
from opscope.formulas.norm import normalization_ops
from opscope.formulas.reduction import OPS_PER_GROUP, reduction_ops
from opscope.formulas.registry import (
    AnyTensorMeta,
    Call,
    NestedTensorMeta,
    OpCall,
    aten_ops,
    register,
    register_op,
)

aten = torch.ops.aten


@dataclass(frozen=True)
class MultiheadAttentionConfig:
    """The static settings of an ``nn.MultiheadAttention``, read once when it is hooked.

    ``bias`` is the in-projection bias, ``out_proj_bias`` the output projection's (both
    follow the constructor's ``bias`` unless a parameter was removed later).
    """

    embed_dim: int
    num_heads: int
    kdim: int
    vdim: int
    bias: bool
    out_proj_bias: bool
    add_bias_kv: bool
    add_zero_attn: bool
    batch_first: bool

    @classmethod
    def from_module(cls, module: nn.Module) -> MultiheadAttentionConfig:
        """Read the settings of a ``torch.nn.MultiheadAttention`` (or of a subclass)."""
        return cls(
            embed_dim=int(module.embed_dim),
            num_heads=int(module.num_heads),
            kdim=int(module.kdim),
            vdim=int(module.vdim),
            bias=module.in_proj_bias is not None,
            out_proj_bias=module.out_proj.bias is not None,
            add_bias_kv=module.bias_k is not None,
            add_zero_attn=bool(module.add_zero_attn),
            batch_first=bool(module.batch_first),
        )


def attention_ops(
    *, batch: int, query_len: int, key_len: int, head_dim: int, value_dim: int, masks: int = 0
) -> int:
    """Exact operations of ``softmax(q k^T * scale + mask) v`` over ``batch`` independent
    (batch, head) pairs, ``q`` of ``(L, E)``, ``k`` of ``(S, E)``, ``v`` of ``(S, Ev)``::

        query scaling   L * E             (q * scale: once per query element)
        scores q.k      L * S * (2E - 1)
        masks           masks * L * S     (one addition per score per mask)
        softmax         L * (3S - 1)      (activation.softmax_ops over L rows of S)
        weighted sums   L * Ev * (2S - 1)

    ``ops = batch * (sum of the terms)``. Scaling the query rather than the scores is what
    ``nn.MultiheadAttention`` does; it is the cheaper order when ``S > E``.

    Example (2 pairs, 3 queries, 4 keys, E = Ev = 5, one mask: 15 + 108 + 12 + 33 + 105 each):
        >>> attention_ops(batch=2, query_len=3, key_len=4, head_dim=5, value_dim=5, masks=1)
        546
    """
    per_pair = (
        scores_ops(query_len=query_len, key_len=key_len, head_dim=head_dim, masks=masks)
        + softmax_ops((query_len, key_len), -1)
        + matmul_ops(query_len, key_len, value_dim)
    )
    return batch * per_pair


def scores_ops(*, query_len: int, key_len: int, head_dim: int, masks: int) -> int:
    """The masked scores of one (batch, head) pair, as the forward and the backward (which
    recomputes them) evaluate them: the query scaled (``L * E``), ``q k^T`` (``L * S * (2E -
    1)``) and one addition per score per mask.

    >>> scores_ops(query_len=3, key_len=4, head_dim=5, masks=1)
    135
    """
    return (
        query_len * head_dim
        + matmul_ops(query_len, head_dim, key_len)
        + masks * query_len * key_len
    )


def attention_macs(
    *, batch: int, query_len: int, key_len: int, head_dim: int, value_dim: int
) -> int:
    """Multiply-accumulates of the two products of attention, ``q k^T`` and ``weights @ v``::

        macs = batch * L * S * (E + Ev)

    (``FlopCounterMode``'s attention FLOPs / 2).

    >>> attention_macs(batch=2, query_len=3, key_len=4, head_dim=5, value_dim=5)
    240
    """
    return batch * query_len * key_len * (head_dim + value_dim)


def multihead_attention_ops(
    *,
    batch: int,
    target_len: int,
    source_len: int,
    embed_dim: int,
    num_heads: int,
    kdim: int,
    vdim: int,
    bias: bool,
    out_proj_bias: bool,
    extra_keys: int = 0,
    masks: int = 0,
    average_weights: bool = False,
) -> int:
    """Exact operations of one ``nn.MultiheadAttention`` call, in integer arithmetic.

    With ``N`` = batch, ``L`` = target (query) length, ``S`` = source (key/value) length,
    ``E`` = embed_dim, ``H`` = num_heads, ``d = E / H``, ``S' = S + extra_keys`` (one
    key/value position each for ``add_bias_kv`` and ``add_zero_attn``), per batch element::

        q, k, v projections   L*E*(2E - 1 [+1]) + S*E*(2*kdim - 1 [+1]) + S*E*(2*vdim - 1 [+1])
        query scaling         L*E              (q * d**-0.5, as the module does)
        scores q.k            H*L*S' * (2d - 1)
        masks                 masks * H*L*S'   (one addition per score per mask)
        softmax               H*L * (3S' - 1)  (activation.softmax_ops over H*L rows of S')
        weighted sums         L*E * (2S' - 1)  (H*L*d dot products of S' pairs)
        out projection        L*E*(2E - 1 [+1])
        mean over heads       H*L*S'           (H - 1 additions + 1 division per weight)

    ``[+1]`` is the bias addition where there is one; ``ops = N * (sum of the terms)``.
    Attention dropout is not a term: like ``nn.Dropout`` it counts 0 in training and eval.

    Example (self-attention, E=4, H=2, L=S=3, biases, no masks, weights averaged):
        >>> multihead_attention_ops(batch=1, target_len=3, source_len=3, embed_dim=4,
        ...     num_heads=2, kdim=4, vdim=4, bias=True, out_proj_bias=True,
        ...     average_weights=True)
        576
    """
    head_dim = _head_dim(embed_dim, num_heads)
    keys = source_len + extra_keys
    # query scaling, q . k, masks, softmax and weights @ v, for every head
    heads = attention_ops(batch=num_heads, query_len=target_len, key_len=keys,
                          head_dim=head_dim, value_dim=head_dim, masks=masks)  # fmt: skip
    per_element = (
        linear_ops(batch=target_len, in_features=embed_dim, out_features=embed_dim, bias=bias)
        + linear_ops(batch=source_len, in_features=kdim, out_features=embed_dim, bias=bias)
        + linear_ops(batch=source_len, in_features=vdim, out_features=embed_dim, bias=bias)
        + heads
        + linear_ops(
            batch=target_len, in_features=embed_dim, out_features=embed_dim, bias=out_proj_bias
        )
        # sum of H weights, then one division, for each of the H * L * S' weights
        + (num_heads * target_len * keys if average_weights else 0)
    )
    return batch * per_element


def _head_dim(embed_dim: int, num_heads: int) -> int:
    if num_heads < 1 or embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
    return embed_dim // num_heads


def multihead_attention_macs(**sizes: Any) -> int:
    """Multiply-accumulates of one ``nn.MultiheadAttention`` call, from the keyword arguments
    of :func:`multihead_attention_ops` (those that change no product are ignored): the
    projections (``L*E*E + S*kdim*E + S*vdim*E`` in, ``L*E*E`` out) and :func:`attention_macs`
    for every head, ``N`` times.

    >>> multihead_attention_macs(batch=1, target_len=3, source_len=3, embed_dim=4,
    ...     num_heads=2, kdim=4, vdim=4)
    264
    """
    target_len, embed_dim, num_heads = sizes["target_len"], sizes["embed_dim"], sizes["num_heads"]
    head_dim = _head_dim(embed_dim, num_heads)
    source_len = sizes["source_len"]
    inputs = 2 * target_len * embed_dim + source_len * (sizes["kdim"] + sizes["vdim"])
    projections = inputs * embed_dim  # q, k, v in and the output projection
    products = attention_macs(
        batch=num_heads, query_len=target_len, key_len=source_len + sizes.get("extra_keys", 0),
        head_dim=head_dim, value_dim=head_dim,
    )  # fmt: skip
    return sizes["batch"] * (projections + products)


def _multihead_attention_sizes(config: MultiheadAttentionConfig, call: Call) -> dict[str, Any]:
    """The :func:`multihead_attention_ops` arguments of one module call (see
    :func:`count_multihead_attention`)."""
    query, key, value = call.inputs[:3]
    batched = len(query) == 3
    if batched and config.batch_first:
        (batch, target_len, _), (_, source_len, _) = query, key
    elif batched:
        (target_len, batch, _), (source_len, _, _) = query, key
    else:
        (target_len, _), (source_len, _), batch = query, key, 1
    weights = call.outputs[1:2]
    return {
        "batch": batch,
        "target_len": target_len,
        "source_len": source_len,
        "embed_dim": query[-1],
        "num_heads": config.num_heads,
        "kdim": key[-1],
        "vdim": value[-1],
        "bias": config.bias,
        "out_proj_bias": config.out_proj_bias,
        "extra_keys": int(config.add_bias_kv) + int(config.add_zero_attn),
        "masks": len(call.inputs) - 3,
        "average_weights": bool(weights) and len(weights[0]) == len(query),
    }


def count_multihead_attention_macs(config: MultiheadAttentionConfig, call: Call) -> int:
    """Multiply-accumulates of one ``MultiheadAttention`` call: :func:`multihead_attention_macs`
    on the call's real shapes."""
    return multihead_attention_macs(**_multihead_attention_sizes(config, call))


@register(
    nn.MultiheadAttention,
    describe=MultiheadAttentionConfig.from_module,
    macs=count_multihead_attention_macs,
    children=("out_proj",),  # used through its weights, counted in the attention
)
def count_multihead_attention(config: MultiheadAttentionConfig, call: Call) -> int:
    """Operations of one ``MultiheadAttention(query, key, value, ...)`` call:
    :func:`multihead_attention_ops` on the call's real shapes.

    ``query``, ``key`` and ``value`` are the first three input shapes; every further tensor
    is a mask (``key_padding_mask``, ``attn_mask``). A 2-D query is an unbatched call
    (``N = 1``). The weights were returned when the call has a second output
    (``need_weights=True``), and averaged over heads when that output has the query's rank
    (``(N, L, S')`` rather than ``(N, H, L, S')``).
    """
    return multihead_attention_ops(**_multihead_attention_sizes(config, call))


# -- ATen operators -----------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionLayout:
    """Where an attention operator takes what its count needs: argument positions (and
    schema names) of the mask and of the causal flag (None: the operator takes none), and
    whether its tensors are ``(B, L, H, E)`` (``seq_first``) rather than ``(..., H, L, E)``;
    a ``seq_first`` kernel may take nested (jagged) inputs, with cumulative sequence lengths
    at ``nested`` (positions of ``cum_seq_q``, then ``max_q`` and ``max_k`` follow it by 2
    and 3)."""

    mask: tuple[int, str] | None
    causal: tuple[int, str] | None
    seq_first: bool = False
    nested: int | None = None

    def sizes(self, call: OpCall) -> dict[str, int]:
        """:func:`attention_macs`'s arguments: ``batch`` counts every (batch, head) pair."""
        query, key, value = (meta.shape for meta in call.args[:3])
        dims = {"head_dim": query[-1], "value_dim": value[-1]}
        if not self.seq_first:
            batch = math.prod(call.output[:-2])
            return {"batch": batch, "query_len": query[-2], "key_len": key[-2], **dims}
        offsets = call.tensor(self.nested, "cum_seq_q") if self.nested is not None else None
        if offsets is not None:
            # Nested sequences of unknown lengths: every one counted at the longest (an
            # upper bound, as FlopCounterMode counts them when the offsets are not readable).
            batch, query_len, key_len = (
                offsets.shape[0] - 1,
                *call.args[self.nested + 2 : self.nested + 4],
            )
        else:
            batch, query_len, key_len = query[0], query[1], key[1]
        return {"batch": batch * query[-2], "query_len": query_len, "key_len": key_len, **dims}

    def masked(self, call: OpCall) -> bool:
        """Whether the call adds a mask to the scores: a given mask, or a causal one."""
        mask = self.mask is not None and call.tensor(*self.mask) is not None
        return mask or bool(self.causal is not None and call.arg(*self.causal, False))

    def count(self, call: OpCall) -> int:
        """:func:`attention_ops` on the call."""
        return attention_ops(**self.sizes(call), masks=int(self.masked(call)))

    def macs(self, call: OpCall) -> int:
        """:func:`attention_macs` on the call."""
        return attention_macs(**self.sizes(call))


ATTENTION_LAYOUTS: dict[str, AttentionLayout] = {
    "scaled_dot_product_attention": AttentionLayout((3, "attn_mask"), (5, "is_causal")),
    "_scaled_dot_product_attention_math": AttentionLayout((3, "attn_mask"), (5, "is_causal")),
    "_scaled_dot_product_flash_attention_for_cpu": AttentionLayout(
        (99, "attn_mask"), (4, "is_causal")
    ),
    "_scaled_dot_product_flash_attention": AttentionLayout(None, (4, "is_causal")),
    "_scaled_dot_product_efficient_attention": AttentionLayout((3, "attn_bias"), (6, "is_causal")),
    "_scaled_dot_product_cudnn_attention": AttentionLayout((3, "attn_bias"), (6, "is_causal")),
    "_scaled_dot_product_fused_attention_overrideable": AttentionLayout(
        (3, "attn_bias"), (5, "is_causal")
    ),
    "_flash_attention_forward": AttentionLayout(None, (8, "is_causal"), True, nested=3),
    "_efficient_attention_forward": AttentionLayout(
        (3, "bias"), (9, "custom_mask_type"), True, nested=4
    ),
}
"""Every attention operator counted, by ATen name: the composite
``scaled_dot_product_attention`` and the kernels it runs as, each counted like the composite
(the flash attention for CPU takes its mask by keyword only, hence position 99)."""

for _name, _layout in ATTENTION_LAYOUTS.items():
    register_op(*aten_ops(_name), family="attention", macs=_layout.macs)(_layout.count)


def attention_backward_ops(
    *, batch: int, query_len: int, key_len: int, head_dim: int, value_dim: int, masks: int = 0
) -> int:
    """Exact operations of the backward of ``softmax(q k^T * scale + mask) v`` (the fused
    kernels' algorithm: the weights recomputed from the saved log-sum-exp ``lse``) over ``batch``
    (batch, head) pairs, given the output ``o`` and its gradient ``do``::

        query scaling   L * E               (q * scale, as the forward)
        scores          L * S * (2E - 1)    (q k^T)
        masks           masks * L * S
        weights         2 * L * S           p = exp(s - lse)
        grad v          S * Ev * (2L - 1)   p^T do
        grad p          L * S * (2Ev - 1)   do v^T
        row terms       L * (2Ev - 1)       D = sum(do * o) per query
        grad scores     2 * L * S           ds = p * (dp - D)
        grad q          L * E * 2S          (ds k) * scale
        grad k          S * E * (2L - 1)    ds^T (q * scale)

    ``ops = batch * (sum of the terms)``; dropout, like the forward's, is not counted.

    Example (2 pairs, 3 queries, 4 keys, E = Ev = 5, no mask):
        >>> attention_backward_ops(batch=2, query_len=3, key_len=4, head_dim=5, value_dim=5)
        1252
    """
    scores = query_len * key_len
    per_pair = (
        scores_ops(query_len=query_len, key_len=key_len, head_dim=head_dim, masks=masks)
        + 2 * scores
        + matmul_ops(key_len, query_len, value_dim)
        + matmul_ops(query_len, value_dim, key_len)
        + matmul_ops(query_len, value_dim, 1)
        + 2 * scores
        + matmul_ops(query_len, key_len, head_dim)
        + query_len * head_dim
        + matmul_ops(key_len, query_len, head_dim)
    )
    return batch * per_pair


def attention_backward_macs(
    *, batch: int, query_len: int, key_len: int, head_dim: int, value_dim: int
) -> int:
    """Multiply-accumulates of the backward's five products (scores, ``grad p``, ``grad v``,
    ``grad q``, ``grad k``), ``FlopCounterMode``'s ``sdpa_backward_flop_count`` halved::

        macs = batch * L * S * (3E + 2Ev)

    >>> attention_backward_macs(batch=2, query_len=3, key_len=4, head_dim=5, value_dim=5)
    600
    """
    return batch * query_len * key_len * (3 * head_dim + 2 * value_dim)


@dataclass(frozen=True)
class BackwardLayout:
    """Where an attention backward operator takes what its count needs: ``forward``, the
    :class:`AttentionLayout` of its arguments after ``grad_out`` (``query``, ``key``, ``value``
    first, like the forward's), and, for a kernel that can return the gradient of the additive
    mask, the positions (in those arguments) of the mask and of what asks for its gradient
    (a ``grad_input_mask`` list, or a ``bias_requires_grad`` flag)."""

    forward: AttentionLayout
    bias: int | None = None
    bias_wanted: tuple[int, str] | None = None

    def _forward_call(self, call: OpCall) -> OpCall:
        return OpCall(call.args[1:], call.kwargs, call.outputs)

    def count(self, call: OpCall) -> int:
        """:func:`attention_backward_ops` on the call, plus, when the mask's gradient is asked
        for, the sum of the scores' gradients over the dims the mask is broadcast along."""
        forward = self._forward_call(call)
        sizes = self.forward.sizes(forward)
        ops = attention_backward_ops(**sizes, masks=int(self.forward.masked(forward)))
        bias = forward.tensor(self.bias, "attn_bias") if self.bias is not None else None
        if bias is not None and self._bias_wanted(forward):
            scores = sizes["batch"] * sizes["query_len"] * sizes["key_len"]
            ops += reduction_ops(scores, math.prod(bias.shape), OPS_PER_GROUP["sum"])
        return ops

    def _bias_wanted(self, forward: OpCall) -> bool:
        wanted = forward.arg(*self.bias_wanted) if self.bias_wanted is not None else False
        return bool(wanted[3] if isinstance(wanted, tuple) else wanted)

    def macs(self, call: OpCall) -> int:
        """:func:`attention_backward_macs` on the call."""
        return attention_backward_macs(**self.forward.sizes(self._forward_call(call)))


ATTENTION_BACKWARD_LAYOUTS: dict[str, BackwardLayout] = {
    "_scaled_dot_product_flash_attention_for_cpu_backward": BackwardLayout(
        AttentionLayout((99, "attn_mask"), (6, "is_causal"))
    ),
    "_scaled_dot_product_flash_attention_backward": BackwardLayout(
        AttentionLayout(None, (10, "is_causal"))
    ),
    "_scaled_dot_product_efficient_attention_backward": BackwardLayout(
        AttentionLayout((3, "attn_bias"), (10, "is_causal")), 3, (9, "grad_input_mask")
    ),
    "_scaled_dot_product_cudnn_attention_backward": BackwardLayout(
        AttentionLayout((7, "attn_bias"), (13, "is_causal"))
    ),
    "_scaled_dot_product_fused_attention_overrideable_backward": BackwardLayout(
        AttentionLayout((3, "attn_bias"), (12, "is_causal")), 3, (4, "grad_input_mask")
    ),
    "_flash_attention_backward": BackwardLayout(
        AttentionLayout(None, (10, "is_causal"), True, nested=5)
    ),
    "_efficient_attention_backward": BackwardLayout(
        AttentionLayout((3, "bias"), (13, "custom_mask_type"), True, nested=5),
        3,
        (14, "bias_requires_grad"),
    ),
}
"""Every attention backward operator counted, by ATen name, with argument positions counted
after ``grad_out`` (the CPU flash kernel takes its mask by keyword only, hence position 99)."""

for _name, _layout in ATTENTION_BACKWARD_LAYOUTS.items():
    register_op(*aten_ops(_name), family="attention", macs=_layout.macs)(_layout.count)


def _native_attention_sizes(call: OpCall) -> list[dict[str, Any]]:
    """The :func:`multihead_attention_ops` arguments of ``_native_multi_head_attention(query,
    key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, mask,
    need_weights, average_attn_weights)``, the fast path of ``nn.MultiheadAttention``, on
    batch-first ``(N, L, E)`` tensors: one set, or, for nested tensors, one per component
    (its ``(L, E)`` sequence counted alone, ``N = 1``)."""
    metas = call.args[:3]
    settings = {
        "num_heads": call.arg(4, "num_head"),
        "bias": call.tensor(6, "qkv_bias") is not None,
        "out_proj_bias": call.tensor(8, "proj_bias") is not None,
        "masks": int(call.tensor(9, "mask") is not None),
        "average_weights": bool(call.arg(10, "need_weights", True))
        and bool(call.arg(11, "average_attn_weights", True)),
    }
    if any(isinstance(meta, NestedTensorMeta) for meta in metas):
        batches = zip(*(meta.components for meta in metas), strict=True)
    else:
        batches = iter([tuple(meta.shape for meta in metas)])
    return [
        {
            "batch": math.prod(query[:-2]),
            "target_len": query[-2],
            "source_len": key[-2],
            "embed_dim": query[-1],
            "kdim": key[-1],
            "vdim": value[-1],
            **settings,
        }
        for query, key, value in batches
    ]


def native_multihead_attention_macs(call: OpCall) -> int:
    """:func:`multihead_attention_macs` of the fast path's call."""
    return sum(multihead_attention_macs(**sizes) for sizes in _native_attention_sizes(call))


@register_op(
    *aten_ops("_native_multi_head_attention"), family="attention",
    macs=native_multihead_attention_macs,
)  # fmt: skip
def count_native_multihead_attention(call: OpCall) -> int:
    """``_native_multi_head_attention``: :func:`multihead_attention_ops`, the count of the
    ``nn.MultiheadAttention`` call it runs; for nested inputs, the sum of the counts of their
    sequences, each attending to its own keys (the kernel may pad them to the longest: the
    padding is not counted: each sequence's attention is defined on its own positions)."""
    return sum(multihead_attention_ops(**sizes) for sizes in _native_attention_sizes(call))


# -- the fused transformer encoder layer --------------------------------------------------


@dataclass(frozen=True)
class EncoderLayerSettings:
    """What ``_transformer_encoder_layer_fwd`` computes, read from its arguments: the
    settings of the ``nn.TransformerEncoderLayer`` whose eval fast path calls it.

    Attributes:
        embed_dim: ``E``, the model width; ``num_heads``: ``H``; ``ffn_dim``: ``F``, the
            feed-forward width (``ffn_weight_1`` is ``(F, E)``).
        use_gelu: the activation is GELU (``erf``), else ReLU.
        masked: a mask is added to the scores.
        in_bias, out_bias: the attention's in- and out-projection biases are given.
        norm_weights, norm_biases: the two LayerNorms' weights and biases given.
        ffn_biases: ``linear1``'s and ``linear2``'s biases given.
    """

    embed_dim: int
    num_heads: int
    ffn_dim: int
    use_gelu: bool
    masked: bool
    in_bias: bool
    out_bias: bool
    norm_weights: tuple[bool, bool]
    norm_biases: tuple[bool, bool]
    ffn_biases: tuple[bool, bool]

    @classmethod
    def of(cls, call: OpCall) -> EncoderLayerSettings:
        """The settings of ``_transformer_encoder_layer_fwd(src, embed_dim, num_heads,
        qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first, eps,
        norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1,
        ffn_weight_2, ffn_bias_2, mask, mask_type)`` (``norm_first``, ``eps`` and
        ``mask_type`` change no count)."""

        def given(index: int, name: str) -> bool:
            return call.tensor(index, name) is not None

        return cls(
            embed_dim=int(call.arg(1, "embed_dim")),
            num_heads=int(call.arg(2, "num_heads")),
            ffn_dim=call.args[14].shape[0],
            use_gelu=bool(call.arg(7, "use_gelu")),
            masked=given(18, "mask"),
            in_bias=given(4, "qkv_bias"),
            out_bias=given(6, "proj_bias"),
            norm_weights=(given(10, "norm_weight_1"), given(12, "norm_weight_2")),
            norm_biases=(given(11, "norm_bias_1"), given(13, "norm_bias_2")),
            ffn_biases=(given(15, "ffn_bias_1"), given(17, "ffn_bias_2")),
        )

    def _attention(self, length: int) -> dict[str, Any]:
        """:func:`multihead_attention_ops`'s arguments for one sequence of ``length``."""
        return {
            "batch": 1, "target_len": length, "source_len": length,
            "embed_dim": self.embed_dim, "num_heads": self.num_heads,
            "kdim": self.embed_dim, "vdim": self.embed_dim,
            "bias": self.in_bias, "out_proj_bias": self.out_bias, "masks": int(self.masked),
        }  # fmt: skip

    def ops(self, length: int) -> int:
        """Exact operations of the layer (eval: dropout 0) on one sequence of ``L = length``
        positions, the terms its slow path counts module by module::

            self-attention   multihead_attention_ops (in/out projections, query scaling,
                             scores, mask, softmax, weighted sums; no weights returned)
            two LayerNorms   2 * (5LE + 2L) (+ LE per weight and per bias)
            linear1          L * F * (2E - 1 [+1])
            activation       L * F * (1 for ReLU, 5 for GELU)
            linear2          L * E * (2F - 1 [+1])
            residuals        2 * L * E

        ``norm_first`` only moves the norms: the same count.

        Example (E = 8, H = 2, F = 16, ReLU, every bias and weight, L = 5: 3450 + 580 +
        1280 + 80 + 1280 + 80):
            >>> settings = EncoderLayerSettings(8, 2, 16, False, False, True, True,
            ...     (True, True), (True, True), (True, True))
            >>> settings.ops(5)
            6750
        """
        width, hidden = self.embed_dim, self.ffn_dim
        norms = sum(
            normalization_ops(
                elements=length * width, stat_sets=length, batch_stats=True,
                weight=weight, bias=bias,
            )
            for weight, bias in zip(self.norm_weights, self.norm_biases, strict=True)
        )  # fmt: skip
        first, second = self.ffn_biases
        activation = GELU_OPS_PER_ELEMENT["none"] if self.use_gelu else OPS_PER_ELEMENT[nn.ReLU]
        return (
            multihead_attention_ops(**self._attention(length))
            + norms
            + linear_ops(batch=length, in_features=width, out_features=hidden, bias=first)
            + length * hidden * activation
            + linear_ops(batch=length, in_features=hidden, out_features=width, bias=second)
            + 2 * length * width
        )

    def macs(self, length: int) -> int:
        """Multiply-accumulates on one sequence of ``L = length``: the attention's
        (:func:`multihead_attention_macs`) and the two feed-forward products, ``2 L E F``.

        >>> EncoderLayerSettings(8, 2, 16, False, False, True, True,
        ...     (True, True), (True, True), (True, True)).macs(5)
        2960
        """
        feed_forward = 2 * length * self.embed_dim * self.ffn_dim
        return multihead_attention_macs(**self._attention(length)) + feed_forward


def sequences(meta: AnyTensorMeta) -> tuple[tuple[int, int], ...]:
    """``(count, length)`` pairs of the sequences of a batch-first ``(*, L, E)`` tensor,
    ``count`` sequences of ``L`` positions each: one pair for a dense tensor, one per distinct
    length for a nested one, whose components are sequences of their own lengths.

    >>> from opscope.formulas.registry import NestedShape, TensorMeta
    >>> sequences(TensorMeta((2, 4, 5, 8), torch.float32))
    ((8, 5),)
    >>> sequences(NestedTensorMeta(NestedShape(((5, 8), (3, 8), (5, 8))), torch.float32))
    ((2, 5), (1, 3))
    """
    shapes = meta.components if isinstance(meta, NestedTensorMeta) else (meta.shape,)
    lengths: Counter[int] = Counter()
    for shape in shapes:
        lengths[shape[-2]] += math.prod(shape[:-2])
    return tuple((count, length) for length, count in lengths.items())


def _per_sequence(measure: Callable[[EncoderLayerSettings, int], int], call: OpCall) -> int:
    settings = EncoderLayerSettings.of(call)
    return sum(count * measure(settings, length) for count, length in sequences(call.args[0]))


def encoder_layer_macs(call: OpCall) -> int:
    """:meth:`EncoderLayerSettings.macs` of every sequence of the call."""
    return _per_sequence(EncoderLayerSettings.macs, call)


@register_op(*aten_ops("_transformer_encoder_layer_fwd"), family="transformer",
             macs=encoder_layer_macs)  # fmt: skip
def count_encoder_layer(call: OpCall) -> int:
    """``_transformer_encoder_layer_fwd``, the fused eval fast path of
    ``nn.TransformerEncoderLayer``: :meth:`EncoderLayerSettings.ops` of every sequence of the
    batch-first ``src``, exactly what the layer's slow path counts (its MultiheadAttention,
    LayerNorms and Linears by their module formulas, the activation and the residual
    additions by the op level). A nested ``src`` (what ``nn.TransformerEncoder`` makes of a
    padded batch and its ``src_key_padding_mask``) is counted sequence by sequence, each
    component at its own length. When a ``src_mask`` and a ``src_key_padding_mask`` are both
    given, the layer adds them before the call (an ``add`` counted by the op level), so the
    call sees one mask, as the slow path's two add up."""
    return _per_sequence(EncoderLayerSettings.ops, call)
