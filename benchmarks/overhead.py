"""Overhead of profiling: a bare forward pass against the same forward inside ``Profiler``.

Usage: python benchmarks/overhead.py [--rounds 30] [--warmup 5] [--device cpu|cuda]

For each model (1x3x224x224, eval, inference mode) bare and profiled forwards are run
alternately, A B A B, after warm-up, and the median of the per-pair ratios profiled / bare is
printed: alternating keeps both sides under the same machine conditions. Two profiled sides:

- block: ``with Profiler(model): model(x)``, entering and leaving the profiler (registering and
  removing every hook) around each forward: the one-off use;
- steady: forwards inside one profiler entered once: the cost of the hooks alone, what a loop
  over many batches pays per batch;
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
TARGETS = {"resnet50": 1.02, "mobilenet_v3_large": 1.05}


def timed(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def paired_ratios(
    model: torch.nn.Module, x: torch.Tensor, rounds: int, warmup: int
) -> tuple[list[float], list[float], list[float]]:
    """Per-pair ratios block / bare, steady / bare and floor / bare. The steady and floor
    sides run on identical copies of the model, hooked once for all rounds, so that the bare
    side stays unhooked."""
    hooked_copy, floor_copy = copy.deepcopy(model), copy.deepcopy(model)
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

    def steady() -> None:
        hooked_copy(x)

    def floor() -> None:
        floor_copy(x)

    for _ in range(warmup):
        bare(), block(), steady(), floor()
    block_ratios, steady_ratios, floor_ratios = [], [], []
    with Profiler(hooked_copy, summary=True):  # summary: memory stays flat over the rounds
        for _ in range(rounds):
            bare_time = timed(bare, x.device)
            block_ratios.append(timed(block, x.device) / bare_time)
            bare_time = timed(bare, x.device)
            steady_ratios.append(timed(steady, x.device) / bare_time)
            bare_time = timed(bare, x.device)
            floor_ratios.append(timed(floor, x.device) / bare_time)
    for handle in floor_handles:
        handle.remove()
    return block_ratios, steady_ratios, floor_ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}, threads: {torch.get_num_threads()}, rounds: {args.rounds}")
    print(f"{'model':<20} {'side':<7} {'median':>7} {'p10':>7} {'p90':>7} {'target':>7}")
    for name in MODELS:
        model = torchvision.models.get_model(name, weights=None).eval().to(device)
        x = torch.randn(1, 3, 224, 224, device=device)
        with torch.inference_mode():
            sides = paired_ratios(model, x, args.rounds, args.warmup)
        target = f"{TARGETS[name]:.2f}" if name in TARGETS else "-"
        for side, ratios in zip(("block", "steady", "floor"), sides):
            deciles = statistics.quantiles(ratios, n=10)
            print(
                f"{name:<20} {side:<7} {statistics.median(ratios):>7.4f} "
                f"{deciles[0]:>7.3f} {deciles[-1]:>7.3f} {target:>7}"
            )


if __name__ == "__main__":
    main()
