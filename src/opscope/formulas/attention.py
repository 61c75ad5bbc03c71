"""Multi-head attention: every multiplication, addition, division and ``exp`` of the call.

``nn.MultiheadAttention`` is counted as a whole, from the shapes of its call: the three input
projections, the query scaling, the scaled dot products, the masks, the softmax, the
attention-weighted sums, the output projection and, when the weights are returned averaged,
the mean over heads. Attention dropout counts 0, in training as in eval, like ``nn.Dropout``.
The terms, and why each is counted the way it is, are in ``docs/formulas/attention.md``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from opscope.formulas.activation import softmax_ops
from opscope.formulas.linear import linear_ops, matmul_ops
from opscope.formulas.registry import Call, register


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
    if num_heads < 1 or embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
    head_dim = embed_dim // num_heads
    keys = source_len + extra_keys
    scores = num_heads * target_len * keys  # attention weights per batch element
    per_element = (
        linear_ops(batch=target_len, in_features=embed_dim, out_features=embed_dim, bias=bias)
        + linear_ops(batch=source_len, in_features=kdim, out_features=embed_dim, bias=bias)
        + linear_ops(batch=source_len, in_features=vdim, out_features=embed_dim, bias=bias)
        + target_len * embed_dim  # query scaling
        + matmul_ops(num_heads * target_len, head_dim, keys)  # q . k for every head
        + masks * scores
        + softmax_ops((num_heads * target_len, keys), -1)
        + matmul_ops(num_heads * target_len, keys, head_dim)  # weights @ v for every head
        + linear_ops(
            batch=target_len, in_features=embed_dim, out_features=embed_dim, bias=out_proj_bias
        )
        + (scores if average_weights else 0)  # sum of H weights, then one division
    )
    return batch * per_element


@register(nn.MultiheadAttention, describe=MultiheadAttentionConfig.from_module)
def count_multihead_attention(config: MultiheadAttentionConfig, call: Call) -> int:
    """Operations of one ``MultiheadAttention(query, key, value, ...)`` call:
    :func:`multihead_attention_ops` on the call's real shapes.

    ``query``, ``key`` and ``value`` are the first three input shapes; every further tensor
    is a mask (``key_padding_mask``, ``attn_mask``). A 2-D query is an unbatched call
    (``N = 1``). The weights were returned when the call has a second output
    (``need_weights=True``), and averaged over heads when that output has the query's rank
    (``(N, L, S')`` rather than ``(N, H, L, S')``).
    """
    query, key, value = call.inputs[:3]
    batched = len(query) == 3
    if batched and config.batch_first:
        (batch, target_len, _), (_, source_len, _) = query, key
    elif batched:
        (target_len, batch, _), (source_len, _, _) = query, key
    else:
        (target_len, _), (source_len, _), batch = query, key, 1
    weights = call.outputs[1:2]
    return multihead_attention_ops(
        batch=batch,
        target_len=target_len,
        source_len=source_len,
        embed_dim=query[-1],
        num_heads=config.num_heads,
        kdim=key[-1],
        vdim=value[-1],
        bias=config.bias,
        out_proj_bias=config.out_proj_bias,
        extra_keys=int(config.add_bias_kv) + int(config.add_zero_attn),
        masks=len(call.inputs) - 3,
        average_weights=bool(weights) and len(weights[0]) == len(query),
    )
