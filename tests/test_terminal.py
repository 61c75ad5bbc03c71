"""The terminal view: rich tables, printed to a fixed-width recording console."""

from __future__ import annotations

import io

import pytest
import torch
import torchvision
from rich.console import Console
from torch import nn

from opscope import Profiler
from opscope.format import format_count, format_share, share_bar
from opscope.terminal import ComparisonTable


def printed(profiler: Profiler, width: int, **options) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    profiler.print(console=console, **options)
    return console.export_text()


@pytest.fixture(scope="module")
def resnet18() -> Profiler:
    with torch.device("meta"):
        model = torchvision.models.resnet18(weights=None).eval()
    with Profiler(model, include=[nn.Conv2d]) as p:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    return p


@pytest.mark.parametrize("width", [80, 160])
def test_table_rows_and_totals(resnet18: Profiler, width: int) -> None:
    text = printed(resnet18, width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    total_line = next(line for line in lines if line.startswith("Total (20 calls)"))
    assert format_count(resnet18.total_ops) in total_line  # 3.62 G
    assert format_count(resnet18.report.total_params) in total_line  # 11.2 M
    assert "100.0%" in total_line
    # Every layer has a row of its own, with its share of the total.
    for record in resnet18.records:
        row = next(line for line in lines if line.startswith(record.name + " "))
        assert format_share(record.ops, resnet18.total_ops) in row


def test_wide_layout_has_a_column_per_setting(resnet18: Profiler) -> None:
    wide, narrow = printed(resnet18, 160), printed(resnet18, 80)
    header = next(line for line in wide.splitlines() if line.startswith("Layer"))
    assert header.split() == ["Layer", "Type", "Input", "Output", "Kernel", "Stride", "Groups",
                              "Bias", "Params", "Ops", "MACs", "Share", "Relative"]  # fmt: skip
    stem = next(line for line in narrow.splitlines() if line.startswith("conv1 "))
    assert stem.split()[:4] == ["conv1", "1×3×224×224", "1×64×112×112", "7×7"]
    assert "s2" in stem.split()


def test_top_and_sort(resnet18: Profiler) -> None:
    text = printed(resnet18, 120, sort="ops", top=3)
    body = [line for line in text.splitlines() if line.startswith(("layer", "conv"))]
    assert len(body) == 3
    heaviest = sorted(resnet18.records, key=lambda r: -r.ops)[:3]
    assert [line.split()[0] for line in body] == [r.name for r in heaviest]
    hidden_ops = resnet18.total_ops - sum(r.ops for r in heaviest)
    more = next(line for line in text.splitlines() if line.startswith("… 17 more"))
    assert format_count(hidden_ops) in more
    assert "Total (20 calls)" in text


def test_repeated_calls_are_numbered() -> None:
    conv = nn.Conv2d(1, 1, 1)
    model = nn.Sequential(conv, conv)
    with Profiler(model) as p:
        model(torch.randn(1, 1, 2, 2))
    text = printed(p, 100)
    assert "0 #1" in text and "0 #2" in text
    assert "shared" in text


def test_two_hundred_layers_stay_readable() -> None:
    model = nn.Sequential(*[nn.Conv2d(2, 2, 1) for _ in range(250)])
    with Profiler(model) as p:
        model(torch.randn(1, 2, 4, 4))
    lines = printed(p, 80).splitlines()
    assert sum(1 for line in lines if line[:1].isdigit()) == 250
    assert all(len(line) <= 80 for line in lines)
    assert any(line.startswith("Total (250 calls)") for line in lines)


def test_empty_reports_say_why() -> None:
    no_conv = nn.Sequential(nn.Linear(2, 2))
    with Profiler(no_conv, include=[nn.Conv2d]) as p:
        no_conv(torch.randn(1, 2))
    assert "the model has no Conv2d module" in printed(p, 80)

    idle = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1))
    with Profiler(idle, include=[nn.Conv2d]) as p:
        pass
    text = printed(p, 80)
    assert "2 Conv2d module(s) were hooked, but none ran" in text
    assert "Total" not in text


def test_top_must_be_positive(resnet18: Profiler) -> None:
    with pytest.raises(ValueError, match="top must be a positive"):
        printed(resnet18, 80, top=0)


def test_share_bars_stand_out_on_wide_terminals(resnet18: Profiler) -> None:
    wide = printed(resnet18, 140).splitlines()
    header = next(line for line in wide if line.startswith("Layer"))
    assert header.split()[-1] == "Relative"
    heaviest = max(resnet18.records, key=lambda r: r.ops)
    row = next(line for line in wide if line.startswith(heaviest.name + " "))
    assert row.rstrip().endswith("█" * 10)  # the heaviest call fills its bar
    stem = next(line for line in wide if line.startswith("conv1 "))
    assert stem.rstrip().endswith(share_bar(resnet18.records[0].ops / heaviest.ops))
    assert "Relative" not in printed(resnet18, 80)  # no room on 80 columns


def test_the_comparison_fits_80_columns() -> None:
    from opscope.compare import ModelSummary

    def summary(name: str, ops: int, acc: float, gflops: float, size: int) -> ModelSummary:
        return ModelSummary(name, "classification", (1, 3, 224, 224), 119_000_000, 339,
                            ops, ops + 10**8, 1.0, acc, gflops, size)  # fmt: skip

    rows = [summary("efficientnet_v2_l", 24_400_000_000, 85.81, 56.08, 480),
            summary("swin_t", 28_900_000, 81.47, 4.49, 224)]  # fmt: skip
    for width, calls_shown in ((80, False), (140, True)):
        console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
        console.print(ComparisonTable(rows))
        lines = console.export_text().splitlines()
        assert all(len(line) <= width for line in lines)
        header = next(line for line in lines if line.startswith("Model"))
        assert ("Conv2d calls" in header) == calls_shown
        row = next(line for line in lines if line.startswith("efficientnet_v2_l "))
        assert row.rstrip().endswith("56.08 @480") and "24.5 G" in row  # whole, never cut
        assert ("24.4 G" in row) == calls_shown  # Conv2d ops: left out first where narrow
