"""Overhead of counting a training step: a bare step against the same step inside ``Profiler``.

Usage: python benchmarks/training.py [--rounds 10] [--warmup 2] [--device cpu|cuda] [--size 64]

For each model (a batch of 8 images at --size, training mode) one step is the forward, a
scalar loss, ``loss.backward()`` and an SGD step with momentum. Bare and profiled steps run
alternately, A B A B, after warm-up, and the median of the per-pair ratios profiled / bare is
printed, with the bare step's median time. The backward pass and the optimizer's operators go
through the same dispatch mode as the forward: the price per step follows the number of
operators more than their arithmetic.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torchvision
from overhead import timed  # this folder, as the scripts run from it

from opscope import Profiler

MODELS = ("resnet18", "resnet50", "mobilenet_v3_large")


def step_of(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        model(x).sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def paired(
    model: torch.nn.Module, x: torch.Tensor, rounds: int, warmup: int
) -> tuple[list[float], list[float]]:
    """The bare steps' times and the per-pair ratios profiled / bare."""
    step = step_of(model, x)

    def profiled() -> None:
        with Profiler(model):
            step()

    for _ in range(warmup):
        step()
        profiled()
    bare_times, ratios = [], []
    for _ in range(rounds):
        bare_times.append(timed(step, x.device))
        ratios.append(timed(profiled, x.device) / bare_times[-1])
    return bare_times, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}, threads: {torch.get_num_threads()}, rounds: {args.rounds}")
    print(f"{'model':<20} {'bare':>9} {'median':>7} {'p10':>7} {'p90':>7}")
    for name in MODELS:
        model = torchvision.models.get_model(name, weights=None).train().to(device)
        x = torch.randn(8, 3, args.size, args.size, device=device)
        bare_times, ratios = paired(model, x, args.rounds, args.warmup)
        deciles = statistics.quantiles(ratios, n=10)
        print(
            f"{name:<20} {statistics.median(bare_times) * 1e3:>7.1f}ms "
            f"{statistics.median(ratios):>7.3f} {deciles[0]:>7.3f} {deciles[-1]:>7.3f}"
        )


if __name__ == "__main__":
    main()
