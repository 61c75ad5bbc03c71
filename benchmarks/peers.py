"""Other operation counters against opscope: their counts, their conventions, and their speed.

Usage: python benchmarks/peers.py [--rounds 20] [--warmup 2] [--models resnet50 ...]

For each model (1x3x224x224, CPU, eval) every tool that can be imported counts the model once
per round: opscope (all families, the Conv2d-only view, and Conv2d+Linear, the scope the other
tools are compared on), torch's ``FlopCounterMode``, fvcore, ptflops, thop, torchinfo and
moduleprofiler (the last five from the optional ``bench`` extra; a missing one is skipped with
a message). Each tool's time includes reading its result (for opscope, ``p.total_ops``, which
builds the records). A tool that modifies the model it is given (thop adds buffers, ptflops
methods) gets a fresh ``copy.deepcopy`` made outside the timing.

Speed: after warm-up, a bare forward and the tool run alternately, A B A B, under the same grad
mode (inference mode; no_grad for fvcore, which traces the model with torch.jit), and the median
of the per-pair ratios tool / bare is printed; a tool whose last warm-up ratio is 5 or more gets
a third of the rounds (at least 3). Rows are ordered by that ratio.

Counts: each tool's own figure, then its Conv2d+Linear part converted to opscope's convention by
the identities of docs/conventions.md, where the tool exposes that part and such an identity
exists ('-' otherwise). ``E`` is the number of output elements of the model's Conv2d and
Linear calls, read from opscope's records (with and without bias); "vs opscope" compares the
converted figure with opscope's own Conv2d+Linear count.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import opscope

MODELS = ("resnet50", "mobilenet_v3_large", "efficientnet_b0")
CONV_LINEAR = (nn.Conv2d, nn.Linear)
SLOW = 5  # a tool whose last warm-up ratio is at least this gets a third of the rounds


@dataclass(frozen=True)
class Edges:
    """Output elements of the Conv2d and Linear calls, split by whether the layer has a bias."""

    with_bias: int
    without_bias: int


@dataclass(frozen=True)
class Tool:
    name: str
    convention: str  # short, for the table
    legend: str  # long, printed once under the tables
    # Counts the model once; returns (its count, its Conv2d+Linear part in its own convention
    # or None when it does not expose one). Everything inside is timed.
    measure: Callable[[nn.Module, torch.Tensor], tuple[int, int | None]]
    # The Conv2d+Linear part in opscope's convention (None: no simple identity).
    to_ops: Callable[[int, Edges], int] | None = None
    needs: str | None = None  # module that must be importable
    fresh_copy: bool = False  # the tool modifies the model: give it a deep copy, made untimed
    grad_mode: Callable[[], contextlib.AbstractContextManager[Any]] = torch.inference_mode


# -- the tools ------------------------------------------------------------------------------


def opscope_measure(include: tuple[type[nn.Module], ...] | None) -> Callable[..., tuple[int, None]]:
    def measure(model: nn.Module, x: torch.Tensor) -> tuple[int, None]:
        with opscope.Profiler(model, include=include) as p:
            model(x)
        return p.total_ops, None

    return measure


def opscope_conv_linear(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    total, _ = opscope_measure(CONV_LINEAR)(model, x)
    return total, total


def flop_counter(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    with FlopCounterMode(display=False) as counter:
        model(x)
    total = counter.get_total_flops()
    return total, total  # these CNNs' only matmul/convolution ops are their Conv2d and Linear


def fvcore_count(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    total = analysis.total()
    by_operator = analysis.by_operator()
    return total, sum(by_operator.get(op, 0) for op in ("conv", "linear", "addmm"))


def ptflops_count(model: nn.Module, x: torch.Tensor) -> tuple[int, None]:
    from ptflops import get_model_complexity_info

    macs, _ = get_model_complexity_info(
        model, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False
    )
    return int(macs), None


def thop_count(model: nn.Module, x: torch.Tensor) -> tuple[int, None]:
    from thop import profile

    macs, _ = profile(model, inputs=(x,), verbose=False)
    return int(macs), None


def torchinfo_count(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    from torchinfo import summary

    stats = summary(model, input_size=tuple(x.shape), verbose=0)
    part = sum(
        layer.macs
        for layer in stats.summary_list
        if layer.is_leaf_layer and layer.class_name in ("Conv2d", "Linear")
    )
    return stats.total_mult_adds, part


def moduleprofiler_count(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    from moduleprofiler import ModuleProfiler

    # One entry per named module (containers and unmapped types have ops None).
    data = ModuleProfiler().estimate_ops(model, x)
    total = sum(entry["ops"] for entry in data.values() if entry["ops"] is not None)
    part = sum(entry["ops"] for entry in data.values() if entry["type"] in ("Conv2d", "Linear"))
    return total, part


TOOLS = (
    Tool(
        "opscope",
        "ops, bias; everything",
        "exact multiplications + additions, bias counted (2M with bias, 2M - E without), every "
        "module with a formula (convolutions, Linear, norms, activations, pooling, ...) and "
        "every operator outside them (functional calls, `x + y`)",
        opscope_measure(None),
    ),
    Tool(
        "opscope Conv2d",
        "ops, bias; Conv2d only",
        "the same, `include=[torch.nn.Conv2d]`",
        opscope_measure((nn.Conv2d,)),
    ),
    Tool(
        "opscope Conv2d+Linear",
        "ops, bias; Conv2d+Linear",
        "the same, `include=[Conv2d, Linear]`: the scope every 'Conv2d+Linear as "
        "ops' figure is compared with",
        opscope_conv_linear,
        to_ops=lambda part, e: part,
    ),
    Tool(
        "FlopCounterMode",
        "2*MACs, no bias; matmul+conv",
        "torch.utils.flop_counter: 2M per convolution and matmul, bias ignored, whole model "
        "(functional calls too), nothing else counted; as opscope ops: count - E(no bias)",
        flop_counter,
        to_ops=lambda part, e: part - e.without_bias,
    ),
    Tool(
        "fvcore",
        "MACs, no bias; +BN, pool",
        "FlopCountAnalysis(...).total(): M per convolution and matmul, bias ignored, plus "
        "normalisations (eval batch norm 1 per element), upsampling and adaptive average "
        "pooling, from a torch.jit trace (whole model); as opscope ops: "
        "2 * (its conv + linear operators) - E(no bias)",
        fvcore_count,
        to_ops=lambda part, e: 2 * part - e.without_bias,
        needs="fvcore",
        grad_mode=torch.no_grad,  # it traces the model with torch.jit
    ),
    Tool(
        "ptflops",
        "MACs + bias adds; +BN, act, pool",
        "get_model_complexity_info (pytorch backend): M + E(bias) for convolutions and Linear, "
        "plus norms (1 per element, 2 when affine), ReLU-type activations and pooling "
        "(1 per element), and patched functional calls (relu, silu, pooling, linear, matmul, "
        "torch.add/mul); module types it does not know (Hardswish, Hardsigmoid, Sigmoid) "
        "count 0; no Conv2d+Linear part exposed",
        ptflops_count,
        needs="ptflops",
        fresh_copy=True,  # it binds its methods to the model
    ),
    Tool(
        "thop",
        "MACs, no bias; +BN, pool",
        "thop.profile: M for convolutions and Linear, bias ignored, norms 2 per element "
        "(4 when affine), average pooling; ReLU and max pooling 0, as are module types it does "
        "not know (Hardswish, SiLU, Sigmoid, ...); no Conv2d+Linear part exposed",
        thop_count,
        needs="thop",
        fresh_copy=True,  # it adds total_ops/total_params buffers to every module
    ),
    Tool(
        "torchinfo",
        "MACs + bias adds; param layers",
        "summary(...).total_mult_adds: for every leaf with parameters, M + E(bias) for "
        "convolutions, N * params otherwise (Linear: M + E, BN: 2C); as opscope ops: "
        "2 * (Conv2d + Linear mult-adds) - 2 * E(bias) - E(no bias)",
        torchinfo_count,
        to_ops=lambda part, e: 2 * part - 2 * e.with_bias - e.without_bias,
        needs="torchinfo",
    ),
    Tool(
        "moduleprofiler",
        "ops, bias; its exact types",
        "ModuleProfiler().estimate_ops: opscope's convention for Conv2d and Linear (the spec "
        "comes from its docs), plus its own for BN, ReLU, pooling, ...; exact type match only "
        "(Hardswish, SiLU, Hardsigmoid, subclasses: not counted); the total sums every module "
        "with a count; as opscope ops: its Conv2d + Linear entries",
        moduleprofiler_count,
        to_ops=lambda part, e: part,
        needs="moduleprofiler",
    ),
)


# -- measuring ------------------------------------------------------------------------------


def edges(model: nn.Module, x: torch.Tensor) -> Edges:
    with opscope.Profiler(model, include=CONV_LINEAR) as p, torch.inference_mode():
        model(x)
    with_bias = without_bias = 0
    for record in p.records:
        elements = record.calls * math.prod(record.output_shape)
        if record.config.bias:
            with_bias += elements
        else:
            without_bias += elements
    return Edges(with_bias, without_bias)


def paired_ratios(
    model: nn.Module, x: torch.Tensor, tool: Tool, rounds: int, warmup: int
) -> tuple[list[float], tuple[int, int | None]]:
    result: tuple[int, int | None] = (0, None)

    def one_pair() -> float:
        nonlocal result
        subject = copy.deepcopy(model) if tool.fresh_copy else model
        # The bare forward runs on the tool's own model, before the tool touches it: copies
        # lie elsewhere in memory and run a few points faster or slower than the original.
        start = time.perf_counter()
        subject(x)
        bare_time = time.perf_counter() - start
        start = time.perf_counter()
        result = tool.measure(subject, x)
        return (time.perf_counter() - start) / bare_time

    with tool.grad_mode():
        warm = [one_pair() for _ in range(warmup)]
        if warm and warm[-1] >= SLOW:
            rounds = max(3, rounds // 3)
        ratios = [one_pair() for _ in range(rounds)]
    return ratios, result


def fmt(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def versus(converted: int | None, reference: int) -> str:
    if converted is None:
        return "-"
    if converted == reference:
        return "exact"
    return f"{(converted - reference) / reference:+.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # fvcore's and thop's deprecation chatter
    tools = []
    for tool in TOOLS:
        try:
            if tool.needs is not None:
                importlib.import_module(tool.needs)  # imported once, before any timing
        except Exception as error:  # noqa: BLE001 - any failure means: skip this tool
            print(
                f"skipping {tool.name}: `import {tool.needs}` fails ({type(error).__name__}; "
                "pip install '.[bench]')"
            )
        else:
            tools.append(tool)
    print(
        f"device: cpu, threads: {torch.get_num_threads()}, rounds: {args.rounds}, "
        f"warm-up: {args.warmup}, torch {torch.__version__}"
    )
    header = (
        f"{'tool':<22} {'count':>15} {'convention':<33} {'Conv2d+Linear as ops':>20} "
        f"{'vs opscope':>10} {'ratio':>6} {'rounds':>6}"
    )
    for name in args.models:
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        e = edges(model, x)
        rows = []
        for tool in tools:
            ratios, (count, part) = paired_ratios(model, x, tool, args.rounds, args.warmup)
            converted = None if tool.to_ops is None or part is None else tool.to_ops(part, e)
            rows.append((statistics.median(ratios), len(ratios), tool, count, converted))
        reference = next(row[4] for row in rows if row[2].name == "opscope Conv2d+Linear")
        print(f"\n{name} (E with bias {e.with_bias:,}, E without bias {e.without_bias:,})")
        print(header)
        for ratio, n, tool, count, converted in sorted(rows, key=lambda row: row[0]):
            print(
                f"{tool.name:<22} {fmt(count):>15} {tool.convention:<33} {fmt(converted):>20} "
                f"{versus(converted, reference):>10} {ratio:>6.2f} {n:>6}"
            )
    print("\nM = multiply-accumulates, E = output elements (of the Conv2d and Linear calls).")
    for tool in tools:
        print(f"- {tool.name}: {tool.legend}")


if __name__ == "__main__":
    main()
