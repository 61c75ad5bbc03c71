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
  calling a hooked module, which any hook-based counter pays before doing anything.

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
    """Per-pair ratios of each side to the bare forward. Every side runs on the one model
    (copies of a model lie elsewhere in memory and run at slightly different speeds, which
    biased the ratios by a few points): the steady sides enter their profiler, run an untimed
    forward and time the next one, so that the timed forward is one of many in a block; the
    floor side registers its do-nothing hooks, untimed, around its timed forward."""
    with Profiler(model) as probe:  # which modules opscope counts: those that record
        model(x)
    counted = [model.get_submodule(name) for name in {record.name for record in probe.records}]

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

    sides: dict[str, Callable[[], float]] = {
        "block": lambda: timed(block, x.device),
        "steady": steady(),
        "block-hooks": lambda: timed(block_hooks, x.device),
        "steady-hooks": steady(functional=False),
        "floor": floor,
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
