"""opscope's dispatch modes and torch.compile: left alone by dynamo, without importing it."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from opscope import Profiler
from opscope.capture import OpCapture
from opscope.dispatch import DispatchMode
from opscope.meta import MetaShortcuts


def test_profiling_and_building_on_meta_do_not_import_dynamo() -> None:
    # TorchDispatchMode's own wrapper imports torch._dynamo at a mode's first operator:
    # about 1.7 s on the first block of a process that had not imported it. (Running on meta
    # may still import it: some of torch's meta kernels are Python wrapped the same way.)
    script = textwrap.dedent(
        """
        import sys
        import torch
        from torch import nn
        from opscope import Profiler
        from opscope.meta import build_on_meta

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Linear(16, 16), nn.LayerNorm(16)
            def forward(self, x):
                h = torch.relu(self.a(x)) + x
                return self.b(h).softmax(-1) @ h.T

        net = Net()
        with Profiler(net) as p:
            net(torch.randn(8, 16))
        assert p.total_ops > 0
        assert build_on_meta(Net).a.weight.is_meta  # under MetaShortcuts
        print("torch._dynamo" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("spared", [True, False])
def test_torchs_python_meta_kernels_run_without_importing_dynamo_once_disabled(spared) -> None:
    # torch's Python meta kernels (here cat's, mean's and a channels-last mul's) are wrapped
    # in torch._disable_dynamo, which imports dynamo at their first call; a compare worker
    # gives each the disabled function itself instead, with the same results.
    script = textwrap.dedent(
        f"""
        import sys
        import torch
        from opscope.dispatch import disable_without_dynamo, lazy_dynamo_disables

        wrappers = lazy_dynamo_disables()
        assert len(wrappers) > 50, len(wrappers)
        if {spared}:
            disable_without_dynamo(wrappers)
        x = torch.empty(1, 8, 5, 5, device="meta")
        scale = torch.empty(8, 1, 1, device="meta")
        outputs = [
            torch.cat([x, x], 1),
            x.mean([2, 3]),
            scale * x.to(memory_format=torch.channels_last),
        ]
        print([(tuple(y.shape), y.stride()) for y in outputs])
        print("torch._dynamo" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    shapes, imported = done.stdout.strip().splitlines()
    assert shapes == str(
        [((1, 16, 5, 5), (400, 25, 5, 1)), ((1, 8), (8, 1)), ((1, 8, 5, 5), (200, 1, 40, 8))]
    )
    assert imported == str(not spared)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.linear = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) * 2 + 1  # operators outside counted modules: the mode's
        return self.linear(y.mean((2, 3))) + torch.tanh(y).sum()


def test_a_model_compiled_in_the_block_never_traces_the_modes_frames() -> None:
    # Without the mark (or torch's wrapper), dynamo compiles the mode's own method: graph
    # breaks on the log's array, recompilations until its limit, and warnings.
    from torch._dynamo.utils import counters

    net, x = _Net(), torch.randn(2, 3, 8, 8)
    with Profiler(net) as eager:
        net(x)
    counters.clear()
    with Profiler(net) as p:
        compiled = torch.compile(net, backend="eager")
        compiled(x)
        compiled(x)
    assert p.total_ops == 2 * eager.total_ops > 0
    assert not counters["graph_break"]
    assert not counters["stats"]["unique_graphs"]


def test_the_modes_are_marked_instead_of_wrapped() -> None:
    for mode in (OpCapture, MetaShortcuts):
        assert mode._marked_skipped
        assert not hasattr(mode.__dict__["__torch_dispatch__"], "__wrapped__")


def test_without_dynamos_api_torchs_wrapper_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    # An older torch: nothing to mark with, so TorchDispatchMode's wrapper is kept.
    monkeypatch.setattr(torch._C._dynamo, "eval_frame", None)

    class Doubling(DispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            return func(*args, **(kwargs or {})) * 2

    assert not Doubling._marked_skipped
    assert hasattr(Doubling.__dict__["__torch_dispatch__"], "__wrapped__")
    ones = torch.ones(2)
    with Doubling():
        assert ones.add(1).tolist() == [4.0, 4.0]


def test_a_decorated_method_keeps_torchs_wrapper() -> None:
    # Its code is the decorator's wrapper's, shared by every function the decorator wraps:
    # marking it would keep torch.compile from tracing all of them.
    from torch._dynamo.utils import counters

    def passed_on(function):  # type: ignore[no-untyped-def]
        @functools.wraps(function)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            return function(*args, **kwargs)

        return wrapper

    class Logging(DispatchMode):
        @passed_on
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            return func(*args, **(kwargs or {}))

    @passed_on
    def step(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2

    assert not Logging._marked_skipped
    counters.clear()
    torch.compile(step, backend="eager")(torch.randn(4))
    assert counters["stats"]["unique_graphs"] == 1
