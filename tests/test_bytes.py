"""Bytes moved per call, from metadata only, and the LaTeX table."""

from __future__ import annotations

import io
import re

import torch
from rich.console import Console
from torch import nn

from opscope import Profiler
from opscope.documents import latex_table
from opscope.format import format_count
from opscope.tables import layer_grid


def profiled(module: nn.Module, x: torch.Tensor, **context) -> Profiler:
    with Profiler(module) as p:
        module(x)
    return p


def test_float32_bytes_by_hand() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    (record,) = profiled(conv, torch.randn(2, 3, 16, 16)).records
    assert record.input_bytes == 2 * 3 * 16 * 16 * 4
    assert record.output_bytes == 2 * 8 * 16 * 16 * 4
    assert record.param_bytes == (8 * 3 * 9 + 8) * 4
    assert record.bytes == record.input_bytes + record.output_bytes + record.param_bytes
    assert record.intensity == record.ops / record.bytes


def test_half_precision_and_autocast_bytes() -> None:
    linear = nn.Linear(64, 32).to(torch.float16)
    (record,) = profiled(linear, torch.randn(4, 64, dtype=torch.float16)).records
    assert (record.input_bytes, record.output_bytes) == (4 * 64 * 2, 4 * 32 * 2)
    assert record.param_bytes == (64 * 32 + 32) * 2
    conv = nn.Conv2d(3, 8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), Profiler(conv) as p:
        conv(torch.randn(1, 3, 10, 10))
    (record,) = p.records
    # autocast casts inside the module: the input arrives in float32, the output leaves in
    # bfloat16, the parameters are stored in float32.
    assert record.input_bytes == 3 * 10 * 10 * 4
    assert record.output_bytes == 8 * 8 * 8 * 2
    assert record.param_bytes == (8 * 3 * 9 + 8) * 4


def test_channels_last_moves_the_same_bytes() -> None:
    conv = nn.Conv2d(4, 4, 3).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 9, 9)
    plain = profiled(conv, x).records[0]
    last = profiled(conv, x.to(memory_format=torch.channels_last)).records[0]
    assert (last.input_bytes, last.output_bytes) == (plain.input_bytes, plain.output_bytes)


def test_summary_mode_bytes_are_totals_over_calls() -> None:
    conv = nn.Conv2d(1, 1, 1)
    with Profiler(conv, summary=True) as p:
        for _ in range(5):
            conv(torch.randn(1, 1, 4, 4))
    (record,) = p.records
    assert record.calls == 5 and record.input_bytes == 5 * 16 * 4


def test_bytes_columns_appear_only_when_asked() -> None:
    p = profiled(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(1, 3, 8, 8))

    def text(**options) -> str:
        console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
        p.print(console=console, **options)
        return console.export_text()

    assert "Ops/B" not in text()
    shown = text(show_bytes=True)
    total = next(line for line in shown.splitlines() if line.startswith("Total"))
    assert f"{p.total_ops / p.report.total_bytes:.1f}" in total
    assert format_count(p.report.total_bytes) + "B" in total


def test_latex_is_structurally_sound() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    p = profiled(model, torch.randn(1, 3, 8, 8))
    latex = latex_table(layer_grid(p.report, show_bytes=True))
    environments = re.findall(r"\\(begin|end)\{(\w+)\}", latex)
    stack = []
    for kind, name in environments:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert stack == [] and [n for k, n in environments if k == "begin"] == ["table", "tabular"]
    body = latex.split("\\midrule")[1]
    rows = [line for line in body.splitlines() if line.endswith("\\\\")]
    assert len(rows) == len(p.records) == 4
    columns = re.search(r"\\begin\{tabular\}\{(\w+)\}", latex).group(1)
    assert all(line.count(" & ") == len(columns) - 1 for line in latex.splitlines() if line.endswith("\\\\"))
    assert "\\toprule" in latex and "\\bottomrule" in latex
    assert "_" not in latex.replace("\\_", "")  # every underscore escaped
