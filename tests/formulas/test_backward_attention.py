"""The attention kernels' backward: the CPU kernel against the backward written out with numbers
that count their own arithmetic (its gradients are torch's), every kernel's MACs against
``FlopCounterMode`` on the meta device, and what autograd runs for attention modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from formulas.op_harness import count_ops
from formulas.scalar_oracle import Counted, Tally, exp, total
from formulas.step_harness import count_step, flop_counter_flops_of
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from opscope.formulas.attention import attention_backward_macs, attention_backward_ops

aten = torch.ops.aten


def brute_force_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    mask: torch.Tensor | None,
) -> tuple[list[torch.Tensor], int]:
    """The gradients of one (batch, head) pair, as the fused kernels compute them: the weights
    recomputed from the log-sum-exp, every tensor input a counted number."""  # fmt: skip
    tally = Tally()

    def numbers(t: torch.Tensor) -> list[list[Counted]]:
        return [[Counted(x, tally) for x in row] for row in t.tolist()]

    qn, kn, vn, on, dn = (numbers(t) for t in (q, k, v, o, do))
    lse_n = [Counted(x, tally) for x in lse.tolist()]
    scale = 1 / math.sqrt(q.shape[-1])
    queries, keys = range(len(qn)), range(len(kn))
    scaled = [[x * scale for x in row] for row in qn]
    scores = [[total([a * b for a, b in zip(scaled[i], kn[j])]) for j in keys] for i in queries]
    if mask is not None:
        masks = mask.tolist()
        scores = [[scores[i][j] + masks[i][j] for j in keys] for i in queries]
    p = [[exp(scores[i][j] - lse_n[i]) for j in keys] for i in queries]
    dv = [[total([p[i][j] * dn[i][c] for i in queries]) for c in range(len(vn[0]))] for j in keys]
    dp = [[total([a * b for a, b in zip(dn[i], vn[j])]) for j in keys] for i in queries]
    rows = [total([a * b for a, b in zip(dn[i], on[i])]) for i in queries]
    ds = [[p[i][j] * (dp[i][j] - rows[i]) for j in keys] for i in queries]
    dq = [[total([ds[i][j] * kn[j][e] for j in keys]) * scale for e in range(len(qn[0]))]
          for i in queries]  # fmt: skip
    dk = [[total([ds[i][j] * scaled[i][e] for i in queries]) for e in range(len(qn[0]))]
          for j in keys]  # fmt: skip
    values = [
        torch.tensor([[x.value for x in row] for row in grad], dtype=q.dtype)
        for grad in (dq, dk, dv)
    ]
    return values, tally.ops


@given(
    queries=st.integers(1, 4), keys=st.integers(1, 4), head_dim=st.integers(1, 4),
    masking=st.sampled_from(["none", "mask", "causal"]),
)  # fmt: skip
@settings(max_examples=30, deadline=None)
def test_cpu_kernel_backward_equals_a_counted_backward(
    queries: int, keys: int, head_dim: int, masking: str
) -> None:
    """The CPU kernel's backward (its values have the keys' size)."""
    torch.manual_seed(0)
    value_dim = head_dim
    q = torch.randn(1, 1, queries, head_dim, dtype=torch.float64)
    k = torch.randn(1, 1, keys, head_dim, dtype=torch.float64)
    v = torch.randn(1, 1, keys, value_dim, dtype=torch.float64)
    mask = torch.randn(queries, keys, dtype=torch.float64) if masking == "mask" else None
    causal = masking == "causal"
    if causal:  # the kernel's causal mask, written as the additive mask it stands for
        hidden = torch.ones(queries, keys, dtype=torch.bool).triu(1)
        additive = torch.zeros(queries, keys, dtype=torch.float64).masked_fill(hidden, -math.inf)
    else:
        additive = mask
    o, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=mask)
    do = torch.randn_like(o)
    arguments = (do, q, k, v, o, lse, 0.0, causal)
    expected, ops = brute_force_backward(q[0, 0], k[0, 0], v[0, 0], o[0, 0], lse[0, 0], do[0, 0],
                                         additive)  # fmt: skip
    grads = aten._scaled_dot_product_flash_attention_for_cpu_backward(*arguments, attn_mask=mask)
    for grad, value in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad[0, 0], value)
    counts = count_ops(lambda: aten._scaled_dot_product_flash_attention_for_cpu_backward(
        *arguments, attn_mask=mask))  # fmt: skip
    assert counts.ops == ops


B, H, L, S, E, V = 2, 3, 4, 5, 8, 6


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def kernels() -> dict[str, tuple[object, ...]]:
    """Each backward kernel's call on meta tensors, ``(B, H, L, E)`` or ``(B, L, H, E)``."""
    q, k, v, o = meta(B, H, L, E), meta(B, H, S, E), meta(B, H, S, V), meta(B, H, L, V)
    lse, seed = meta(B, H, L), torch.empty((), dtype=torch.int64, device="meta")
    first = [t.transpose(1, 2) for t in (o, q, k, v, o)]  # grad_out, q, k, v, out
    return {
        "_scaled_dot_product_flash_attention_backward": (
            aten._scaled_dot_product_flash_attention_backward,
            (o, q, k, v, o, lse, None, None, L, S, 0.0, False, seed, seed),
        ),
        "_scaled_dot_product_efficient_attention_backward": (
            aten._scaled_dot_product_efficient_attention_backward,
            (o, q, k, v, None, o, lse, seed, seed, 0.0, [True, True, True, False], False),
        ),
        "_scaled_dot_product_cudnn_attention_backward": (
            aten._scaled_dot_product_cudnn_attention_backward,
            (o, q, k, v, o, lse, seed, seed, None, None, None, L, S, 0.0, False),
        ),
        "_flash_attention_backward": (
            aten._flash_attention_backward,
            (*first[:4], first[4], lse, None, None, L, S, 0.0, False, seed, seed),
        ),
    }


@pytest.mark.parametrize("name", kernels())
def test_kernel_backward_macs_are_flop_counter_flops_halved(name: str) -> None:
    op, arguments = kernels()[name]
    counts = count_ops(lambda: op(*arguments), "no_grad")
    assert not counts.uncounted
    assert 2 * counts.macs == flop_counter_flops_of(lambda: op(*arguments))
    sizes = {"batch": B * H, "query_len": L, "key_len": S, "head_dim": E, "value_dim": V}
    assert counts.macs == attention_backward_macs(**sizes)
    assert counts.ops == attention_backward_ops(**sizes)


def test_efficient_attention_kernel_backward() -> None:
    """``_efficient_attention_backward`` takes ``(B, L, H, E)`` tensors (FlopCounterMode reads
    them as ``(B, H, L, E)``: the two agree where ``L = S = H``)."""
    n = 3
    q, k, v = meta(B, n, n, E), meta(B, n, n, E), meta(B, n, n, V)
    lse, seed = meta(B, n, n), torch.empty((), dtype=torch.int64, device="meta")
    arguments = (v.clone(), q, k, v, None, v.clone(), None, None, n, n, lse, 0.0, seed, seed, 0,
                 False)  # fmt: skip
    counts = count_ops(lambda: aten._efficient_attention_backward(*arguments), "no_grad")
    assert 2 * counts.macs == flop_counter_flops_of(
        lambda: aten._efficient_attention_backward(*arguments)
    )
    assert counts.ops == attention_backward_ops(
        batch=B * n, query_len=n, key_len=n, head_dim=E, value_dim=V
    )


def test_mask_gradient_sums_over_broadcast_dims() -> None:
    """The efficient kernel can return the mask's gradient: the scores' gradients, summed over
    the dims the mask was broadcast along (here the batch and the heads)."""
    q, k, v, o = meta(B, H, L, E), meta(B, H, S, E), meta(B, H, S, V), meta(B, H, L, V)
    lse, seed = meta(B, H, L), torch.empty((), dtype=torch.int64, device="meta")
    bias = meta(1, 1, L, S)
    arguments = (o, q, k, v, bias, o, lse, seed, seed, 0.0, [True, True, True, True], False)
    counts = count_ops(
        lambda: aten._scaled_dot_product_efficient_attention_backward(*arguments), "no_grad"
    )
    sizes = {"batch": B * H, "query_len": L, "key_len": S, "head_dim": E, "value_dim": V}
    scores = B * H * L * S
    assert counts.ops == attention_backward_ops(**sizes, masks=1) + scores - L * S


def test_sdpa_module_backward_on_cpu() -> None:
    """``F.scaled_dot_product_attention`` on the CPU runs the flash kernel and its backward."""
    q, k, v = (torch.randn(2, 3, 4, 8, requires_grad=True) for _ in range(3))

    class Attention(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v)

    backward = count_step(Attention(), q, k, v)["backward"]
    assert not backward.uncounted
    sizes = {"batch": 6, "query_len": 4, "key_len": 4, "head_dim": 8, "value_dim": 8}
    assert backward.ops == attention_backward_ops(**sizes)
    assert backward.macs == attention_backward_macs(**sizes)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_backward_is_counted(need_weights: bool) -> None:
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8, requires_grad=True)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, need_weights=need_weights)[0]

    backward = count_step(SelfAttention(), x)["backward"]
    assert not backward.uncounted
    assert backward.macs > 0
