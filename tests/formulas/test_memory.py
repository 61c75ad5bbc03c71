"""Data movement: the common view, copy, creation and indexing calls count 0 and are known
(none reported as uncounted), in both grad modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from formulas.op_harness import GRAD_MODES, count_ops

from opscope.formulas import memory

x = torch.randn(2, 4, 6, 6)
index = torch.tensor([0, 2])
CALLS = {
    "view/reshape/flatten": lambda: x.view(2, -1).reshape(8, 36).flatten(),
    "permute/transpose/contiguous": lambda: x.permute(0, 2, 3, 1).transpose(1, 2).contiguous(),
    "expand/repeat/tile": lambda: (x[:, :1].expand(2, 4, 6, 6), x.repeat(1, 2, 1, 1), x.tile(2)),
    "cat/stack/split/chunk": lambda: (torch.cat([x, x]), torch.stack([x, x]), x.split(2, 1),
                                      x.chunk(3, 2), x.unbind(0)),
    "slicing and indexing": lambda: (x[:, 1:3, ::2], x[0, 1], x[:, index], x.index_select(1, index),
                                     x.gather(1, torch.zeros(2, 1, 6, 6, dtype=torch.long))),
    "padding": lambda: (F.pad(x, (1, 1, 2, 0)), F.pad(x, (1, 1, 1, 1), mode="reflect"),
                        F.pad(x, (1, 1, 1, 1), mode="replicate"),
                        F.pad(x, (1, 1, 1, 1), mode="circular")),
    "roll/flip/shuffles": lambda: (x.roll(1, 2), x.flip(3), F.pixel_shuffle(x, 2),
                                   F.pixel_unshuffle(x, 2), F.channel_shuffle(x, 2)),
    "copies and conversions": lambda: (x.clone(), x.to(torch.float64), x.half(), x.detach()),
    "creation": lambda: (torch.zeros_like(x), torch.ones(3), torch.full((2,), 1.0),
                         torch.arange(5), torch.empty(2), x.new_zeros(3), torch.eye(3)),
    "selection by a mask": lambda: (torch.where(x > 0, x, 0.0).masked_fill(x < 0, 1.0),
                                    x.tril(), x.triu(1)),
    "scatter and index_put (no accumulation)": lambda: (
        torch.zeros(3, 4).scatter(0, torch.zeros(1, 4, dtype=torch.long), 1.0),
        torch.zeros(5).index_put((index,), torch.ones(2)),
    ),
}  # fmt: skip

# the comparisons inside some calls (x > 0, x < 0) are counted: 1 per element each
COMPARISONS = {"selection by a mask": 2 * x.numel()}


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize("name", CALLS)
def test_data_movement_counts_nothing(name: str, grad_mode: str) -> None:
    counts = count_ops(CALLS[name], grad_mode)
    assert not counts.uncounted
    assert counts.ops == COMPARISONS.get(name, 0), counts.by_op


def test_accumulating_writes_are_counted() -> None:
    index = torch.tensor([0, 2, 0])
    values = torch.ones(3)
    assert count_ops(lambda: torch.zeros(5).index_put((index,), values, accumulate=True)).ops == 3
    src = torch.ones(2, 4)
    target = torch.zeros(3, 4)
    scatter_index = torch.zeros(2, 4, dtype=torch.long)
    assert count_ops(lambda: target.scatter_add(0, scatter_index, src)).ops == 8
    assert count_ops(lambda: target.scatter_reduce(0, scatter_index, src, "amax")).ops == 8
    assert count_ops(lambda: target.scatter_reduce(0, scatter_index, src, "mean")).ops == 8 + 12
    assert count_ops(lambda: target.index_add(0, index[:2], src, alpha=2)).ops == 16


@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")
def test_scatter_with_a_reduce_is_counted() -> None:
    src, target = torch.ones(2, 4), torch.zeros(3, 4)
    scatter_index = torch.zeros(2, 4, dtype=torch.long)
    assert count_ops(lambda: target.scatter(0, scatter_index, src, reduce="add")).ops == 8


def test_every_zero_operator_is_documented() -> None:
    page = (Path(__file__).parents[2] / "docs" / "formulas" / "memory.md").read_text()
    assert [name for name in memory.ZERO_OP_NAMES if f"`{name}`" not in page] == []
