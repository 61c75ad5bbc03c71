"""Overhead of profiling: a bare forward pass against the same forward inside ``Profiler``.

Usage: python benchmarks/overhead.py [--rounds 30] [--warmup 5] [--device cpu|cuda]

For each model (1x3x224x224, eval, inference mode) bare and profiled forwards are run
alternately, A B A B, after warm-up, and the median of the per-pair ratios profiled / bare is
printed: alternating keeps both sides under the same machine conditions. Two profiled sides:

- block: ``with Profiler(model): model(x)``, entering and leaving the profiler (wrapping and
  unwrapping every module) around each forward: the one-off use, everything counted;
- steady: a forward inside a profiler that already ran one (entered, one untimed forward,
  the timed one, left untimed), everything counted: what a loop over many batches pays per
  batch;
- block-hooks, steady-hooks: the same with ``functional=False``, modules with a formula only:
  the difference is the price of counting the operators outside them;
- floor: the same modules with do-nothing forward hooks: what PyTorch itself charges for
  calling a hooked module, which any hook-based counter pays before doing anything;
- mode-floor: what counting the operators outside modules costs before anything is counted,
  in a loop like *steady*: every module gets a do-nothing forward that only leaves a
  pass-through dispatch mode (for a counted module, or a plain ``nn.Sequential``) or returns
  to it (for another module) where opscope's do, so the operators outside counted modules
  go through torch's Python dispatch and nothing else is done.

Every side runs on the same model object as the bare forward. The median is robust to the
machine's hiccups; p10 and p90 show the spread.

Neither includes reading the results: records are built lazily, when read.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torch._C import _get_dispatch_stack_at, _len_torch_dispatch_stack
from torch._C import _pop_torch_dispatch_stack as _pop_mode
from torch._C import _push_on_torch_dispatch_stack as _push_mode
from torch.utils._python_dispatch import TorchDispatchMode

from opscope import Profiler

MODELS = ("resnet50", "mobilenet_v3_large", "efficientnet_b0")
# The performance issue's targets, everything counted.
TARGETS = {
    ("resnet50", "block"): 1.03,
    ("resnet50", "steady"): 1.02,
    ("mobilenet_v3_large", "block"): 1.15,
    ("mobilenet_v3_large", "steady"): 1.06,
}


def timed(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class PassThrough(TorchDispatchMode):
    """A dispatch mode that runs each operator and does nothing else."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return func(*args, **(kwargs or {}))


class ModeSwitch:
    """A module's do-nothing forward for the *mode-floor* side: it runs the module's own,
    leaving ``mode`` while it runs (``leave``) or coming back to it (otherwise), as opscope's
    forwards do for counted modules and plain ``nn.Sequential`` (leave) and for other modules
    (come back)."""

    __slots__ = ("forward", "leave", "mode")

    def __init__(self, forward: Callable[..., object], leave: bool, mode: PassThrough) -> None:
        self.forward, self.leave, self.mode = forward, leave, mode

    def __call__(self, *args: object, **kwargs: object) -> object:
        mode, depth = self.mode, _len_torch_dispatch_stack()
        if self.leave:
            switched = depth > 0 and _get_dispatch_stack_at(depth - 1) is mode
        else:
            switched = all(_get_dispatch_stack_at(i) is not mode for i in range(depth))
        if switched:
            _pop_mode(None) if self.leave else _push_mode(mode)
        try:
            return self.forward(*args, **kwargs)
        finally:
            if switched:
                _push_mode(mode) if self.leave else _pop_mode(None)


def paired_ratios(
    model: torch.nn.Module, x: torch.Tensor, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Per-pair ratios of each side to the bare forward. Every side runs on the one model
    (copies of a model lie elsewhere in memory and run at slightly different speeds, which
    biased the ratios by a few points): the steady sides enter their profiler, run an untimed
    forward and time the next one, so that the timed forward is one of many in a block; the
    floor side registers its do-nothing hooks, untimed, around its timed forward."""
    with Profiler(model) as probe:  # which modules opscope counts: those that record
        model(x)
    counted = [
        model.get_submodule(name)
        for name in {record.name for record in probe.records if record.family != "functional"}
    ]

    def bare() -> None:
        model(x)

    def block() -> None:
        with Profiler(model):
            model(x)

    def block_hooks() -> None:
        with Profiler(model, functional=False):
            model(x)

    # No profiler stays entered while another side runs: a dispatch mode would see the other
    # sides' operators too.
    def steady(**options: bool) -> Callable[[], float]:
        profiler = Profiler(model, summary=True, **options)

        def run() -> float:
            with profiler:
                model(x)
                return timed(bare, x.device)

        return run

    def floor() -> float:
        handles = [
            module.register_forward_hook(lambda *_: None, with_kwargs=True) for module in counted
        ]
        try:
            return timed(bare, x.device)
        finally:
            for handle in handles:
                handle.remove()

    def mode_floor() -> float:
        mode, modules = PassThrough(), list(model.modules())
        sites = {id(module) for module in counted}
        for module in modules:
            leave = id(module) in sites or type(module).forward is nn.Sequential.forward
            module.__dict__["forward"] = ModeSwitch(module.forward, leave, mode)
        try:
            with mode:
                model(x)
                return timed(bare, x.device)
        finally:
            for module in modules:
                del module.__dict__["forward"]

    sides: dict[str, Callable[[], float]] = {
        "block": lambda: timed(block, x.device),
        "steady": steady(),
        "block-hooks": lambda: timed(block_hooks, x.device),
        "steady-hooks": steady(functional=False),
        "floor": floor,
        "mode-floor": mode_floor,
    }
    for _ in range(warmup):
        bare()
        for side in sides.values():
            side()
    ratios: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            bare_time = timed(bare, x.device)
            ratios[name].append(side() / bare_time)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}, threads: {torch.get_num_threads()}, rounds: {args.rounds}")
    print(f"{'model':<20} {'side':<13} {'median':>7} {'p10':>7} {'p90':>7} {'target':>7}")
    for name in MODELS:
        model = torchvision.models.get_model(name, weights=None).eval().to(device)
        x = torch.randn(1, 3, 224, 224, device=device)
        with torch.inference_mode():
            sides = paired_ratios(model, x, args.rounds, args.warmup)
        for side, ratios in sides.items():
            target = TARGETS.get((name, side))
            deciles = statistics.quantiles(ratios, n=10)
            print(
                f"{name:<20} {side:<13} {statistics.median(ratios):>7.4f} "
                f"{deciles[0]:>7.3f} {deciles[-1]:>7.3f} {target or '-':>7}"
            )


if __name__ == "__main__":
    main()
