"""The MultiheadAttention formula: a hand-computed case, a brute-force count that is checked
against torch's own output, and identities against FlopCounterMode."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import opscope.formulas.attention  # noqa: F401  (registers the family)
from opscope import Profiler
from opscope.formulas.attention import MultiheadAttentionConfig
from helpers import profiled_ops


def test_hand_computed_cross_attention() -> None:
    # E = 4, H = 2 (d = 2), N = 2, L = 3 queries, S = 2 keys, biases, weights averaged.
    module = nn.MultiheadAttention(4, 2)
    per_element = (
        3 * 4 * (2 * 4)  # q projection: L * E outputs, 4 products + 3 additions + bias
        + 2 * 4 * (2 * 4)  # k projection: S * E outputs
        + 2 * 4 * (2 * 4)  # v projection
        + 3 * 4  # q * d**-0.5
        + 2 * 3 * 2 * (2 * 2 - 1)  # H * L * S scores, dot products of d = 2 pairs
        + 2 * 3 * (2 + (2 - 1) + 2)  # H * L softmax rows of S = 2: exp, sum, divide
        + 2 * 3 * 2 * (2 * 2 - 1)  # H * L * d weighted sums of S = 2 values
        + 3 * 4 * (2 * 4)  # out projection
        + 3 * 2 * 2  # mean over H = 2 heads of the L * S weights: 1 addition + 1 division
    )
    assert per_element == 96 + 64 + 64 + 12 + 36 + 30 + 36 + 96 + 12
    assert profiled_ops(module, torch.randn(3, 2, 4), *[torch.randn(2, 2, 4)] * 2) == 2 * 446


def test_config() -> None:
    module = nn.MultiheadAttention(6, 3, bias=False, add_bias_kv=True, kdim=2, vdim=5)
    assert MultiheadAttentionConfig.from_module(module) == MultiheadAttentionConfig(
        embed_dim=6, num_heads=3, kdim=2, vdim=5, bias=False, out_proj_bias=False,
        add_bias_kv=True, add_zero_attn=False, batch_first=False,
    )  # fmt: skip


# -- a brute-force evaluation that counts every operation it performs -------------------------


class Counted:
    """Scalar arithmetic on Python floats, counting each operation."""

    def __init__(self) -> None:
        self.ops = 0

    def dot(self, xs: list[float], ys: list[float]) -> float:
        total = xs[0] * ys[0]
        self.ops += 1
        for x, y in zip(xs[1:], ys[1:]):
            total += x * y
            self.ops += 2
        return total

    def linear(
        self, x: list[float], weight: list[list[float]], bias: list[float] | None
    ) -> list[float]:
        out = [self.dot(x, row) for row in weight]
        if bias is not None:
            out = [value + b for value, b in zip(out, bias)]
            self.ops += len(out)
        return out

    def softmax(self, row: list[float]) -> list[float]:
        # The row max is subtracted for stability, as kernels do, but not counted: the
        # project's softmax convention counts the definition exp(x_i) / sum_j exp(x_j).
        top = max(row)
        exps = [math.exp(value - top) for value in row]
        self.ops += len(row)  # exponentials
        total = exps[0]
        for value in exps[1:]:
            total += value
            self.ops += 1
        self.ops += len(row)  # divisions
        return [value / total for value in exps]


@dataclass
class Weights:
    """The parameters of a MultiheadAttention module as nested lists."""

    q: list[list[float]]
    k: list[list[float]]
    v: list[list[float]]
    q_bias: list[float] | None
    k_bias: list[float] | None
    v_bias: list[float] | None
    bias_k: list[float] | None
    bias_v: list[float] | None
    out: list[list[float]]
    out_bias: list[float] | None

    @classmethod
    def of(cls, module: nn.MultiheadAttention) -> Weights:
        def rows(tensor: torch.Tensor | None) -> Any:
            return None if tensor is None else tensor.detach().tolist()

        if module._qkv_same_embed_dim:
            q, k, v = module.in_proj_weight.chunk(3)
        else:
            q, k, v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
        biases = (None,) * 3 if module.in_proj_bias is None else module.in_proj_bias.chunk(3)
        return cls(
            rows(q), rows(k), rows(v), *map(rows, biases),
            None if module.bias_k is None else rows(module.bias_k.flatten()),
            None if module.bias_v is None else rows(module.bias_v.flatten()),
            rows(module.out_proj.weight), rows(module.out_proj.bias),
        )  # fmt: skip


def brute_force_mha(
    module: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    masks: list[torch.Tensor],
    average: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Multi-head attention by loops over ``(L, N, E)``-shaped inputs, with additive masks of
    shape ``(N * H, L, S)`` (one addition per score per mask), counting every operation.

    Returns the output ``(L, N, E)``, the weights ``(N, L, S')`` averaged over heads or
    ``(N, H, L, S')``, and the operation count (the mean over heads counted only when
    ``average``)."""
    c = Counted()
    w = Weights.of(module)
    heads, embed = module.num_heads, module.embed_dim
    head_dim = embed // heads
    scale = math.sqrt(1.0 / head_dim)
    mask_rows = [mask.tolist() for mask in masks]
    outputs, all_weights = [], []
    for n in range(query.shape[1]):
        q = [c.linear(row, w.q, w.q_bias) for row in query[:, n].tolist()]
        k = [c.linear(row, w.k, w.k_bias) for row in key[:, n].tolist()]
        v = [c.linear(row, w.v, w.v_bias) for row in value[:, n].tolist()]
        if w.bias_k is not None and w.bias_v is not None:
            k, v = k + [w.bias_k], v + [w.bias_v]
        if module.add_zero_attn:
            k, v = k + [[0.0] * embed], v + [[0.0] * embed]
        q = [[x * scale for x in row] for row in q]
        c.ops += len(q) * embed
        heads_out, heads_weights = [], []
        for h in range(heads):
            part = slice(h * head_dim, (h + 1) * head_dim)
            out_h, weights_h = [], []
            for i, q_row in enumerate(q):
                scores = [c.dot(q_row[part], k_row[part]) for k_row in k]
                for mask in mask_rows:
                    scores = [s + m for s, m in zip(scores, mask[n * heads + h][i])]
                    c.ops += len(scores)
                p = c.softmax(scores)
                columns = [[v_row[part][j] for v_row in v] for j in range(head_dim)]
                out_h.append([c.dot(p, column) for column in columns])
                weights_h.append(p)
            heads_out.append(out_h)
            heads_weights.append(weights_h)
        concat = [sum((heads_out[h][i] for h in range(heads)), []) for i in range(len(q))]
        outputs.append([c.linear(row, w.out, w.out_bias) for row in concat])
        if average:
            mean = [
                [sum(heads_weights[h][i][j] for h in range(heads)) / heads for j in range(len(k))]
                for i in range(len(q))
            ]
            c.ops += len(q) * len(k) * heads  # H - 1 additions and 1 division each
            all_weights.append(mean)
        else:
            all_weights.append(heads_weights)
    out = torch.tensor(outputs, dtype=query.dtype).transpose(0, 1)
    return out, torch.tensor(all_weights, dtype=query.dtype), c.ops


@dataclass(frozen=True)
class Case:
    heads: int
    head_dim: int
    kdim: int | None
    vdim: int | None
    bias: bool
    add_bias_kv: bool
    add_zero_attn: bool
    batch_first: bool
    batched: bool
    batch: int
    target_len: int
    source_len: int
    need_weights: bool
    average: bool
    attn_mask: bool
    key_padding_mask: bool


cases = st.builds(
    Case,
    heads=st.integers(1, 2),
    head_dim=st.integers(1, 2),
    kdim=st.none() | st.integers(1, 3),
    vdim=st.none() | st.integers(1, 3),
    bias=st.booleans(),
    add_bias_kv=st.booleans(),
    add_zero_attn=st.booleans(),
    batch_first=st.booleans(),
    batched=st.booleans(),
    batch=st.integers(1, 2),
    target_len=st.integers(1, 3),
    source_len=st.integers(1, 3),
    need_weights=st.booleans(),
    average=st.booleans(),
    attn_mask=st.booleans(),
    key_padding_mask=st.booleans(),
)


def as_called(tensor: torch.Tensor, case: Case) -> torch.Tensor:
    """A canonical ``(L, N, E)`` tensor as the module takes it in this case."""
    if not case.batched:
        return tensor[:, 0]
    return tensor.transpose(0, 1) if case.batch_first else tensor


@settings(max_examples=25)
@given(cases)
def test_ops_equal_a_brute_force_count(case: Case) -> None:
    embed = case.heads * case.head_dim
    module = nn.MultiheadAttention(
        embed, case.heads, bias=case.bias, add_bias_kv=case.add_bias_kv,
        add_zero_attn=case.add_zero_attn, kdim=case.kdim, vdim=case.vdim,
        batch_first=case.batch_first, dtype=torch.float64,
    )  # fmt: skip
    batch = case.batch if case.batched else 1
    length, source = case.target_len, case.source_len
    query = torch.randn(length, batch, embed, dtype=torch.float64)
    key = torch.randn(source, batch, module.kdim, dtype=torch.float64)
    value = torch.randn(source, batch, module.vdim, dtype=torch.float64)
    extra = int(case.add_bias_kv) + int(case.add_zero_attn)  # keys torch appends, mask 0
    kwargs: dict[str, Any] = {}
    masks = []  # as the brute force adds them: (N * H, L, S + extra)
    if case.key_padding_mask:
        kpm = torch.randn(batch, source, dtype=torch.float64)
        kwargs["key_padding_mask"] = kpm if case.batched else kpm[0]
        padded = nn.functional.pad(kpm, (0, extra))
        masks.append(padded.repeat_interleave(case.heads, 0)[:, None].expand(-1, length, -1))
    if case.attn_mask:
        attn_mask = torch.randn(length, source, dtype=torch.float64)
        kwargs["attn_mask"] = attn_mask
        masks.append(nn.functional.pad(attn_mask, (0, extra)).expand(batch * case.heads, -1, -1))
    args = [as_called(t, case) for t in (query, key, value)]
    call_kwargs = dict(kwargs, need_weights=case.need_weights, average_attn_weights=case.average)

    expected_out, expected_weights, brute_ops = brute_force_mha(
        module, query, key, value, masks, average=case.need_weights and case.average
    )
    # The brute force is a real attention, not just a counter: it agrees with torch.
    out, weights = module(*args, **call_kwargs)
    torch.testing.assert_close(out.detach(), as_called(expected_out, case))
    if case.need_weights:
        torch.testing.assert_close(
            weights.detach(), expected_weights if case.batched else expected_weights[0]
        )
    assert profiled_ops(module, *args, **call_kwargs) == brute_ops


# -- identities against FlopCounterMode ---------------------------------------------------------

@dataclass(frozen=True)
class FlopCase:
    module: dict[str, Any]  # MultiheadAttention settings
    batch: int | None  # None: an unbatched call
    target_len: int
    source_len: int
    need_weights: bool
    average: bool = True
    masks: bool = False  # a key_padding_mask and an attn_mask


FLOP_COUNTER_CASES = {
    "self-attention, weights averaged": FlopCase(
        dict(embed_dim=8, num_heads=2), batch=3, target_len=5, source_len=5, need_weights=True
    ),
    "cross, batch_first, kdim/vdim, no bias": FlopCase(
        dict(embed_dim=6, num_heads=3, kdim=4, vdim=5, bias=False, batch_first=True),
        batch=2, target_len=3, source_len=7, need_weights=True,
    ),
    "unbatched, bias_kv, zero_attn, weights per head": FlopCase(
        dict(embed_dim=4, num_heads=2, add_bias_kv=True, add_zero_attn=True),
        batch=None, target_len=4, source_len=3, need_weights=True, average=False,
    ),
    "no weights, both masks": FlopCase(
        dict(embed_dim=8, num_heads=4),
        batch=2, target_len=3, source_len=6, need_weights=False, masks=True,
    ),
    "no weights, unbatched, batch_first, kdim": FlopCase(
        dict(embed_dim=4, num_heads=1, kdim=2, batch_first=True),
        batch=None, target_len=5, source_len=2, need_weights=False,
    ),
    "weights, masks, zero_attn": FlopCase(
        dict(embed_dim=6, num_heads=2, add_zero_attn=True),
        batch=2, target_len=2, source_len=4, need_weights=True, masks=True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", FLOP_COUNTER_CASES.values(), ids=list(FLOP_COUNTER_CASES))
def test_ops_equal_flop_counter_plus_the_non_matmul_terms(case: FlopCase) -> None:
    module = nn.MultiheadAttention(**case.module)
    embed, heads = module.embed_dim, module.num_heads
    length, source = case.target_len, case.source_len

    def tensor(seq: int, features: int) -> torch.Tensor:
        if case.batch is None:
            return torch.randn(seq, features)
        batched = (case.batch, seq) if module.batch_first else (seq, case.batch)
        return torch.randn(*batched, features)

    args = (tensor(length, embed), tensor(source, module.kdim), tensor(source, module.vdim))
    kwargs: dict[str, Any] = dict(need_weights=case.need_weights, average_attn_weights=case.average)
    if case.masks:
        padding_shape = (source,) if case.batch is None else (case.batch, source)
        kwargs["key_padding_mask"] = torch.zeros(padding_shape)
        kwargs["attn_mask"] = torch.zeros(length, source)

    # The math backend runs scaled_dot_product_attention as bmm's, which FlopCounterMode counts.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(*args, **kwargs)
    flops = counter.get_total_flops()

    # FlopCounterMode counts 2 per pair of each dot product and no bias: a dot product has
    # one addition fewer than 2 per pair, and a bias adds one per output.
    batch = 1 if case.batch is None else case.batch
    keys = source + int(module.bias_k is not None) + int(module.add_zero_attn)
    weights = batch * heads * length * keys
    projection_outputs = batch * (length + 2 * source) * embed
    non_matmul = (
        (0 if module.in_proj_bias is not None else -projection_outputs)  # q, k, v projections
        + (0 if module.out_proj.bias is not None else -batch * length * embed)  # out projection
        - weights  # the scores: one dot product per weight
        - batch * length * embed  # the weighted sums: one dot product per output element
        + batch * length * embed  # q * d**-0.5
        + (2 * weights if case.masks else 0)  # merge the two masks, add them to the scores
        + batch * heads * length * (3 * keys - 1)  # softmax
        + (weights if case.need_weights and case.average else 0)  # mean over heads
    )
    assert profiled_ops(module, *args, **kwargs) == flops + non_matmul


# -- what the count depends on, and what it does not --------------------------------------------


def test_batch_first_unbatched_and_batched_agree() -> None:
    seq_first = nn.MultiheadAttention(4, 2)
    batch_first = nn.MultiheadAttention(4, 2, batch_first=True)
    q, kv = torch.randn(3, 2, 4), torch.randn(5, 2, 4)
    per_call = profiled_ops(seq_first, q, kv, kv)
    q_bf, kv_bf = q.transpose(0, 1), kv.transpose(0, 1)
    assert profiled_ops(batch_first, q_bf, kv_bf, kv_bf) == per_call
    # an unbatched call is one batch element: half of N = 2
    assert profiled_ops(seq_first, q[:, 0], kv[:, 0], kv[:, 0]) * 2 == per_call


def test_need_weights_and_averaging() -> None:
    module = nn.MultiheadAttention(6, 3)
    q, kv = torch.randn(4, 2, 6), torch.randn(5, 2, 6)
    weights = 2 * 3 * 4 * 5  # N * H * L * S
    averaged = profiled_ops(module, q, kv, kv)  # need_weights=True, average_attn_weights=True
    per_head = profiled_ops(module, q, kv, kv, average_attn_weights=False)
    without = profiled_ops(module, q, kv, kv, need_weights=False)
    assert averaged - per_head == weights  # H - 1 additions + 1 division per averaged weight
    assert per_head == without  # returning the weights per head is a view


def test_each_mask_adds_one_addition_per_score() -> None:
    module = nn.MultiheadAttention(4, 2)
    q, kv = torch.randn(3, 2, 4), torch.randn(5, 2, 4)
    scores = 2 * 2 * 3 * 5  # N * H * L * S
    plain = profiled_ops(module, q, kv, kv)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    causal_2d = torch.ones(3, 5, dtype=torch.bool).triu(1)
    per_head_3d = torch.zeros(2 * 2, 3, 5)
    assert profiled_ops(module, q, kv, kv, key_padding_mask=padding) == plain + scores
    assert profiled_ops(module, q, kv, kv, attn_mask=causal_2d) == plain + scores
    assert profiled_ops(module, q, kv, kv, attn_mask=per_head_3d) == plain + scores
    both = profiled_ops(module, q, kv, kv, key_padding_mask=padding, attn_mask=causal_2d)
    assert both == plain + 2 * scores


def test_dropout_counts_zero_in_training_and_eval() -> None:
    # Attention dropout is training-time regularisation, counted 0 like nn.Dropout.
    module = nn.MultiheadAttention(4, 2, dropout=0.5)
    q, kv = torch.randn(3, 2, 4), torch.randn(5, 2, 4)
    training = profiled_ops(module.train(), q, kv, kv)
    evaluating = profiled_ops(module.eval(), q, kv, kv)
    assert training == evaluating
    # and the dropout probability does not enter the count
    no_dropout = nn.MultiheadAttention(4, 2)
    assert profiled_ops(no_dropout.train(), q, kv, kv) == evaluating


def test_empty_key_sequence_has_an_empty_softmax() -> None:
    # S = 0: the softmax rows are empty and cost nothing (not -1 per row), as in
    # activation.softmax_ops; so do the scores and the weighted sums (empty dot products).
    module = nn.MultiheadAttention(4, 2)
    q, kv = torch.randn(3, 2, 4), torch.randn(0, 2, 4)
    per_element = 3 * 4 * (2 * 4) + 3 * 4 + 3 * 4 * (2 * 4)  # q proj, scaling, out proj
    assert profiled_ops(module, q, kv, kv) == 2 * per_element


def test_fast_path_is_counted_like_the_reference_path() -> None:
    # In eval mode without grad, batch_first self-attention runs a fused native kernel.
    module = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    reference = profiled_ops(module.train(), x, x, x)
    module.eval()
    with torch.no_grad():
        assert profiled_ops(module, x, x, x) == reference


def test_kdim_vdim_change_only_the_key_and_value_projections() -> None:
    same = nn.MultiheadAttention(4, 2)
    other = nn.MultiheadAttention(4, 2, kdim=3, vdim=7)
    q = torch.randn(2, 1, 4)
    base = profiled_ops(same, q, torch.randn(5, 1, 4), torch.randn(5, 1, 4))
    changed = profiled_ops(other, q, torch.randn(5, 1, 3), torch.randn(5, 1, 7))
    # per key/value row: E outputs, each with 2 * (kdim - E) more (or fewer) operations
    assert changed - base == 5 * 4 * 2 * (3 - 4) + 5 * 4 * 2 * (7 - 4)
