"""Pictures: the files are valid PNG or SVG, and what they show equals the records."""

from __future__ import annotations

import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
import torchvision

from opscope import catalogue
from opscope import Profiler, zoo
from opscope.choices import plot_format
from opscope.zoo import PublishedMetrics
from opscope.compare import ModelSummary, compare
from opscope.plots import (
    LAYER_LABELS,
    PlotDependencyError,
    pareto_front,
    plot_comparison,
    plot_layers,
)
from opscope.report import Report
from helpers import needs_matplotlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def profile(name: str, shape: tuple[int, ...] = (1, 3, 224, 224)) -> Report:
    """A torchvision model's report, built and run on the meta device."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None).eval()
    with Profiler(model) as p:
        model(torch.empty(shape, device="meta"))
    return p.report


@pytest.fixture(scope="module")
def resnet18() -> Report:
    return profile("resnet18")


@pytest.fixture(scope="module")
def summaries() -> list[ModelSummary]:
    # At 32×32 alexnet fails (its pooling leaves nothing), the others run.
    names = ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "mnasnet0_5", "alexnet"]
    return compare(catalogue.resolve(names), (1, 3, 32, 32))


def summary(name: str, ops: int | None, acc1: float | None, error: str | None = None) -> ModelSummary:
    return ModelSummary(
        name=name, task="classification", input_shape=(1, 3, 224, 224), params=None if ops is None else 1,
        conv_calls=None, conv_ops=None, total_ops=ops, coverage=None, macs=None,
        published=PublishedMetrics("acc@1" if acc1 else None, acc1, size=224), error=error,
    )  # fmt: skip


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def svg_root(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg")
    return root


def brute_force_front(points: list[tuple[str, int, float]]) -> set[str]:
    """Models for which no other model is at least as good on both axes and better on one."""
    return {
        name
        for name, ops, acc in points
        if not any(
            o <= ops and a >= acc and (o < ops or a > acc) for other, o, a in points if other != name
        )
    }


def drawn_texts(figure) -> list[str]:  # noqa: ANN001
    from matplotlib.text import Text

    return [text.get_text() for text in figure.findobj(Text)]


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"), [("a.png", "png"), ("b.svg", "svg"), ("C.SVG", "svg"), ("d.PNG", "png")]
)
def test_the_format_comes_from_the_suffix(name: str, fmt: str) -> None:
    assert plot_format(name) == fmt


@pytest.mark.parametrize("name", ["plot.pdf", "plot.jpg", "plot", "plot.png.txt"])
def test_another_suffix_is_a_clear_value_error(resnet18: Report, tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    with pytest.raises(ValueError, match=r"must end in \.png or \.svg"):
        plot_layers(resnet18, target)
    with pytest.raises(ValueError, match=r"must end in \.png or \.svg"):
        plot_comparison([summary("a", 1, 50.0)], target)
    assert not target.exists()


# --- per-layer pictures ------------------------------------------------------------------


@needs_matplotlib
def test_layers_png_shows_every_record_in_execution_order(resnet18: Report, tmp_path: Path) -> None:
    target = tmp_path / "layers.png"
    data = plot_layers(resnet18, target, title="resnet18")
    width, height = png_size(target)
    assert 600 <= width <= 2400 and 300 <= height <= 1600

    records = resnet18.records
    assert data.kind == "layers" and data.title == "resnet18"
    assert list(data.y) == [record.ops for record in records]
    assert list(data.x) == list(range(len(records)))
    assert list(data.groups) == [
        "functional" if record.family == "functional" else record.module_type for record in records
    ]
    assert "functional" in data.groups  # the residual additions, outside counted modules
    assert list(data.labels[:3]) == ["conv1", "bn1", "relu"]
    assert sum(data.y) == resnet18.total_ops


@needs_matplotlib
def test_layers_are_coloured_by_module_type(resnet18: Report, tmp_path: Path) -> None:
    data = plot_layers(resnet18, tmp_path / "layers.svg")
    colour_of: dict[str, str] = {}
    for kind, colour in zip(data.groups, data.colors):
        assert colour_of.setdefault(kind, colour) == colour  # one colour per type
    assert len(set(colour_of.values())) == len(colour_of)  # and a different one for each
    # The legend names every type once, heaviest first, in its bars' colour.
    legend_types = [entry.split(" (")[0] for entry, _ in data.legend]
    ops: dict[str, int] = {}
    for kind, value in zip(data.groups, data.y):
        ops[kind] = ops.get(kind, 0) + value
    assert legend_types == sorted(ops, key=lambda kind: -ops[kind])
    assert [colour for _, colour in data.legend] == [colour_of[kind] for kind in legend_types]


@needs_matplotlib
def test_a_training_steps_other_phases_have_their_own_colours(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Profiler(model) as p:
        model(torch.randn(4, 8)).sum().backward()
        optimizer.step()
    data = plot_layers(p.report, tmp_path / "step.svg")
    phases = {r.phase for r in p.records}
    assert phases == {"forward", "backward", "step"}
    assert {"backward", "step"} <= set(data.groups)
    functional = sum(v for g, v in zip(data.groups, data.y) if g == "functional")
    assert functional == 4 * 2 - 1  # the forward's sum() alone, not the backward's work
    assert sum(v for g, v in zip(data.groups, data.y) if g == "backward") == (
        p.report.by_phase()["backward"][0]
    )


@needs_matplotlib
def test_the_heaviest_layers_are_named(resnet18: Report, tmp_path: Path) -> None:
    data = plot_layers(resnet18, tmp_path / "layers.svg")
    by_ops = sorted(resnet18.records, key=lambda record: -record.ops)  # stable: ties in order
    assert list(data.annotated) == [record.name for record in by_ops[:LAYER_LABELS]]
    assert data.annotated[0] == "conv1"


@needs_matplotlib
def test_layers_svg_is_valid_and_the_same_every_time(resnet18: Report, tmp_path: Path) -> None:
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    plot_layers(resnet18, first)
    plot_layers(resnet18, second)
    root = svg_root(first)
    assert root.get("width", "").endswith("pt") and root.get("viewBox")
    assert first.read_bytes() == second.read_bytes()


@needs_matplotlib
def test_repeated_calls_are_labelled_like_the_table(tmp_path: Path) -> None:
    layer = torch.nn.Linear(4, 4)
    with Profiler(layer) as p:
        layer(torch.randn(2, 4))
        layer(torch.randn(3, 4))
    data = plot_layers(p.report, tmp_path / "twice.png")
    assert data.labels == ("(model) #1", "(model) #2")
    assert data.y == tuple(record.ops for record in p.records)


@needs_matplotlib
def test_an_empty_report_still_gives_a_picture(tmp_path: Path) -> None:
    target = tmp_path / "empty.svg"
    data = plot_layers(Report(records=(), hooked_modules=0), target)
    svg_root(target)
    assert data.x == data.y == data.annotated == ()


# --- comparison pictures -----------------------------------------------------------------


@needs_matplotlib
def test_comparison_png_plots_total_ops_against_published_accuracy(
    summaries: list[ModelSummary], tmp_path: Path
) -> None:
    target = tmp_path / "compare.png"
    data = plot_comparison(summaries, target)
    width, height = png_size(target)
    assert 600 <= width <= 3000 and 300 <= height <= 2000

    plotted = [s for s in summaries if s.total_ops is not None and s.acc1 is not None]
    assert data.kind == "comparison"
    assert list(data.labels) == [s.name for s in plotted]
    assert list(data.x) == [s.total_ops for s in plotted]
    assert list(data.y) == [s.acc1 for s in plotted]
    assert set(data.annotated) == set(data.labels)  # every point is named
    assert data.failed == ("alexnet",)
    assert data.missing == ()
    expected = brute_force_front([(s.name, s.total_ops, s.acc1) for s in plotted])  # type: ignore[misc]
    assert set(data.pareto) == expected
    assert list(data.pareto) == sorted(data.pareto, key=lambda name: data.x[data.labels.index(name)])
    for name, group, colour in zip(data.labels, data.groups, data.colors):
        assert (group == "pareto") == (name in expected)
        assert colour == dict(data.legend)["Pareto front" if group == "pareto" else "other models"]


@needs_matplotlib
def test_models_without_accuracy_or_count_are_listed_beside_the_plot(tmp_path: Path) -> None:
    from opscope.plots import _comparison_figure

    rows = [
        summary("small", 1_000_000, 60.0),
        summary("big", 9_000_000_000, 80.0),
        summary("custom:net", 5_000_000, None),
        summary("broken", None, 70.0, error="RuntimeError: Output size is too small"),
    ]
    target = tmp_path / "compare.svg"
    data = plot_comparison(rows, target)
    svg_root(target)
    assert data.labels == ("small", "big")
    assert data.missing == ("custom:net",) and data.failed == ("broken",)
    texts = " ".join(" ".join(drawn_texts(_comparison_figure(rows, None)[0])).split())  # unwrapped
    assert "No published acc@1" in texts and "custom:net (5.00 M ops)" in texts
    assert "Failed" in texts and "broken: RuntimeError: Output size is too small" in texts
    for name in ("small", "big"):
        assert name in texts


@needs_matplotlib
def test_a_comparison_with_nothing_to_plot_lists_everything(tmp_path: Path) -> None:
    rows = [summary("custom:net", 5_000_000, None), summary("broken", None, None, error="boom")]
    data = plot_comparison(rows, tmp_path / "nothing.png")
    png_size(tmp_path / "nothing.png")
    assert data.x == () and data.missing == ("custom:net",) and data.failed == ("broken",)


@pytest.mark.parametrize(
    "points",
    [
        [("a", 1, 70.0), ("b", 2, 75.0), ("c", 3, 72.0), ("d", 4, 80.0)],
        [("a", 5, 70.0), ("b", 5, 75.0), ("c", 1, 75.0)],  # same ops, and same accuracy
        [("a", 2, 70.0), ("b", 2, 70.0), ("c", 9, 71.0)],  # equal points both stay
        [("only", 7, 50.0)],
        [],
    ],
)
def test_the_pareto_front_is_the_set_nothing_beats(points: list[tuple[str, int, float]]) -> None:
    front = pareto_front(points)
    assert set(front) == brute_force_front(points)
    assert [next(o for n, o, _ in points if n == name) for name in front] == sorted(
        next(o for n, o, _ in points if n == name) for name in front
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_pareto_front_on_random_points(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    ops = torch.randint(1, 20, (25,), generator=generator).tolist()
    acc = torch.randint(50, 60, (25,), generator=generator).tolist()
    points = [(f"m{i}", o, float(a)) for i, (o, a) in enumerate(zip(ops, acc))]
    assert set(pareto_front(points)) == brute_force_front(points)


# --- without matplotlib ------------------------------------------------------------------


def test_without_matplotlib_the_error_says_how_to_install_it(
    resnet18: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    target = tmp_path / "layers.png"
    with pytest.raises(PlotDependencyError, match=r"pip install 'opscope\[plot\]'") as raised:
        plot_layers(resnet18, target)
    assert isinstance(raised.value, ImportError)
    with pytest.raises(PlotDependencyError, match=r"pip install 'opscope\[plot\]'"):
        plot_comparison([summary("a", 1, 50.0)], tmp_path / "compare.svg")
    assert not target.exists() and not (tmp_path / "compare.svg").exists()
    # A bad suffix is still the ValueError: it is checked first.
    with pytest.raises(ValueError, match="must end in"):
        plot_layers(resnet18, tmp_path / "layers.gif")


@needs_matplotlib
def test_a_long_list_beside_the_plot_is_cut_with_a_count() -> None:
    from opscope.plots import _comparison_figure

    rows = [summary("a", 1_000, 50.0), *(summary(f"custom:net{i}", 5_000, None) for i in range(30))]
    figure, data = _comparison_figure(rows, None)
    assert len(data.missing) == 30  # the data has them all
    texts = " ".join(drawn_texts(figure))
    assert "custom:net13 " in texts and "custom:net14 " not in texts
    assert "… and 16 more" in texts


@needs_matplotlib
def test_files_are_written_atomically(
    resnet18: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_layers(resnet18, tmp_path / "missing" / "layers.png")
    target = tmp_path / "layers.svg"
    target.write_text("old")
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise RuntimeError("interrupted")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        plot_layers(resnet18, target)
    assert target.read_text() == "old"  # the old file is kept, and no temporary is left
    assert [path.name for path in tmp_path.iterdir()] == ["layers.svg"]
    monkeypatch.undo()
    plot_layers(resnet18, target)
    svg_root(target)
    assert [path.name for path in tmp_path.iterdir()] == ["layers.svg"]


@needs_matplotlib
@pytest.mark.parametrize("plotted", [True, False])
def test_the_box_beside_the_plot_is_drawn_whole(plotted: bool) -> None:
    # a long failure, wrapped to its widest: its box, padding and edge included, inside the
    # picture
    from opscope.plots import _comparison_figure

    reason = "torch.nonzero() needs tensor values, which the meta device has not: try --device cpu"
    rows = [summary("fasterrcnn_resnet50_fpn", None, 70.0, error=reason)]
    if plotted:
        rows += [summary("small", 1_000_000, 60.0), summary("big", 9_000_000_000, 80.0)]
    figure = _comparison_figure(rows, None)[0]
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    (box,) = [text for text in figure.axes[0].texts if text.get_bbox_patch() is not None]
    extent, picture = box.get_bbox_patch().get_window_extent(renderer), figure.bbox
    assert picture.x0 <= extent.x0 and extent.x1 <= picture.x1, (extent, picture)
    assert picture.y0 <= extent.y0 and extent.y1 <= picture.y1, (extent, picture)
