"""Overhead of profiling: a bare forward pass against the same forward inside ``Profiler``.

Usage: python benchmarks/overhead.py [--rounds 30] [--warmup 5] [--device cpu|cuda]

For each model (1x3x224x224, eval, inference mode) bare and profiled forwards are run
alternately, A B A B, after warm-up, and the median of the per-pair ratios profiled / bare is
printed: alternating keeps both sides under the same machine conditions. Two profiled sides:

- block: ``with Profiler(model): model(x)``, entering and leaving the profiler (registering and
  removing every hook) around each forward: the one-off use, everything counted;
- steady: forwards inside one profiler entered once, everything counted: what a loop over many
  batches pays per batch;
- block-hooks, steady-hooks: the same with ``functional=False``, modules with a formula only:
  the difference is the price of counting the operators outside them;
- floor: the same modules with do-nothing forward hooks: what PyTorch itself charges for
  calling a hooked module, which any hook-based counter pays before doing anything.

Neither includes reading the results: records are built lazily, when read.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

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


SIDES = ("block", "steady", "block-hooks", "steady-hooks", "floor")


def paired_ratios(
    model: torch.nn.Module, x: torch.Tensor, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Per-pair ratios of each side to the bare forward. The steady and floor sides run on
    identical copies of the model, hooked once for all rounds, so that the bare side stays
    unhooked."""
    hooked_copy, hooks_copy, floor_copy = (copy.deepcopy(model) for _ in range(3))
    with Profiler(floor_copy) as probe:  # which modules opscope hooks: those that record
        floor_copy(x)
    floor_handles = [
        floor_copy.get_submodule(name).register_forward_hook(lambda *_: None, with_kwargs=True)
        for name in {record.name for record in probe.records}
    ]

    def bare() -> None:
        model(x)

    def block() -> None:
        with Profiler(model):
            model(x)

    def block_hooks() -> None:
        with Profiler(model, functional=False):
            model(x)

    # The steady sides time one forward inside a profiler entered just before and left just
    # after (neither timed): no profiler stays entered while another side runs, since a
    # dispatch mode would see the other sides' operators too.
    steady_profilers = {
        "steady": Profiler(hooked_copy, summary=True),
        "steady-hooks": Profiler(hooks_copy, summary=True, functional=False),
    }

    def inside(name: str, copy: torch.nn.Module) -> Callable[[], float]:
        def run() -> float:
            with steady_profilers[name]:
                return timed(lambda: copy(x), x.device)

        return run

    sides: dict[str, Callable[[], float]] = {
        "block": lambda: timed(block, x.device),
        "steady": inside("steady", hooked_copy),
        "block-hooks": lambda: timed(block_hooks, x.device),
        "steady-hooks": inside("steady-hooks", hooks_copy),
        "floor": lambda: timed(lambda: floor_copy(x), x.device),
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
    for handle in floor_handles:
        handle.remove()
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
