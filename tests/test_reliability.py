"""The profiler never breaks the user's run, never leaves the model changed, and never reports
a wrong number silently."""

from __future__ import annotations

import copy
import gc
import inspect
import io
import json
import math
import threading
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from opscope import Call, Profiler
from opscope.tables import notes
from helpers import hook_count


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_interruptions_remove_every_hook_and_keep_the_records(interruption: type) -> None:
    net = model()
    with pytest.raises(interruption):
        with Profiler(net) as p:
            net(torch.randn(1, 3, 6, 6))
            net[0](torch.randn(1, 3, 6, 6))
            raise interruption()
    assert hook_count(net) == 0
    assert [r.name for r in p.records] == ["0", "1", "2", "0"]


def test_a_generator_closed_inside_the_block_removes_every_hook() -> None:
    net = model()

    def batches():
        with Profiler(net) as p:
            while True:
                net(torch.randn(1, 3, 6, 6))
                yield p

    stream = batches()
    next(stream)
    p = next(stream)
    stream.close()  # GeneratorExit inside the with block
    assert hook_count(net) == 0
    assert len(p.records) == 2 * 3


def test_nested_profilers_on_the_same_model_both_count() -> None:
    net = model()
    with Profiler(net) as outer:
        net(torch.randn(1, 3, 6, 6))
        with Profiler(net) as inner:
            net(torch.randn(2, 3, 6, 6))
        # the inner profiler's wrappers are gone, the outer's remain: one per module
        assert hook_count(net) == len(list(net.modules()))
    assert hook_count(net) == 0
    assert len(outer.records) == 6 and len(inner.records) == 3
    assert 2 * outer.total_ops == 3 * inner.total_ops  # batches of 1 and 2 against one of 2


def test_profilers_on_overlapping_models() -> None:
    net = model()
    with Profiler(net) as whole, Profiler(net[0]) as part:
        net(torch.randn(1, 3, 6, 6))
    assert [r.name for r in part.records] == [""]
    assert part.records[0].ops == whole.records[0].ops
    assert len(whole.records) == 3


def test_reentering_after_exit_starts_afresh() -> None:
    net = model()
    profiler = Profiler(net)
    with profiler:
        net(torch.randn(1, 3, 6, 6))
    first = profiler.total_ops
    with profiler:
        pass
    assert profiler.records == () and first > 0


def test_a_module_added_inside_the_block_is_reported_not_silently_zero() -> None:
    net = model()
    with Profiler(net) as p:
        net.append(nn.Conv2d(2, 2, 1))  # not followed: the profiler walked the model on entry
        net(torch.randn(1, 3, 6, 6))
    # Its work is counted operator by operator, in the module that ran it, and it is listed.
    assert [(r.name, r.family) for r in p.records] == [
        ("0", "Conv2d"), ("1", "ReLU"), ("2", "Conv2d"), ("", "functional")
    ]  # fmt: skip
    assert p.records[-1].config.ops == (("convolution", 1),)
    assert p.report.unhooked_modules == (("3", "Conv2d"),)
    assert "Added after the profiler was entered (counted operator by operator in the module that ran them): 3 (Conv2d)" in notes(p.report)[-1]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_is_a_clear_error_and_leaves_nothing_hooked() -> None:
    scripted = torch.jit.script(model())
    with pytest.raises(TypeError, match="TorchScript runs no Python forward hooks"):
        with Profiler(scripted):
            pass
    wrapper = nn.Sequential(nn.Conv2d(3, 3, 1), scripted)
    with pytest.raises(TypeError, match="module '1' is a TorchScript module"):
        with Profiler(wrapper):
            pass
    assert hook_count(wrapper[0]) == 0


def test_a_compiled_model_is_counted_as_its_eager_model() -> None:
    # Finding (torch 2.14): a compiled module's graph runs without Python forward hooks, but
    # opscope follows modules through their forward, which torch.compile re-reads (it guards
    # on it): the compiled model's calls are seen, whether operators are counted or not.
    compiled = torch.compile(model(), backend="eager")
    x = torch.randn(1, 3, 6, 6)
    compiled(x)
    with Profiler(compiled._orig_mod) as eager:
        compiled._orig_mod(x)
    for functional in (False, True):
        with Profiler(compiled, functional=functional) as p:
            compiled(x)
            compiled(x)
        assert len(p.records) == 2 * len(eager.records)
        assert p.total_ops == 2 * eager.total_ops > 0
    assert "forward" not in vars(compiled._orig_mod[0])  # nothing left behind

@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_in_the_block_works_and_is_not_a_forward(strict: bool) -> None:
    # torch.export traces the model with fake tensors (strict: with dynamo, through the
    # forwards opscope gives the modules): it must see each module's own forward, read its
    # code, and count nothing; the real forward of the same block is counted as ever.
    net, x = model(), torch.randn(1, 3, 6, 6)
    with Profiler(net) as eager:
        net(x)
    with Profiler(net) as p:
        assert net[0].forward.__code__ is type(net[0]).forward.__code__
        assert net[0].forward.__self__ is net[0]
        exported = torch.export.export(net, (x,), strict=strict)
        net(x)
    assert p.records == eager.records
    assert torch.equal(exported.module()(x), net(x))
    assert hook_count(net) == 0


def test_an_export_in_another_thread_stops_no_counting() -> None:
    # torch.export's flag is the process's: only this thread's export is not a forward.
    other = nn.Sequential(*[nn.Linear(16, 16) for _ in range(20)])
    net, x = model(), torch.randn(1, 3, 6, 6)
    with Profiler(net) as eager:
        net(x)
    exported = threading.Event()
    seen = []

    def export() -> None:
        for _ in range(2):
            torch.export.export(other, (torch.randn(1, 16),), strict=False)
        exported.set()

    thread = threading.Thread(target=export)
    with Profiler(net) as p:
        thread.start()
        forwards = 0
        while not exported.is_set():
            seen.append(torch.compiler.is_exporting())
            net(x)
            forwards += 1
        thread.join()
    assert any(seen)  # some forwards ran while the flag was set
    assert p.total_ops == forwards * eager.total_ops
    assert len(p.records) == forwards * len(eager.records)


def test_a_forward_with_its_own_signature_keeps_the_bound_one() -> None:
    # A function's __signature__ (set by some decorators) includes self: inspect.signature
    # of the block's forward must still be the bound method's, as torch.export reads it.
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return self.linear(x) if y is None else self.linear(x) + y

    Scaled.forward.__signature__ = inspect.signature(Scaled.forward)  # type: ignore[attr-defined]
    net, x = nn.Sequential(Scaled()), torch.randn(1, 2)
    outside = inspect.signature(net[0].forward)
    with Profiler(net):
        assert inspect.signature(net[0].forward) == outside
        exported = torch.export.export(net[0], (x,), {"y": x})
    assert exported.graph_signature.user_inputs == ("x", "y")


def test_data_parallel_and_functional_call() -> None:
    net = model()
    x = torch.randn(2, 3, 6, 6)
    with Profiler(net) as plain:
        net(x)
    wrapped = nn.DataParallel(net)  # no GPU: it calls the module directly
    with Profiler(wrapped) as p:
        wrapped(x)
    assert [r.name for r in p.records] == ["module.0", "module.1", "module.2"]
    assert p.total_ops == plain.total_ops
    params = {name: torch.zeros_like(value) for name, value in net.named_parameters()}
    with Profiler(net) as p:
        torch.func.functional_call(net, params, (x,))
    assert p.records == plain.records


def test_a_data_parallel_on_several_devices_is_left_as_it_is() -> None:
    # Each call of a DataParallel on several GPUs runs copies of its module made then, which
    # copy each module's attributes, the block's forward too: that forward would run the
    # original module. Its module is left unfollowed, with a warning that says what to do.
    net = model()
    wrapped = nn.DataParallel(net)
    wrapped.device_ids = [0, 1]  # as on a machine with two GPUs
    with pytest.warns(UserWarning, match="DataParallel on 2 devices.*one device") as caught:
        with Profiler(wrapped):
            assert not any("forward" in vars(module) for module in net.modules())
            assert "forward" in vars(wrapped)
    assert caught[0].filename == __file__  # the user's `with` line


@dataclass
class Batch:
    image: torch.Tensor
    mask: torch.Tensor


class Multi(nn.Module):
    def forward(self, batch: Batch, extra: dict[str, list[torch.Tensor]]) -> tuple:
        return batch.image * 2, None, (batch.mask,)


def test_structured_inputs_and_outputs_reach_the_formula() -> None:
    seen: list[Call] = []

    def count(config: None, call: Call) -> int:
        seen.append(call)
        return len(call.inputs) + len(call.outputs)

    module = Multi()
    batch = Batch(torch.zeros(1, 3), torch.zeros(1, 1))
    with Profiler(module, formulas={Multi: count}) as p:
        module(batch, {"a": [torch.zeros(4), torch.zeros(5)]})
    assert p.total_ops == 4 + 2
    assert seen[0].inputs == ((1, 3), (1, 1), (4,), (5,))
    assert seen[0].outputs == ((1, 3), (1, 1))


def test_zero_size_batch_counts_zero() -> None:
    net = model()
    with Profiler(net) as p:
        net(torch.randn(0, 3, 6, 6))
    assert p.total_ops == 0 and len(p.records) == 3


def test_huge_shapes_on_meta_stay_exact() -> None:
    conv = nn.Conv2d(64, 64, 3, padding=1, device="meta")
    batch = 2**30  # 2**54 output elements: the largest a meta tensor may have is 2**63
    with Profiler(conv) as p:
        conv(torch.empty(batch, 64, 512, 512, device="meta"))
    expected = batch * 64 * 512 * 512 * (2 * 64 * 9)
    assert p.total_ops == expected > 2**63
    assert isinstance(p.total_ops, int) and math.log2(p.total_ops) > 63


def test_no_reference_to_the_model_outlives_the_profiler() -> None:
    import weakref

    net = model()
    with Profiler(net) as p:
        net(torch.randn(1, 3, 6, 6))
    ops = p.total_ops
    ref = weakref.ref(net)
    del p, net
    gc.collect()
    assert ref() is None and ops > 0


def test_an_interrupted_export_leaves_no_file_behind(tmp_path, monkeypatch) -> None:
    from opscope import exports

    target = tmp_path / "report.json"
    target.write_text('{"old": "complete"}')

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exports.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        exports.write_atomic(target, '{"new": "complete"}')
    assert target.read_text() == '{"old": "complete"}'  # the old file, whole
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left


def test_a_cli_export_reads_back_as_equal_records(tmp_path) -> None:
    from opscope import Report
    from opscope.cli import main
    from opscope.compare import profile_model
    from opscope.zoo import ZooModel

    target = tmp_path / "mobilenet.json"
    assert main(["profile", "mobilenet_v3_small", "--format", "json", "--output", str(target)]) == 0
    report, *_ = profile_model(ZooModel("mobilenet_v3_small", "classification"))
    assert Report.from_json(target.read_text()).records == report.records


def test_nested_tensors_never_break_the_forward() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        expected = encoder(x, src_key_padding_mask=mask)
        with Profiler(encoder):
            out = encoder(x, src_key_padding_mask=mask)  # the fast path passes nested tensors
    torch.testing.assert_close(out, expected)
    assert hook_count(encoder) == 0


def test_formulas_registered_between_blocks_take_effect() -> None:
    import opscope
    from opscope.formulas import registry

    class Block(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    block = nn.Sequential(Block())
    profiler = Profiler(block)
    with profiler:
        block(torch.ones(4))
    # No formula: its addition is counted as functional work, one operation per element.
    assert [(r.name, r.family, r.ops) for r in profiler.records] == [("0", "functional", 4)]
    try:
        opscope.register(Block)(lambda config, call: 1000)
        with profiler:
            block(torch.ones(4))
        assert [(r.name, r.family, r.ops) for r in profiler.records] == [("0", "Block", 1000)]
    finally:
        registry._REGISTRY.pop(Block)


def test_a_profiler_read_before_its_block_is_empty() -> None:
    p = Profiler(model())
    assert p.total_ops == 0 and p.records == ()


def test_a_module_added_after_the_report_was_read_is_still_reported() -> None:
    net = model()
    with Profiler(net) as p:
        net(torch.randn(1, 3, 6, 6))
        assert p.report.unhooked_modules == ()
        net.append(nn.ReLU())
        net(torch.randn(1, 3, 6, 6))  # the extra ReLU runs unhooked
    assert p.report.unhooked_modules == (("3", "ReLU"),)


def test_a_setting_named_like_a_column_survives_export() -> None:
    import opscope
    from opscope.formulas import registry

    @dataclass(frozen=True)
    class Named:
        name: str
        ops: int

        @classmethod
        def from_module(cls, module: nn.Module) -> Named:
            return cls("act-fn", 7)

    class Act(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    try:
        opscope.register(Act, describe=Named.from_module)(lambda config, call: config.ops)
        net = nn.Sequential(Act())
        with Profiler(net) as p:
            net(torch.ones(2))
        row = p.records[0].to_dict()
        assert (row["name"], row["ops"], row["config.name"], row["config.ops"]) == ("0", 7, "act-fn", 7)
        assert opscope.Report.from_json(p.report.to_json()) == p.report
    finally:
        registry._REGISTRY.pop(Act)


def test_lazy_modules_on_meta_through_the_cli(tmp_path, monkeypatch, capsys) -> None:
    from opscope.cli import main

    (tmp_path / "lazy_models.py").write_text(
        "import torch\ndef lazy():\n    return torch.nn.Sequential(torch.nn.LazyConv2d(4, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["profile", "lazy_models:lazy", "--input", "1x3x8x8", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_ops"] == 4 * 36 * (2 * 3 * 9)


def test_a_dropped_profiler_is_freed_at_once_not_left_to_the_garbage_collector() -> None:
    # Nothing a profiler builds refers back to itself in a cycle: its log goes when the last
    # reference does, so profiling in a loop never makes the collector walk every object.
    net = nn.Sequential(model(), nn.Flatten(), nn.LazyLinear(3))
    net(torch.randn(1, 3, 6, 6))
    for options in ({}, {"timing": True}, {"functional": False}):
        garbage = []
        for _ in range(2):  # the first time, torch and opscope make what they keep
            gc.collect()
            gc.disable()
            try:
                with Profiler(net, **options) as p:
                    net(torch.randn(1, 3, 6, 6)).sum()
                assert p.total_ops > 0 and p.records
                del p
                garbage.append(gc.collect())
            finally:
                gc.enable()
        assert garbage[-1] == 0, options


def test_a_model_copied_or_saved_in_the_block_is_a_model_of_its_own() -> None:
    # copy.deepcopy and torch.save inside the block (an EMA copy, a checkpoint) copy each
    # module's state, the block's forward included: the copy runs its own weights, is not
    # followed, and a forward the module had of its own stays its own.
    class Tripled(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    net = nn.Sequential(nn.Linear(4, 4), Tripled())
    net[1].forward = lambda x: x * 3
    x = torch.randn(2, 4)
    with Profiler(net) as p:
        copied = copy.deepcopy(net)
        buffer = io.BytesIO()
        torch.save(net[0], buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        with torch.no_grad():
            copied[0].bias.add_(1)
        assert torch.allclose(copied(x), net(x) + 3)
        assert torch.equal(loaded(x), net[0](x))
    assert [(r.name, r.calls) for r in p.records if r.family != "functional"] == [("0", 1), ("0", 1)]
    with Profiler(copied) as again:
        copied(x)
    with Profiler(net) as original:
        net(x)
    assert again.total_ops == original.total_ops == 2 * 4 * (4 + 3 + 1) + 2 * 4
    linear = nn.Linear(4, 4)
    linear.forward = linear.forward  # a forward of its own (as accelerate's hooks set one)
    with Profiler(linear):  # saved in the block, it loads without opscope
        buffer = io.BytesIO()
        torch.save(linear, buffer)
    assert b"opscope" not in buffer.getvalue()
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(x), linear(x))


def test_a_shallow_copy_made_in_the_block_logs_nothing_after_it() -> None:
    # copy.copy shares the module's attributes, the block's forward included, which the
    # block cannot take back from the copy: after the block it must neither change the
    # block's counts nor keep logging (a log growing at every call of the copy).
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    x = torch.randn(2, 4)
    with Profiler(net) as p:
        linear, whole = copy.copy(net[0]), copy.copy(net)
        net(x)
    total, calls = p.total_ops, [r.calls for r in p.records]
    for _ in range(3):
        assert torch.equal(linear(x), net[0](x))
        assert torch.equal(whole(x), net(x))
    assert (p.total_ops, [r.calls for r in p.records]) == (total, calls)
    assert len(p._block.log) == 2


def test_profilers_of_one_model_may_end_in_any_order() -> None:
    # Two blocks on one model that end out of order (two threads, an ExitStack): the model
    # keeps no forward of either, and neither logs a forward run after both ended.
    net = model()
    x = torch.randn(2, 3, 6, 6)
    first, second = Profiler(net), Profiler(net)
    first.__enter__()
    second.__enter__()
    net(x)
    first.__exit__(None, None, None)
    net(x)
    second.__exit__(None, None, None)
    assert not any("forward" in vars(module) for module in net.modules())
    net(x)
    assert [r.calls for r in first.records] == [1, 1, 1]
    assert [r.calls for r in second.records] == [1, 1, 1] * 2


def test_a_trace_in_the_block_leaves_the_results_readable() -> None:
    # torch.jit.trace runs the forward with traced shapes, which are not counts, then the
    # model and the traced graph again to check them: none of it is logged, and the forward
    # after it is counted as usual.
    net = model()
    x = torch.randn(2, 3, 6, 6)
    with Profiler(net) as plain:
        net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's own warnings
        with Profiler(net) as p:
            traced = torch.jit.trace(net, x)  # which checks the trace: runs it again
            net(x)
    assert torch.allclose(traced(x), net(x))
    assert p.total_ops == plain.total_ops
