"""One composition per report: every format shows the same sections and columns."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from opscope.cli import main
from opscope.documents import markdown_table
from opscope.tables import Column, Grid

ARGS = ["profile", "resnet18", "--input", "1x3x32x32", "--device", "cpu"]


def _markdown_tables(text: str) -> list[tuple[str | None, list[str]]]:
    tables, title = [], None
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("**") and line.endswith("**") and not line.startswith("**|"):
            title = line.strip("*")
        elif line.startswith("| ") and index + 1 < len(lines) and "---" in lines[index + 1]:
            tables.append((title, [cell.strip() for cell in line.strip("|").split(" | ")]))
            title = None
    return tables


def _latex_tables(text: str) -> list[tuple[str | None, list[str]]]:
    tables = []
    for block in text.split(r"\begin{table}")[1:]:
        caption = re.search(r"\\caption\{(.*)\}", block)
        header = block.split("\\toprule\n")[1].splitlines()[0]
        cells = [cell.strip() for cell in header.removesuffix(r" \\").split(" & ")]
        tables.append((caption.group(1) if caption else None, [c.replace("\\", "") for c in cells]))
    return tables


def _html_tables(text: str) -> list[tuple[str | None, list[str]]]:
    tables = []
    for block in text.split("<table>")[1:]:
        caption = re.search(r"<caption>(.*?)</caption>", block)
        head = block.split("<thead>")[1].split("</thead>")[0]
        headers = re.findall(r"<th[^>]*>(.*?)</th>", head)
        tables.append((caption.group(1) if caption else None, headers))
    return tables


def _terminal_tables(text: str) -> list[tuple[str | None, list[str]]]:
    tables, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(("Layer ", "Type ")):
            above = lines[index - 1] if index else ""
            title = above.strip() if above.startswith(" ") and above.strip() else None  # centred
            headers = line.split()
            tables.append((title, [h for h in headers if h != "Relative"]))
    return tables


READERS = {"markdown": _markdown_tables, "latex": _latex_tables, "html": _html_tables,
           "table": _terminal_tables}  # fmt: skip


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("formats")
    texts = {}
    for fmt in (*READERS, "csv"):
        target = folder / f"out.{fmt}"
        extra = ["--time", "--repeat", "1", "--warmup", "0", "--bytes"]
        extra += [] if fmt == "csv" else ["--top", "4"]
        assert main([*ARGS, *extra, "--format", fmt, "--output", str(target)]) == 0
        texts[fmt] = target.read_text()
    return texts


def test_every_format_shows_the_same_sections_and_columns(written: dict[str, str]) -> None:
    shown = {fmt: READERS[fmt](written[fmt]) for fmt in READERS}
    reference = shown["markdown"]
    assert [title for title, _ in reference] == [None, "By type"]
    layer_headers = reference[0][1]
    for column in ("Layer", "Type", "Ops", "Share", "Bytes", "Ops/B", "Time", "Ops/s"):
        assert column in layer_headers
    for fmt, tables in shown.items():
        assert tables == reference, fmt
    csv_columns = next(csv.reader(io.StringIO(written["csv"])))
    assert {"input_bytes", "output_bytes", "param_bytes", "time_ns"} <= set(csv_columns)


def test_the_same_notes_in_every_document_format(tmp_path: Path) -> None:
    notes = {}
    for fmt in ("markdown", "latex", "html", "table"):
        target = tmp_path / f"coverage.{fmt}"
        argv = ["profile", "vit_b_16", "--coverage", "--format", fmt, "--output", str(target)]
        assert main(argv) == 0
        notes[fmt] = "Coverage: opscope counted all of" in target.read_text()
    assert all(notes.values()), notes


def test_by_type_only_with_several_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "one_type.py").write_text(
        "import torch\ndef model():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for fmt, read in READERS.items():
        target = tmp_path / f"out.{fmt}"
        for model, tables in (("alexnet", 2), ("one_type:model", 1)):
            argv = ["profile", model, "--format", fmt, "--output", str(target)]
            assert main(argv) == 0
            assert len(read(target.read_text())) == tables, (fmt, model)


def test_columns_carry_their_alignment() -> None:
    grid = Grid(
        columns=(Column("Name"), Column("Ops", "right", whole=True), Column("Bias", "center")),
        rows=(("a|b", "1", "yes"),),
    )
    assert markdown_table(grid).splitlines()[:3] == [
        "| Name | Ops | Bias |",
        "| --- | ---: | :---: |",
        "| a\\|b | 1 | yes |",
    ]


def test_a_comparison_without_published_figures_leaves_their_columns_out() -> None:
    from opscope.compare import ModelSummary
    from opscope.tables import comparison_grid
    from opscope.zoo import PublishedMetrics

    def summary(name: str, published: PublishedMetrics) -> ModelSummary:
        return ModelSummary(name, "classification", (1, 3, 224, 224), 10, 1, 100, 200, None,
                            50, published=published)  # fmt: skip

    unpublished = [summary("timm:a", PublishedMetrics()), summary("hf:b", PublishedMetrics())]
    headers = [column.header for column in comparison_grid(unpublished).columns]
    assert "acc@1" not in headers and "GFLOPS (pub.)" not in headers and "GMACs" in headers
    with_one = [
        *unpublished,
        summary("resnet18", PublishedMetrics("acc@1", 69.76, "ImageNet-1K", 1.81, 224)),
    ]
    grid = comparison_grid(with_one)
    assert {"acc@1", "GFLOPS (pub.)"} <= {column.header for column in grid.columns}
    assert all(len(row) == len(grid.columns) for row in grid.rows)


def test_a_model_that_failed_before_running_leaves_the_common_input_alone() -> None:
    """A failed row has no inputs (its worker died, or its factory raised): the others' common
    input stays the title, with no Input column (before, the blank made the inputs differ),
    and its published figure is shown without a size (it raised an IndexError)."""
    from opscope.compare import ModelSummary
    from opscope.tables import comparison_grid
    from opscope.zoo import PublishedMetrics

    ran = [
        ModelSummary(name, "classification", (1, 3, 224, 224), 10, 1, 100, 200, None, 50,
                     inputs="1×3×224×224")
        for name in ("a", "b")
    ]  # fmt: skip
    failed = ModelSummary("resnet18", "classification", (), None, None, None, None, None, None,
                          PublishedMetrics("acc@1", 69.76, "ImageNet-1K", 1.81, 224),
                          error="the process profiling it exited with code 7")  # fmt: skip
    grid = comparison_grid([ran[0], failed, ran[1]])
    assert grid.title == "3 models at 1×3×224×224"
    assert "Input" not in [column.header for column in grid.columns]
    assert "1.81" in grid.rows[1]
