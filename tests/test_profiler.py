"""The Profiler's hooks: what they record, and that they leave nothing behind."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torchvision
from rich.console import Console
from torch import nn

from opscope import Profiler
from helpers import hook_count, OpLog


def hook_bookkeeping(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks_with_kwargs) + len(m._forward_hooks_always_called)
        for m in model.modules()
    )


class TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1, bias=False)
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.head(self.features(x)).mean((-2, -1)))


def test_records_one_per_call_in_execution_order() -> None:
    model = TwoConvs()
    with Profiler(model, include=[nn.Conv2d]) as p:
        model(torch.randn(2, 3, 5, 5))
    assert [(r.name, r.module_type, r.call_index) for r in p.records] == [
        ("features.0", "Conv2d", 1),
        ("head", "Conv2d", 1),
    ]
    first, second = p.records
    assert (first.input_shape, first.output_shape) == ((2, 3, 5, 5), (2, 8, 5, 5))
    assert (second.input_shape, second.output_shape) == ((2, 8, 5, 5), (2, 4, 5, 5))
    assert (first.kernel_size, first.stride, first.padding, first.dilation) == ((3, 3), (1, 1), (1, 1), (1, 1))
    assert (first.groups, first.bias, first.padding_mode) == (1, True, "zeros")
    assert second.bias is False
    assert (first.params, second.params) == (3 * 8 * 9 + 8, 8 * 4)
    assert first.ops == 2 * 8 * 25 * (2 * 3 * 9)
    assert second.ops == 2 * 4 * 25 * (2 * 8 - 1)
    assert p.total_ops == first.ops + second.ops


def test_hooks_are_removed_and_model_unchanged_after_the_block() -> None:
    model = torchvision.models.resnet18(weights=None)
    attributes_before = {name: set(vars(m)) for name, m in model.named_modules()}
    with Profiler(model, include=[nn.Conv2d]) as p:
        # No hook: every module's forward is followed, for as long as the block lasts.
        assert hook_count(model) == len(list(model.modules()))
        model(torch.randn(2, 3, 32, 32))
    assert hook_count(model) == hook_bookkeeping(model) == 0
    assert {name: set(vars(m)) for name, m in model.named_modules()} == attributes_before
    assert len(p.records) == 20


def test_hooks_are_removed_when_the_block_raises_and_records_survive() -> None:
    model = TwoConvs()
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        with Profiler(model, include=[nn.Conv2d]) as p:
            model.features(torch.randn(1, 3, 4, 4))  # one call recorded
            model.linear(torch.randn(1, 3))  # wrong width: raises
    assert hook_count(model) == 0
    assert [r.name for r in p.records] == ["features.0"]


def test_no_tensor_outlives_the_block_because_of_the_profiler() -> None:
    model = TwoConvs()
    x = torch.randn(1, 3, 6, 6)
    with Profiler(model, include=[nn.Conv2d]) as p:
        y = model(x)
        intermediate = model.features(x)
    refs = [weakref.ref(t) for t in (x, y, intermediate)]
    del x, y, intermediate
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    assert len(p.records) == 3


def test_a_shared_module_called_twice_counts_twice() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    with Profiler(model, include=[nn.Conv2d]) as p:
        model(torch.randn(1, 4, 6, 6))
    assert [(r.name, r.call_index) for r in p.records] == [("0", 1), ("0", 2)]
    assert p.total_ops == 2 * (4 * 36 * 2 * 4 * 9)
    assert p.report.total_params == 4 * 4 * 9 + 4  # the shared weights once


def test_a_conv2d_subclass_is_counted_under_its_own_name() -> None:
    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(MyConv(2, 2, 1, bias=False))
    with Profiler(model) as p:
        model(torch.randn(1, 2, 3, 3))
    assert [(r.module_type, r.ops) for r in p.records] == [("MyConv", 2 * 9 * (2 * 2 - 1))]


def test_the_model_may_itself_be_a_conv2d_and_be_called_with_a_keyword() -> None:
    conv = nn.Conv2d(1, 1, 3)
    with Profiler(conv) as p:
        conv(input=torch.randn(1, 1, 5, 5))
    assert [(r.name, r.input_shape, r.ops) for r in p.records] == [("", (1, 1, 5, 5), 9 * 18)]


def test_unbatched_input_counts_one_sample() -> None:
    conv = nn.Conv2d(3, 2, 3)
    with Profiler(conv) as p:
        conv(torch.randn(3, 5, 5))
        conv(torch.randn(4, 3, 5, 5))
    unbatched, batched = p.records
    assert unbatched.input_shape == (3, 5, 5)
    assert batched.ops == 4 * unbatched.ops == 4 * (2 * 3 * 3 * 2 * 27)


def test_lazy_conv2d_is_counted_with_its_materialised_parameters() -> None:
    model = nn.Sequential(nn.LazyConv2d(5, 3))
    with Profiler(model) as p:
        model(torch.randn(1, 2, 4, 4))
    (record,) = p.records
    assert record.params == 5 * 2 * 9 + 5
    assert record.ops == 5 * 2 * 2 * (2 * 2 * 9)


@pytest.mark.parametrize(
    "context",
    [torch.no_grad, torch.inference_mode, lambda: torch.autocast("cpu", dtype=torch.bfloat16)],
    ids=["no_grad", "inference_mode", "autocast"],
)
def test_counts_are_the_same_under_grad_modes_and_autocast(context) -> None:
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with Profiler(model) as plain:
        model(x)
    with context(), Profiler(model) as p:
        model(x)

    def counted(records):  # autocast changes dtypes, so bytes; never shapes or ops
        return [(r.name, r.input_shapes, r.output_shapes, r.ops) for r in records]

    assert counted(p.records) == counted(plain.records)
    assert p.total_ops > 0


def test_channels_last_gives_the_same_records() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    with Profiler(model) as plain:
        model(x)
    model = model.to(memory_format=torch.channels_last)
    with Profiler(model) as p:
        model(x.to(memory_format=torch.channels_last))
    assert p.records == plain.records


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_1"])
def test_cpu_and_meta_give_identical_records(name: str) -> None:
    builder = getattr(torchvision.models, name)
    cpu_model = builder(weights=None).eval()
    with torch.device("meta"):
        meta_model = builder(weights=None).eval()
    with Profiler(cpu_model) as on_cpu:
        cpu_model(torch.randn(2, 3, 96, 96))
    with Profiler(meta_model) as on_meta:
        meta_model(torch.empty(2, 3, 96, 96, device="meta"))
    assert on_meta.records == on_cpu.records
    assert len(on_cpu.records) > 10


def test_not_a_module_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="torch.nn.Module.*got int"):
        Profiler(42)  # type: ignore[arg-type]


def test_entering_an_active_profiler_raises_and_keeps_its_hooks() -> None:
    model = TwoConvs()
    profiler = Profiler(model, include=[nn.Conv2d])
    with profiler:
        with pytest.raises(RuntimeError, match="already active"):
            profiler.__enter__()
        assert hook_count(model) == len(list(model.modules()))
        model(torch.randn(1, 3, 4, 4))
    assert hook_count(model) == 0
    assert len(profiler.records) == 2


def test_entering_again_after_exit_starts_a_new_measurement() -> None:
    model = TwoConvs()
    profiler = Profiler(model, include=[nn.Conv2d])
    with profiler:
        model(torch.randn(1, 3, 4, 4))
        model(torch.randn(1, 3, 4, 4))
    assert len(profiler.records) == 4
    with profiler:
        model(torch.randn(1, 3, 4, 4))
    assert len(profiler.records) == 2


def test_calls_outside_the_block_are_not_recorded() -> None:
    model = TwoConvs()
    with Profiler(model, include=[nn.Conv2d]) as p:
        pass
    model(torch.randn(1, 3, 4, 4))
    assert p.records == ()
    assert p.total_ops == 0
    assert p.report.hooked_modules == 2


def test_records_read_inside_the_block_grow_with_new_calls() -> None:
    model = TwoConvs()
    with Profiler(model) as p:
        model(torch.randn(1, 3, 4, 4))
        first = p.total_ops
        model(torch.randn(1, 3, 4, 4))
        assert p.total_ops == 2 * first


def test_profiling_adds_no_tensor_operation() -> None:
    # The hooks read .shape only: no data access, copy, sync or .item() reaches the dispatcher.
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with OpLog() as bare:
        model(x)
    with Profiler(model) as p, OpLog() as profiled:
        model(x)
    assert profiled.ops == bare.ops
    assert len(p.records) > 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_records_equal_cpu_and_the_hooks_never_synchronise() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    with Profiler(model) as on_cpu:
        model(x)
    model, x = model.cuda(), x.cuda()
    model(x)  # warm-up: first-call synchronisations are cuDNN's, not ours
    torch.cuda.set_sync_debug_mode("error")
    try:
        with Profiler(model) as on_cuda:
            model(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert on_cuda.records == on_cpu.records


def test_reading_results_walks_the_model_only_after_a_change(monkeypatch) -> None:
    from opscope import profiler as profiler_module

    visits = []
    is_leaf = profiler_module._is_leaf
    monkeypatch.setattr(profiler_module, "_is_leaf", lambda m: visits.append(m) or is_leaf(m))
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Sequential(nn.Linear(2, 2), nn.Flatten()))
    with Profiler(net) as p:
        net[0](torch.ones(1, 1, 2, 2))
        entered = len(visits)
        for _ in range(3):
            assert p.total_ops > 0 and p.records and p.report.unhooked_modules == ()
        assert len(visits) == entered  # no change, no walk
        net.append(nn.ReLU())
        assert p.report.unhooked_modules == (("2", "ReLU"),)
        walked = len(visits)
        assert walked > entered
        p.report, p.records, p.total_ops
        assert len(visits) == walked  # once per change
    p.report
    assert len(visits) == walked and p.report.unhooked_modules == (("2", "ReLU"),)


def test_a_profiler_never_entered_prints_that_nothing_was_profiled_yet() -> None:
    # not "the model has no module with a formula": it has two, not yet profiled
    p = Profiler(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    console = Console(record=True, width=100)
    p.print(console=console)
    assert console.export_text().startswith("Nothing profiled yet: run the model in the profiler's block")
    assert p._repr_html_() is None  # a notebook shows the plain repr
    with p:
        pass  # an empty block: there are results, none ran
    assert p.total_ops == 0 and p.records == ()
    console = Console(record=True, width=100)
    p.print(console=console)
    assert "2 counted module(s) were hooked, but none ran" in console.export_text()
