"""Data movement: the ATen operators that do no arithmetic, counted 0, listed one by one.

Every operator here only moves, copies, views, selects, creates or describes data: views and
reshapes, permutations and expansions, copies and dtype conversions, creation (``empty``,
``zeros``, ``full``, ``arange``, random draws), indexing and slicing, gathering and
concatenation, constant/reflect/replicate padding, rolls and flips, embedding lookups,
unpooling (a scatter into zeros), selection by a precomputed mask (``where``,
``masked_fill``), metadata queries, and building, padding and describing nested tensors. None of them adds, multiplies or
compares tensor values, so each call counts 0 operations and 0 MACs. Index arithmetic
(``arange``'s ``start + i * step``, the positions a gather reads) works on indices, not on
the data, and is not counted, as upsampling's source coordinates are not.

The list is explicit on purpose: an operator missing from every registry is reported as
uncounted by name, never silently taken as 0. The few data-movement operators that can also
accumulate are counted apart: ``index_put`` with ``accumulate=True`` adds each value into
place, ``scatter`` with a ``reduce``, ``scatter_add``, ``scatter_reduce`` and ``index_add``
combine each source value with its destination.
"""

from __future__ import annotations

import math

import torch

from opscope.formulas.registry import OpCall, aten_ops, register_op, register_zero_ops

aten = torch.ops.aten

VIEW_OPS: tuple[str, ...] = (
    "view", "_unsafe_view", "view_as", "reshape", "_reshape_alias", "reshape_as",
    "_reshape_copy", "view_copy", "flatten", "unflatten", "ravel", "squeeze", "squeeze_",
    "squeeze_copy", "unsqueeze", "unsqueeze_", "unsqueeze_copy", "permute", "permute_copy",
    "transpose", "transpose_", "transpose_copy", "t", "t_", "t_copy", "swapaxes", "swapdims",
    "movedim", "moveaxis", "numpy_T", "mT", "mH", "adjoint", "matrix_H", "expand",
    "expand_as", "expand_copy", "broadcast_to", "broadcast_tensors", "as_strided",
    "as_strided_", "as_strided_copy", "select", "select_copy", "slice", "slice_copy", "narrow",
    "narrow_copy", "unfold", "unfold_copy", "diagonal", "diagonal_copy", "unbind",
    "unbind_copy", "split", "split_copy", "split_with_sizes", "split_with_sizes_copy",
    "unsafe_split", "unsafe_split_with_sizes", "chunk", "unsafe_chunk", "tensor_split",
    "hsplit", "vsplit", "dsplit", "alias", "alias_copy", "detach", "detach_", "detach_copy",
    "lift", "lift_fresh", "lift_fresh_copy", "resolve_conj", "resolve_neg", "conj", "_conj",
    "real", "imag", "view_as_real", "view_as_complex",
)  # fmt: skip
"""Views, reshapes, permutations, expansions and splits: new metadata over the same data."""

COPY_OPS: tuple[str, ...] = (
    "contiguous", "clone", "copy", "copy_", "_to_copy", "to", "_copy_from",
    "_copy_from_and_resize", "type_as", "to_dense", "_to_dense", "resize_", "resize_as_",
    "set_", "_local_scalar_dense", "item",
)  # fmt: skip
"""Copies (a dtype or device conversion is a copy too), resizes and reads of a scalar."""

CREATION_OPS: tuple[str, ...] = (
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty",
    "new_empty_strided", "zeros", "zeros_like", "new_zeros", "ones", "ones_like", "new_ones",
    "full", "full_like", "new_full", "scalar_tensor", "arange", "linspace", "eye",
    "tril_indices", "triu_indices", "fill", "fill_", "zero_", "one_hot", "rand", "rand_like",
    "randn", "randn_like", "randint", "randint_like", "randperm", "normal", "normal_",
    "uniform_", "bernoulli", "bernoulli_", "random_", "exponential_", "cauchy_", "log_normal_",
    "geometric_",
)  # fmt: skip
"""Creation and filling, random draws included (drawing is not arithmetic on the data)."""

INDEXING_OPS: tuple[str, ...] = (
    "index", "_unsafe_index", "index_select", "gather", "take", "masked_select", "where",
    "masked_fill", "masked_fill_", "index_fill", "index_fill_", "masked_scatter",
    "masked_scatter_", "tril", "triu", "slice_scatter", "select_scatter", "diagonal_scatter",
    "as_strided_scatter", "cat", "concat", "concatenate", "stack", "hstack", "vstack",
    "dstack", "column_stack", "pad", "constant_pad_nd", "reflection_pad1d",
    "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d", "_pad_circular", "_pad_enum", "roll", "flip", "fliplr", "flipud",
    "rot90", "repeat", "repeat_interleave", "tile", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_channel_shuffle", "im2col", "embedding", "max_unpool2d",
    "max_unpool3d",
)  # fmt: skip
"""Indexing, selection by a given mask or index, concatenation, padding and rearrangement."""

METADATA_OPS: tuple[str, ...] = (
    "size", "stride", "sym_size", "sym_stride", "sym_numel", "numel", "dim", "is_contiguous",
    "sym_is_contiguous", "storage_offset", "sym_storage_offset", "is_strides_like_format",
    "is_non_overlapping_and_dense", "_assert_async", "_assert_tensor_metadata",
    "_functional_assert_async",
)  # fmt: skip
"""Queries and assertions on metadata (they reach a dispatch mode for tensor subclasses)."""

NESTED_OPS: tuple[str, ...] = (
    "_nested_tensor_from_mask", "_nested_tensor_from_mask_left_aligned", "to_padded_tensor",
    "nested_to_padded_tensor", "_nested_from_padded", "_nested_from_padded_and_nested_example",
    "_nested_from_padded_tensor", "_nested_tensor_from_tensor_list", "_nested_view_from_buffer",
    "_nested_view_from_buffer_copy", "_nested_tensor_size", "_nested_tensor_strides",
    "_nested_tensor_storage_offsets", "_nested_compute_contiguous_strides_offsets",
    "_nested_view_from_jagged", "_nested_view_from_jagged_copy", "_nested_get_values",
    "_nested_get_values_copy", "_nested_get_offsets", "_nested_get_lengths",
    "_nested_get_ragged_idx", "_nested_get_min_seqlen", "_nested_get_max_seqlen",
    "_nested_get_jagged_dummy", "_jagged_to_padded_dense_forward",
    "_padded_dense_to_jagged_forward",
)  # fmt: skip
"""Nested tensors built, padded and described: a padded batch and a padding mask turned
into a nested tensor (the lengths read from the mask are index arithmetic, and checking
that the mask is left-aligned is a test on the mask, not on the data), a nested tensor
padded back, and the queries on its sizes, strides and offsets."""

BACKWARD_OPS: tuple[str, ...] = (
    "select_backward", "slice_backward", "diagonal_backward",
    "value_selecting_reduction_backward",
)  # fmt: skip
"""Backward operators that only place a gradient into zeros: the gradient of a selection, a
slice or a diagonal (a view's), and of ``max(dim)`` / ``min(dim)`` / ``median(dim)``..., whose
gradient goes to the saved index of each output."""

ZERO_OP_NAMES: tuple[str, ...] = (
    VIEW_OPS + COPY_OPS + CREATION_OPS + INDEXING_OPS + METADATA_OPS + NESTED_OPS + BACKWARD_OPS
)
"""Every ``torch.ops.aten`` operator name this module registers with 0 operations (plus
``scatter``/``index_put`` when they do not accumulate)."""

register_zero_ops(*aten_ops(*ZERO_OP_NAMES), torch.ops.prim.layout, torch.ops.prim.device)
PROFILER_OPS: tuple[torch._ops.OpOverloadPacket, ...] = tuple(
    packet
    for packet in (
        getattr(torch.ops.profiler, name, None)
        for name in ("_record_function_enter", "_record_function_enter_new",
                     "_record_function_exit")
    )
    if isinstance(packet, torch._ops.OpOverloadPacket)
)  # fmt: skip
"""The profiler's markers (``torch.profiler.record_function``, which every optimizer step
opens): they record a name and a time, no arithmetic."""
register_zero_ops(*PROFILER_OPS)
register_zero_ops(*aten_ops("scatter", "scatter_"))  # scatter's reduce overloads: below


@register_op(aten.scatter.reduce, aten.scatter.value_reduce, aten.scatter_.reduce,
             aten.scatter_.value_reduce, family="memory")  # fmt: skip
def count_scatter_reduce(call: OpCall) -> int:
    """``scatter(self, dim, index, src, reduce=...)``: each of the ``numel(index)`` source
    values is combined (added or multiplied) into its destination, one operation each.

    >>> from opscope.formulas.registry import TensorMeta
    >>> index = TensorMeta((2, 3), torch.int64)
    >>> count_scatter_reduce(OpCall((TensorMeta((4, 3), torch.float32), 0, index, 1.0),
    ...                             (("reduce", "add"),), ((4, 3),)))
    6
    """
    return math.prod(call.args[2].shape)


@register_op(*aten_ops("scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_"),
             family="memory")  # fmt: skip
def count_scatter_accumulate(call: OpCall) -> int:
    """``scatter_add(self, dim, index, src)`` / ``scatter_reduce(..., reduce, include_self)``:
    one operation per source value read (``numel(index)``), plus, for ``reduce='mean'``, one
    division per element of the result."""
    divisions = math.prod(call.output) if call.arg(4, "reduce") == "mean" else 0
    return math.prod(call.args[2].shape) + divisions


PADDING_BACKWARD_OPS: tuple[str, ...] = tuple(
    f"{mode}_pad{dims}d_backward" for mode in ("reflection", "replication") for dims in (1, 2, 3)
)
"""The backward of the reflection and replication paddings: each output element's gradient
added into the input element it copied (a border element receives several)."""


@register_op(*aten_ops("unfold_backward", *PADDING_BACKWARD_OPS), family="memory")
def count_scatter_backward(call: OpCall) -> int:
    """``unfold_backward(grad_in, input_sizes, dim, size, step)``, the gradient of
    ``Tensor.unfold``, and the padding backward (:data:`PADDING_BACKWARD_OPS`): each element of
    the incoming gradient added into place in the zeroed input gradient, one addition per
    element of the first argument (the kernels' scatter, as the pooling backward is counted)."""
    return math.prod(call.input)


@register_op(*aten_ops("index_add", "index_add_"), family="memory")
def count_index_add(call: OpCall) -> int:
    """``index_add(self, dim, index, source, alpha=1)``: one addition per source element, and
    one multiplication by ``alpha`` when it is not 1."""
    return math.prod(call.args[3].shape) * (1 + int(call.arg(4, "alpha", 1) != 1))


def count_index_put(call: OpCall) -> int:
    """``index_put(self, indices, values, accumulate)``: 0 when values are written, one
    addition per value when ``accumulate=True`` (``numel(values)``: exact when ``values``
    has the indexed shape, as ``x.index_put_(idx, v, accumulate=True)`` is usually called)."""
    if not call.arg(3, "accumulate", False):
        return 0
    return math.prod(call.args[2].shape)


register_op(
    *aten_ops("index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put"), family="memory"
)(count_index_put)
