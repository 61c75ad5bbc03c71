"""The terminal view: rich tables, printed to a fixed-width recording console."""

from __future__ import annotations

import io
import re
from collections import OrderedDict

import pytest
import torch
import torchvision
from rich.console import Console
from torch import nn

from opscope import Profiler
from opscope.format import format_count, format_share, share_bar
from opscope.tables import Column, Grid
from opscope.terminal import ComparisonTable, fit, rich_table


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


def test_the_settings_have_a_column_each_or_share_one_never_some_of_them() -> None:
    # MobileNetV3's depthwise convolutions: their groups are shown at every width the
    # settings are, in their own column or in the shared one ("3×3 s2 g16")
    with torch.device("meta"):
        model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    with Profiler(model) as p:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    for show_bytes in (False, True):
        layouts = set()
        for width in range(100, 181, 4):
            lines = printed(p, width, show_bytes=show_bytes).splitlines()
            header = next(line for line in lines if line.startswith("Layer")).split()
            row = next(line for line in lines if line.startswith("features.1.block.0.0 ")).split()
            settings = [name for name in ("Kernel", "Stride", "Groups", "Bias") if name in header]
            assert settings in ([], ["Kernel"], ["Kernel", "Stride", "Groups", "Bias"]), (width, header)
            if settings == ["Kernel"]:
                assert "g16" in row, (width, row)
            elif settings:
                assert row[header.index("Groups")] == "16", (width, row)
            if width >= 120:  # the wide layout: its MACs and, bytes or not, the layer's details
                assert {"MACs", "Output", "Params"} <= set(header), (width, header)
            layouts.add(len(settings))
        assert layouts == {0, 1, 4}, show_bytes


def test_top_and_sort(resnet18: Profiler) -> None:
    text = printed(resnet18, 120, sort="ops", top=3)
    body = [line for line in text.splitlines() if line.startswith(("layer", "conv"))]
    assert len(body) == 3
    heaviest = sorted(resnet18.records, key=lambda r: -r.ops)[:3]
    assert [line.split()[0] for line in body] == [r.name for r in heaviest]
    hidden_ops = resnet18.total_ops - sum(r.ops for r in heaviest)
    more = next(line for line in text.splitlines() if line.startswith("… 17 more rows"))
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


def test_a_column_left_out_comes_back_when_it_fits() -> None:
    """Leaving out the wide Output (keep 2) is enough; the narrow Params (keep 1), left out
    first, fits again beside the rest and comes back (before, it stayed out)."""
    grid = Grid(
        columns=(
            Column("Layer"), Column("Params", "right", True, keep=1),
            Column("Output", whole=True, keep=2), Column("Ops", "right", True),
        ),
        rows=(("encoder.layers.encoder_layer_11.mlp.0", "2.36 M", "1×197×3072", "930 M"),),
    )  # fmt: skip
    narrow = fit(grid, 52)  # all four need 63, without Params 55, with neither 43
    assert [column.header for column in narrow.columns] == ["Layer", "Params", "Ops"]
    assert narrow.rows == (("encoder.layers.encoder_layer_11.mlp.0", "2.36 M", "930 M"),)
    assert fit(grid, 200) == grid
    assert [column.header for column in fit(grid, 30).columns] == ["Layer", "Ops"]


def test_the_comparison_fits_80_columns() -> None:
    from opscope.compare import ModelSummary
    from opscope.zoo import PublishedMetrics

    def summary(name: str, ops: int, acc: float, gflops: float, size: int) -> ModelSummary:
        published = PublishedMetrics("acc@1", acc, "ImageNet-1K", gflops, size)
        return ModelSummary(name, "classification", (1, 3, 224, 224), 119_000_000, 339,
                            ops, ops + 10**8, 1.0, None, published)  # fmt: skip

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


NUMBER = re.compile(r"^(\d[\d.]*( [KMGTPE])?B?|\d+\.\d%|\d+(×\d+)+|[\d.]+ @\d+)$")


def _rows(text: str) -> dict[str, list[str]]:
    """Each row's cells (split at runs of two spaces), by its first cell."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r" {2,}", line.strip()) if cell.strip()]
        if cells:
            rows.setdefault(cells[0], cells)
    return rows


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "swin_t", "vit_b_16"])
def test_no_width_cuts_a_number(name: str) -> None:
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None).eval()
    with torch.inference_mode(), Profiler(model, coverage=True) as p:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    wide = _rows(printed(p, 200))
    for width in (60, 80, 100, 120):
        text = printed(p, width)
        assert all(len(line) <= width for line in text.splitlines())
        for label, cells in _rows(text).items():
            # A long label may wrap (its "#2" on the next line): the wide row it begins.
            same = wide.get(label) or next(
                (row for key, row in wide.items() if key.startswith(f"{label} #")), []
            )
            numbers = [cell for cell in cells[1:] if NUMBER.match(cell)]
            assert all(number in same for number in numbers), (width, label, cells)
        total = next(line for line in text.splitlines() if line.startswith("Total ("))
        assert format_count(p.total_ops) in total  # the total, whole


def test_no_width_cuts_a_number_of_the_comparison() -> None:
    from opscope.catalogue import resolve
    from opscope.compare import compare

    summaries = compare(
        resolve(["resnet18", "vit_h_14", "alexnet"]), coverage=True, published_size=True
    )
    summaries += compare(resolve(["alexnet"]), (1, 3, 16, 16))  # a failure: a Note column
    wide = Console(file=io.StringIO(), width=250, record=True, color_system=None)
    wide.print(ComparisonTable(summaries))
    reference = _rows(wide.export_text())
    for width in (60, 80, 100, 120, 200):
        console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
        console.print(ComparisonTable(summaries))
        text = console.export_text()
        assert all(len(line) <= width for line in text.splitlines())
        for label, cells in _rows(text).items():
            if label in reference:
                numbers = [cell for cell in cells[1:] if NUMBER.match(cell)]
                assert all(number in reference[label] for number in numbers), (width, cells)
        assert "1016.72" in text or width < 100  # vit_h_14's published figure, whole


def test_an_indented_name_is_never_wrapped() -> None:
    """A tree's nested path keeps its indentation and its name on one line: a column that
    matters less is left out first."""
    name = "encoder.layer.0.attention.output.dense"
    grid = Grid(
        (Column("Module"), Column("Type", keep=60), Column("Ops", "right", whole=True)),
        (("(model)", "BertModel", "22.4 G"), ("        " + name, "Linear", "1.18 M")),
    )

    def rendered(width: int) -> str:
        console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
        console.print(rich_table(grid, width))
        return console.export_text()

    lines = rendered(60).splitlines()
    assert any(line.startswith(f"        {name}") and line.endswith("1.18 M") for line in lines)
    assert "Linear" not in rendered(60)  # the Type column made room
    narrow = rendered(50)  # too narrow for the name: it wraps, no number is cut
    assert "22.4 G" in narrow and "1.18 M" in narrow


@pytest.mark.parametrize("width", [40, 50])
def test_too_narrow_for_names_folds_them_not_the_numbers(width: int) -> None:
    long = "an_encoder_block_with_a_rather_long_name"
    model = nn.Sequential(OrderedDict({long: nn.Sequential(nn.Linear(64, 64), nn.GELU())}))
    with torch.inference_mode(), Profiler(model) as p:
        model(torch.randn(512, 64))

    def numbers(text: str) -> set[str]:
        return {
            cell
            for line in text.splitlines()
            for cell in re.split(r" {2,}", line.strip())
            if NUMBER.match(cell)
        }

    narrow = printed(p, width, depth=3)
    assert all(len(line) <= width for line in narrow.splitlines())
    assert numbers(narrow) and numbers(narrow) <= numbers(printed(p, 200, depth=3))
    total = next(line for line in narrow.splitlines() if line.startswith("Total ("))
    assert format_count(p.total_ops) in total
