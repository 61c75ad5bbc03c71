"""Summary mode: calls with the same module and shapes aggregate into one record."""

from __future__ import annotations

import io
import threading

import pytest
import torch
from rich.console import Console
from torch import nn

from opscope import Profiler


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()


def run(model: nn.Module, shapes: list[tuple[int, ...]], summary: bool) -> Profiler:
    with torch.inference_mode(), Profiler(model, summary=summary) as p:
        for shape in shapes:
            model(torch.randn(shape))
    return p


def test_summary_equals_the_detailed_records_aggregated() -> None:
    model = small_model()
    model(torch.randn(1, 3, 8, 8))  # materialise the lazy layer
    shapes = [(1, 3, 8, 8)] * 50 + [(2, 3, 8, 8)] * 20 + [(1, 3, 8, 8)] * 30
    detailed, summary = run(model, shapes, False), run(model, shapes, True)
    assert len(detailed.records) == 4 * 100
    assert len(summary.records) == 4 * 2  # each module, at batch 1 and at batch 2
    assert summary.total_ops == detailed.total_ops
    assert summary.report.total_calls == detailed.report.total_calls == 400
    conv_batch1 = next(r for r in summary.records if r.name == "0" and r.input_shape[0] == 1)
    single = next(r for r in detailed.records if r.name == "0" and r.input_shape[0] == 1)
    assert (conv_batch1.calls, conv_batch1.ops, conv_batch1.call_index) == (80, 80 * single.ops, 1)
    assert summary.report.total_params == detailed.report.total_params
    assert {s.module_type: s.calls for s in summary.report.by_type()} == {
        s.module_type: s.calls for s in detailed.report.by_type()
    }
    assert summary.to_dict()["layers"][0]["calls"] == 80


def test_summary_records_do_not_grow_with_calls() -> None:
    model = small_model()
    few = run(model, [(1, 3, 8, 8)] * 10, True)
    many = run(model, [(1, 3, 8, 8)] * 2000, True)
    assert len(few.records) == len(many.records) == 4
    assert many.total_ops == 200 * few.total_ops


def test_threads_lose_no_calls() -> None:
    for summary in (False, True):
        model = small_model()
        model(torch.randn(1, 3, 8, 8))
        with Profiler(model, summary=summary) as p:

            def work() -> None:
                with torch.inference_mode():
                    for _ in range(50):
                        model(torch.randn(1, 3, 8, 8))

            threads = [threading.Thread(target=work) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert p.report.total_calls == 4 * 50 * 4
        assert len({r.ops // r.calls for r in p.records if r.name == "0"}) == 1


def test_the_table_shows_the_call_counts() -> None:
    p = run(small_model(), [(1, 3, 8, 8)] * 25, True)
    console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    p.print(console=console)
    text = console.export_text()
    assert "0 ×25" in text
    assert "Total (100 calls)" in text


def _training_steps(model: nn.Module, steps: int, scale: float | None, kind: str) -> Profiler:
    """``steps`` steps of the optimizer ``kind`` (``"AdamW"``, ``"AdamW foreach"``...) in
    summary mode, its learning rate scheduled to change at every step; the forward's output
    scaled by a number that changes at every step (``scale`` None) or by ``scale``."""
    torch.manual_seed(0)
    name, *options = kind.split()
    optimizer = getattr(torch.optim, name)(model.parameters(), lr=1e-3, **dict.fromkeys(options, True))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    x = torch.randn(4, 3, 8, 8)
    with Profiler(model, summary=True) as p:
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            (model(x) * (1 / step if scale is None else scale)).sum().backward()
            optimizer.step()  # its learning rate, and Adam's bias corrections, change
            schedule.step()
    return p


@pytest.mark.parametrize("kind", ["AdamW", "AdamW foreach", "AdamW fused", "Adagrad fused"])
def test_numbers_that_change_at_every_step_make_no_new_distinct_calls(kind: str) -> None:
    # A scale, a learning rate or an Adam bias correction that changes at every step, given
    # to element-wise or optimizer operators, whose formulas read a number only as 0, 1, -1
    # or another, or to an operator without a formula (fused Adagrad), which reads none:
    # summary mode holds as many distinct calls after 12 steps as after 4, and the
    # optimizer's profiler markers (a new TorchBind object each step) add none either.
    model = small_model()
    model(torch.randn(1, 3, 8, 8))  # materialise the lazy layer
    short, long = _training_steps(model, 4, None, kind), _training_steps(model, 12, None, kind)
    assert len(long._block.log._codes) == len(short._block.log._codes)
    constant = _training_steps(model, 12, 0.5, kind)
    assert long.report.by_phase() == constant.report.by_phase()
    middle = _training_steps(model, 8, None, kind)
    steps = [p.report.by_phase()["step"][0] for p in (short, middle, long)]
    assert steps[2] - steps[1] == steps[1] - steps[0]  # every 4 steps cost the same


def test_a_foreach_operator_reads_its_numbers_as_its_elements_formula_does() -> None:
    # _foreach_norm's ord is read exactly, as linalg_vector_norm's: an infinite norm is
    # a maximum, not a power sum.
    tensors = [torch.randn(3, 4), torch.randn(5)]
    for order in (float("inf"), 2.0, 0.5):
        with Profiler(nn.Identity()) as together:
            torch._foreach_norm(tensors, order)
        with Profiler(nn.Identity()) as apart:
            for tensor in tensors:
                torch.linalg.vector_norm(tensor, order)
        assert together.total_ops == apart.total_ops > 0
