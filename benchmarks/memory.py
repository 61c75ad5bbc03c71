"""Memory of profiling: what a profiled forward adds to a bare one, and how records grow.

Usage: python benchmarks/memory.py [--rounds 5] [--calls 100000]

(a) One forward of resnet50 and mobilenet_v3_large (1x3x224x224, CPU, eval, inference mode),
bare and inside ``Profiler``, alternately, ``--rounds`` times (medians printed):

- Python allocations, with tracemalloc: the peak during the forward over the memory before it
  ("py peak"), what the profiler still holds after its block ("held: log", its log of calls),
  and after reading ``p.records`` ("held: +records", the records built as well); each divided
  by the number of records ("B/rec").
- tensors kept: live ``torch.Tensor`` objects (gc) after the block, with the profiler still
  alive, minus before it: the profiler keeps shapes, never a tensor, so 0.
- tracemalloc does not see tensor storage (torch allocates it outside Python's allocator), so
  the process's peak resident memory is measured too ("RSS peak"), over the resident memory
  before the forward, after handing freed heap memory back with glibc's ``malloc_trim`` (ctypes;
  skipped elsewhere): on Linux by resetting the peak (``/proc/self/clear_refs``) before each
  forward, elsewhere from ``resource.getrusage`` (a high-water mark that cannot be reset, so
  only growth beyond every earlier peak shows); 5 x ``--rounds`` times, as it is noisier. An
  activation kept by the profiler would add its size here: "all outputs" is the size of every
  counted call's output, what keeping them all would add.
- with CUDA, the same forward on the GPU: ``torch.cuda.max_memory_allocated`` over the
  allocated memory before it.

(b) ``--calls`` forwards of a tiny model (Conv2d, ReLU, Flatten, Linear on 1x3x8x8, inference
mode) inside one profiler: tracemalloc's current memory (over the memory before the block)
after 1k, 10k, 100k calls, without a profiler, in the default mode (one record per call: grows
linearly: bytes per forward printed) and in summary mode (``Profiler(model, summary=True)``: one
record per distinct module, shapes and mode, with a ``calls`` count: flat). Then the records:
in summary mode ``len(p.records)`` should be the number of distinct counted modules and
``sum(r.calls for r in p.records)`` the number of counted calls.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import math
import re
import resource
import statistics
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from opscope import Profiler

MODELS = ("resnet50", "mobilenet_v3_large")
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


# -- resident memory -------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in {STATUS}")
    return int(match.group(1))


def _can_reset_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        _status_kib("VmHWM")
    except OSError:
        return False
    return True


RESETTABLE = _can_reset_peak()


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0): hand freed heap memory back to the system, so that a forward's
    activations raise the resident memory again instead of reusing what an earlier one freed."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return lambda: None
    return lambda: trim(0)


TRIM = _malloc_trim()


def rss_peak_delta(run: Callable[[], object]) -> int:
    """Bytes by which the process's peak resident memory during ``run`` exceeds the memory
    before it (Linux); elsewhere, growth of the never-reset high-water mark."""
    gc.collect()
    TRIM()
    if RESETTABLE:
        CLEAR_REFS.write_text("5")  # peak := current
        before = _status_kib("VmRSS")
        run()
        return (_status_kib("VmHWM") - before) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * scale


# -- (a) one forward -------------------------------------------------------------------------


def live_tensors() -> int:
    return sum(issubclass(type(obj), torch.Tensor) for obj in gc.get_objects())


def python_bare(model: nn.Module, x: torch.Tensor) -> int:
    """tracemalloc peak of a bare forward, over the memory before it."""
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    model(x)
    return tracemalloc.get_traced_memory()[1] - base


def python_profiled(model: nn.Module, x: torch.Tensor) -> tuple[int, int, int, int, int, int]:
    """(peak, kept after the block, kept after reading the records, records, tensors kept,
    bytes of every counted call's output: what keeping the activations would cost)."""
    gc.collect()
    tensors = live_tensors()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    profiler = Profiler(model)
    with profiler:
        model(x)
    peak = tracemalloc.get_traced_memory()[1] - base
    gc.collect()
    kept_calls = tracemalloc.get_traced_memory()[0] - base
    tensors_kept = live_tensors() - tensors
    records = profiler.records
    gc.collect()
    kept_records = tracemalloc.get_traced_memory()[0] - base
    outputs = x.element_size() * sum(r.calls * math.prod(r.output_shape) for r in records)
    return peak, kept_calls, kept_records, len(records), tensors_kept, outputs


def profiled_run(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with Profiler(model) as profiler:
            model(x)
        return profiler.records

    return run


def cuda_peak_delta(run: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def cuda_columns(model: nn.Module, x: torch.Tensor, rounds: int) -> str:
    with torch.inference_mode():
        for _ in range(2):
            model(x), profiled_run(model, x)()
        bare, profiled = [], []
        for _ in range(rounds):
            bare.append(cuda_peak_delta(lambda: model(x)))
            profiled.append(cuda_peak_delta(profiled_run(model, x)))
    return f" {mib(statistics.median(bare)):>14} {mib(statistics.median(profiled)):>14}"


def one_forward(rounds: int) -> None:
    cuda = torch.cuda.is_available()
    rss_how = "peak reset via /proc/self/clear_refs" if RESETTABLE else "getrusage ru_maxrss"
    print(
        f"(a) one forward, 1x3x224x224, cpu, threads: {torch.get_num_threads()}, "
        f"rounds: {rounds} (medians); resident memory: {rss_how}; "
        f"cuda: {'yes' if cuda else 'not available'}"
    )
    header = (
        f"{'model':<20} {'records':>7} {'py peak bare':>12} {'py peak prof':>12} "
        f"{'held: log':>11} {'B/rec':>6} {'held: +records':>15} {'B/rec':>6} "
        f"{'tensors kept':>12} {'RSS peak bare':>13} {'RSS peak prof':>13} {'RSS extra':>9} "
        f"{'all outputs':>11}"
    )
    if cuda:
        header += f" {'cuda peak bare':>14} {'cuda peak prof':>14}"
    print(header)
    median = statistics.median_low  # an actual round, integers stay integers
    for name in MODELS:
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        with torch.inference_mode():
            for _ in range(2):  # warm-up: one-time allocations (kernels, caches) out of the way
                model(x), profiled_run(model, x)()
            tracemalloc.start()
            bare, profiled = [], []
            for _ in range(rounds):
                bare.append(python_bare(model, x))
                profiled.append(python_profiled(model, x))
            tracemalloc.stop()
            rss_bare, rss_prof = [], []
            for _ in range(5 * rounds):  # cheap, and noisier (allocator, threads)
                rss_bare.append(rss_peak_delta(lambda: model(x)))
                rss_prof.append(rss_peak_delta(profiled_run(model, x)))
            row = [median(column) for column in zip(*profiled)]
            peak, kept_calls, kept_records, records, tensors_kept, outputs = row
            line = (
                f"{name:<20} {records:>7,} {median(bare):>12,} {peak:>12,} "
                f"{kept_calls:>11,} {kept_calls / records:>6.0f} {kept_records:>15,} "
                f"{kept_records / records:>6.0f} {tensors_kept:>12,} "
                f"{mib(median(rss_bare)):>13} {mib(median(rss_prof)):>13} "
                f"{mib(median(rss_prof) - median(rss_bare), sign='+'):>9} "
                f"{mib(outputs):>11}"
            )
        if cuda:
            line += cuda_columns(model.cuda(), x.cuda(), rounds)
        print(line)


def mib(size: float, sign: str = "") -> str:
    return f"{size / 2**20:{sign}.1f} MiB"


# -- (b) long runs ---------------------------------------------------------------------------


def tiny_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    ).eval()


def summary_profiler(model: nn.Module) -> Profiler | None:
    try:
        return Profiler(model, summary=True)
    except TypeError:  # an opscope without summary mode
        return None


def long_run(
    profiler: Profiler | None, model: nn.Module, x: torch.Tensor, checkpoints: list[int]
) -> list[int]:
    """tracemalloc's current memory, over the memory before the block, at each checkpoint."""
    memory = []
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    with profiler if profiler is not None else contextlib.nullcontext():
        done = 0
        for checkpoint in checkpoints:
            for _ in range(checkpoint - done):
                model(x)
            done = checkpoint
            gc.collect()
            memory.append(tracemalloc.get_traced_memory()[0] - base)
    tracemalloc.stop()
    return memory


def long_runs(calls: int) -> None:
    checkpoints = [10**k for k in range(3, 10) if 10**k < calls] + [calls]
    model, x = tiny_model(), torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        for _ in range(10):
            model(x)
        with Profiler(model) as once:
            model(x)
        modules = len(once.records)  # counted modules, each called once per forward
        modes: list[tuple[str, Profiler | None]] = [
            ("no profiler", None),
            ("default", Profiler(model)),
        ]
        summary = summary_profiler(model)
        if summary is None:
            print("summary mode: Profiler(model, summary=True) raises TypeError (not merged)")
        else:
            modes.append(("summary", summary))
        results = [
            (mode, profiler, long_run(profiler, model, x, checkpoints)) for mode, profiler in modes
        ]
    print(
        f"\n(b) {calls:,} calls of a tiny model (Conv2d, ReLU, Flatten, Linear; 1x3x8x8; "
        f"{modules} counted modules) in one block; tracemalloc current memory"
    )
    print(
        f"{'mode':<12} "
        + " ".join(f"{f'after {c:,}':>14}" for c in checkpoints)
        + f" {'B/forward':>9} {'records':>9} {'sum calls':>10} {'expected':>9} {'total ops':>14}"
    )
    for mode, profiler, memory in results:
        if len(checkpoints) > 1:  # the slope: what one more call costs
            per_call = (memory[-1] - memory[0]) / (checkpoints[-1] - checkpoints[0])
        else:
            per_call = memory[0] / calls
        if profiler is None:
            counts = f"{'-':>9} {'-':>10} {'-':>9} {'-':>14}"
        else:
            records = profiler.records
            expected = modules if mode == "summary" else modules * calls
            counts = (
                f"{len(records):>9,} {sum(r.calls for r in records):>10,} "
                f"{expected:>9,} {profiler.total_ops:>14,}"
            )
        print(
            f"{mode:<12} " + " ".join(f"{m:>14,}" for m in memory) + f" {per_call:>9.1f} " + counts
        )
    print(
        f"expected: records per mode (summary: the {modules} counted modules; default: one "
        f"per call); sum calls should be {modules * calls:,} in both modes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    print(f"torch {torch.__version__}")
    one_forward(args.rounds)
    long_runs(args.calls)


if __name__ == "__main__":
    main()
