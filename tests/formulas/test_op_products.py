"""Operators with products (matrix multiplies, convolutions, attention, recurrent layers):
their counts against closed forms written here and brute-force evaluations, and their MACs
against ``FlopCounterMode`` / 2, on random shapes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from formulas.op_harness import GRAD_MODES, Case, count_ops, flop_counter_flops, module_formula
from formulas.scalar_oracle import Counted, Tally, exp, total
from helpers import profiled_ops
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from opscope.formulas.conv import conv_ops
from opscope.formulas.conv_transpose import conv_transpose_ops


def dot_products(output: torch.Tensor, inner: int) -> int:
    """Each output element a dot product of ``inner`` pairs: ``inner`` products and
    ``inner - 1`` additions."""
    return output.numel() * max(2 * inner - 1, 0)


def check_macs(run, grad_mode: str) -> int:  # type: ignore[no-untyped-def]
    counts = count_ops(run, grad_mode)
    assert not counts.uncounted
    assert 2 * counts.macs == flop_counter_flops(run, grad_mode)
    return counts.ops


# -- matrix products --------------------------------------------------------------------------

shapes_1_to_4d = st.lists(st.integers(1, 3), min_size=0, max_size=2)


@settings(max_examples=40)
@given(
    left_batch=shapes_1_to_4d, right_batch=shapes_1_to_4d, m=st.integers(1, 4),
    k=st.integers(1, 4), n=st.integers(1, 4), left_vector=st.booleans(),
    right_vector=st.booleans(), grad_mode=st.sampled_from(list(GRAD_MODES)),
)  # fmt: skip
def test_matmul_decomposes_into_counted_products(
    left_batch: list[int], right_batch: list[int], m: int, k: int, n: int,
    left_vector: bool, right_vector: bool, grad_mode: str,
) -> None:  # fmt: skip
    """``a @ b`` in every rank combination (broadcast batches, 1-D operands): as many dot
    products of ``K`` pairs as output elements; MACs as FlopCounterMode counts them (it
    counts no ``mv``/``dot``)."""
    left = torch.randn(k) if left_vector else torch.randn(*left_batch, m, k)
    right = (
        torch.randn(k) if right_vector else torch.randn(*right_batch[-len(left_batch) or 0 :], k, n)
    )
    try:
        output = left @ right
    except RuntimeError:  # batch dims that do not broadcast
        return
    assert check_macs(lambda: left @ right, grad_mode) == dot_products(output, k)


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
def test_matmul_kernel_depends_on_strides_but_not_the_count(grad_mode: str) -> None:
    """A contiguous 3-D operand times a vector folds into ``mv`` (no MACs for
    FlopCounterMode), a transposed one runs ``bmm`` (MACs): why ``matmul`` has no formula."""
    vector = torch.randn(5)
    contiguous, transposed = torch.randn(3, 4, 5), torch.randn(4, 3, 5).transpose(0, 1)
    folded = count_ops(lambda: contiguous @ vector, grad_mode)
    batched = count_ops(lambda: transposed @ vector, grad_mode)
    assert folded.ops == batched.ops == 12 * (2 * 5 - 1)
    assert (folded.macs, batched.macs) == (0, 60)
    assert check_macs(lambda: transposed @ vector, grad_mode) == batched.ops


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize(
    "equation, shapes, inner",
    [
        ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)], 5),
        ("ij,jk->ik", [(3, 4), (4, 5)], 4),
        ("i,i->", [(7,), (7,)], 7),
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 4),
        ("nchw,kc->nkhw", [(1, 3, 2, 2), (4, 3)], 3),
    ],
)
def test_einsum_decomposes_into_counted_products(
    equation: str, shapes: list[tuple[int, ...]], inner: int, grad_mode: str
) -> None:
    operands = [torch.randn(shape) for shape in shapes]
    output = torch.einsum(equation, *operands)
    assert check_macs(lambda: torch.einsum(equation, *operands), grad_mode) == dot_products(
        output, inner
    )


def test_addmm_scalars() -> None:
    bias, a, b = torch.randn(5), torch.randn(3, 4), torch.randn(4, 5)
    products = 3 * 5 * (2 * 4 - 1)
    assert count_ops(lambda: torch.addmm(bias, a, b)).ops == products + 15
    assert count_ops(lambda: torch.addmm(bias, a, b, beta=0.5, alpha=2)).ops == products + 3 * 15
    assert count_ops(lambda: torch.addmm(bias, a, b, beta=0)).ops == products
    assert count_ops(lambda: torch.addmm(bias, a, b, beta=0, alpha=3)).ops == products + 15
    batch = torch.randn(2, 3, 5)
    assert count_ops(lambda: torch.baddbmm(batch, a.expand(2, 3, 4), b.expand(2, 4, 5))).ops == (
        2 * (products + 15)
    )


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
def test_vector_products_count_operations_but_no_macs(grad_mode: str) -> None:
    matrix, vector = torch.randn(3, 4), torch.randn(4)
    for run, ops in (
        (lambda: torch.mv(matrix, vector), 3 * 7),
        (lambda: torch.dot(vector, vector), 7),
        (lambda: torch.addmv(torch.randn(3), matrix, vector), 3 * 7 + 3),
        (lambda: F.linear(torch.randn(2, 4), vector), 2 * 7),
        (lambda: F.linear(torch.randn(2, 3, 4), vector), 6 * 7),
    ):
        counts = count_ops(run, grad_mode)
        assert (counts.ops, counts.macs) == (ops, 0)
        assert flop_counter_flops(run, grad_mode) == 0


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
def test_functional_bilinear_is_the_module_count(grad_mode: str) -> None:
    module = nn.Bilinear(3, 4, 2)
    x1, x2 = torch.randn(5, 3), torch.randn(5, 4)
    counts = count_ops(lambda: F.bilinear(x1, x2, module.weight, module.bias), grad_mode)
    assert counts.ops == profiled_ops(module, x1, x2)
    assert counts.macs == 0 == flop_counter_flops(lambda: module(x1, x2))


# -- convolutions --------------------------------------------------------------------------


@settings(max_examples=30)
@given(
    dims=st.integers(1, 3), groups=st.integers(1, 2), in_per_group=st.integers(1, 2),
    out_per_group=st.integers(1, 3), kernel=st.integers(1, 3), stride=st.integers(1, 2),
    padding=st.integers(0, 2), dilation=st.integers(1, 2), bias=st.booleans(),
    transposed=st.booleans(), grad_mode=st.sampled_from(list(GRAD_MODES)),
)  # fmt: skip
def test_functional_convolutions(
    dims: int, groups: int, in_per_group: int, out_per_group: int, kernel: int, stride: int,
    padding: int, dilation: int, bias: bool, transposed: bool, grad_mode: str,
) -> None:  # fmt: skip
    """``F.conv*d`` / ``F.conv_transpose*d`` count what :func:`conv_ops` /
    :func:`conv_transpose_ops` give for the same settings; MACs are FlopCounterMode's."""
    c_in, c_out = groups * in_per_group, groups * out_per_group
    x = torch.randn(2, c_in, *[6] * dims)
    if transposed:
        weight = torch.randn(c_in, out_per_group, *[kernel] * dims)
        padding = min(padding, dilation * (kernel - 1))  # torch needs a non-negative output
        function = getattr(F, f"conv_transpose{dims}d")
        kwargs = {"stride": stride, "padding": padding, "groups": groups, "dilation": dilation}
    else:
        weight = torch.randn(c_out, in_per_group, *[kernel] * dims)
        function = getattr(F, f"conv{dims}d")
        kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    b = torch.randn(c_out) if bias else None
    output = function(x, weight, b, **kwargs)
    if transposed:
        expected = conv_transpose_ops(
            batch=2, in_channels=c_in, out_channels=c_out, input_size=x.shape[2:],
            output_size=output.shape[2:], kernel_size=[kernel] * dims, stride=[stride] * dims,
            padding=[padding] * dims, dilation=[dilation] * dims, groups=groups, bias=bias,
        )  # fmt: skip
    else:
        expected = conv_ops(
            batch=2, in_channels=c_in, out_channels=c_out, output_size=output.shape[2:],
            kernel_size=[kernel] * dims, groups=groups, bias=bias,
        )  # fmt: skip
    assert check_macs(lambda: function(x, weight, b, **kwargs), grad_mode) == expected


# -- attention --------------------------------------------------------------------------


def brute_force_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, int]:
    """softmax(q k^T * scale + mask) v for one (batch, head), with counting scalars: the
    query scaled once per element, dot products, the mask added, exp / sum / divide, the
    weighted sums."""
    tally = Tally()

    def counted(t: torch.Tensor) -> list[list[Counted]]:
        return [[Counted(float(x), tally) for x in row] for row in t.tolist()]

    qs = [[x * scale for x in row] for row in counted(q)]
    ks, vs = counted(k), counted(v)
    out = []
    for i, row in enumerate(qs):
        scores = [total([a * b for a, b in zip(row, key)]) for key in ks]
        if mask is not None:
            scores = [s + float(mask[i, j]) for j, s in enumerate(scores)]
        exps = [exp(s) for s in scores]
        norm = total(exps)
        weights = [e / norm for e in exps]
        out.append([total([w * value[c] for w, value in zip(weights, vs)]).value
                    for c in range(v.shape[-1])])  # fmt: skip
    return torch.tensor(out), tally.ops


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_counts_its_definition(grad_mode: str, masked: bool) -> None:
    """On CPU the composite (inference mode) and the fused CPU kernel it runs as (no_grad)
    count the same: the definition, checked by brute force, value included."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    mask = torch.randn(3, 5) if masked else None
    expected_ops = 0
    for head in range(2):
        value, ops = brute_force_attention(q[0, head], k[0, head], v[0, head], mask, 0.5)
        expected_ops += ops
        result = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5)
        assert torch.allclose(result[0, head], value, atol=1e-5)
    counts = count_ops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5),
                       grad_mode)  # fmt: skip
    fused = "aten._scaled_dot_product_flash_attention_for_cpu.default"
    assert (fused in counts.by_op) == (grad_mode == "no_grad")
    assert counts.ops == expected_ops
    assert counts.macs == 2 * 3 * 5 * (4 + 4)


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
def test_sdpa_causal_bool_mask_and_grouped_query_heads(grad_mode: str) -> None:
    q, k, v = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    pairs, scores = 2 * 4, 3 * 5
    plain = pairs * (3 * 8 + scores * 15 + 3 * 14 + 3 * 8 * 9)
    for kwargs, masks in (
        ({}, 0),
        ({"is_causal": True}, 1),
        ({"attn_mask": torch.ones(3, 5, dtype=torch.bool)}, 1),
    ):
        counts = count_ops(
            lambda kwargs=kwargs: F.scaled_dot_product_attention(
                q, k, v, enable_gqa=True, **kwargs
            ),
            grad_mode,
        )
        assert counts.ops == plain + masks * pairs * scores
        assert counts.macs == pairs * scores * 16


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
def test_sdpa_macs_are_flop_counter_flops_halved_on_meta(grad_mode: str) -> None:
    with torch.device("meta"):
        q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 4)
    check_macs(lambda: F.scaled_dot_product_attention(q, k, v), grad_mode)


# -- recurrent layers --------------------------------------------------------------------------


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_packed_sequences_count_the_real_steps(cell: type[nn.RNNBase], grad_mode: str) -> None:
    """A PackedSequence runs ``sum(lengths)`` cells (``lstm.data`` and friends)."""
    module = cell(3, 4, num_layers=2)
    packed = pack_padded_sequence(torch.randn(5, 3, 3), [5, 3, 2])
    counts = count_ops(lambda: module(packed), grad_mode)
    assert not counts.uncounted
    if grad_mode == "inference_mode" or cell is not nn.GRU:
        assert counts.ops == profiled_ops(module, packed)


# -- module MACs on random configurations ------------------------------------------------


def assert_module_macs(factory: Callable[[], nn.Module], shapes: list[tuple[int, ...]]) -> None:
    """The module formula's MACs equal FlopCounterMode's FLOPs / 2 for the same call, on the
    meta device (where torch runs every family through the products FlopCounterMode counts),
    and the op level's MACs."""
    _, _, _, macs = module_formula(Case(factory, lambda: tuple(torch.randn(s) for s in shapes)))
    with torch.device("meta"):
        module = factory().eval()
        inputs = [torch.randn(shape) for shape in shapes]
    assert 2 * macs == flop_counter_flops(lambda: module(*inputs))
    assert count_ops(lambda: module(*inputs)).macs == macs


@settings(max_examples=25)
@given(
    dims=st.integers(1, 3), groups=st.integers(1, 3), in_per_group=st.integers(1, 2),
    out_per_group=st.integers(1, 2), kernel=st.integers(1, 3), stride=st.integers(1, 3),
    padding=st.integers(0, 2), bias=st.booleans(), transposed=st.booleans(),
)  # fmt: skip
def test_conv_module_macs(
    dims: int, groups: int, in_per_group: int, out_per_group: int, kernel: int, stride: int,
    padding: int, bias: bool, transposed: bool,
) -> None:  # fmt: skip
    kind = getattr(nn, f"ConvTranspose{dims}d" if transposed else f"Conv{dims}d")
    padding = min(padding, kernel - 1) if transposed else padding
    assert_module_macs(
        lambda: kind(groups * in_per_group, groups * out_per_group, kernel, stride=stride,
                     padding=padding, groups=groups, bias=bias),
        [(2, groups * in_per_group, *[5] * dims)],
    )  # fmt: skip


@settings(max_examples=20)
@given(batch=st.lists(st.integers(1, 3), max_size=2), features=st.integers(1, 5),
       out=st.integers(1, 5), bias=st.booleans())  # fmt: skip
def test_linear_module_macs(batch: list[int], features: int, out: int, bias: bool) -> None:
    assert_module_macs(lambda: nn.Linear(features, out, bias=bias), [(*batch, features)])


@settings(max_examples=20)
@given(
    heads=st.integers(1, 3), head_dim=st.integers(1, 3), target=st.integers(1, 4),
    source=st.integers(1, 4), batch_first=st.booleans(), bias=st.booleans(),
    bias_kv=st.booleans(), zero_attn=st.booleans(), kdim=st.integers(1, 4),
)  # fmt: skip
def test_multihead_attention_module_macs(
    heads: int, head_dim: int, target: int, source: int, batch_first: bool, bias: bool,
    bias_kv: bool, zero_attn: bool, kdim: int,
) -> None:  # fmt: skip
    embed = heads * head_dim
    assert_module_macs(
        lambda: nn.MultiheadAttention(embed, heads, bias=bias, add_bias_kv=bias_kv,
                                      add_zero_attn=zero_attn, kdim=kdim, vdim=kdim + 1,
                                      batch_first=batch_first),
        [(2, target, embed), (2, source, kdim), (2, source, kdim + 1)]
        if batch_first else [(target, 2, embed), (source, 2, kdim), (source, 2, kdim + 1)],
    )  # fmt: skip


@settings(max_examples=15)
@given(
    kind=st.sampled_from([nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell]),
    layers=st.integers(1, 2), bidirectional=st.booleans(), bias=st.booleans(), proj=st.booleans(),
)  # fmt: skip
def test_recurrent_module_macs(
    kind: type[nn.Module], layers: int, bidirectional: bool, bias: bool, proj: bool
) -> None:
    """On meta torch decomposes every recurrent layer into ``mm``/``addmm`` (on CPU an LSTM
    runs as ``mkldnn_rnn_layer``, which FlopCounterMode has no formula for)."""
    if issubclass(kind, nn.RNNCellBase):
        assert_module_macs(lambda: kind(3, 4, bias=bias), [(2, 3)])
        return
    extra = {"proj_size": 2} if proj and kind is nn.LSTM else {}
    assert_module_macs(
        lambda: kind(3, 4, num_layers=layers, bidirectional=bidirectional, bias=bias, **extra),
        [(5, 2, 3)],
    )
