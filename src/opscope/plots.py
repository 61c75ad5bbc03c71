"""Pictures of a report and of a comparison, drawn with matplotlib (the ``plot`` extra).

matplotlib is imported only when a picture is drawn, and only its object-oriented API is used
(a :class:`matplotlib.figure.Figure` on an Agg canvas, never ``pyplot``): nothing global is
changed, no window is opened, and it works without a display.

Each function returns the :class:`PlotData` it handed to matplotlib, so what a picture shows
can be checked against the records without looking at pixels.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opscope import exports
from opscope.choices import plot_format
from opscope.format import (
    at_common_shape,
    format_count,
    format_share,
    format_tick,
    published_elsewhere,
)
from opscope.records import FUNCTIONAL
from opscope.tables import empty_message, layer_labels

if TYPE_CHECKING:
    from opscope.compare import ModelSummary
    from opscope.records import LayerRecord
    from opscope.report import Report

INSTALL_HINT = "pip install 'opscope[plot]'"

LAYER_LABELS = 5
"""How many of the heaviest layers :func:`plot_layers` names on the picture."""

# matplotlib's tab10 then tab20's light shades: distinct, and readable on white.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
FRONT_COLOR = "#d62728"
OTHER_COLOR = "#1f77b4"


class PlotDependencyError(ImportError):
    """matplotlib is not installed; the message says how to install it."""


@dataclass(frozen=True)
class PlotData:
    """What a picture shows, as handed to matplotlib.

    Attributes:
        kind: ``"layers"`` (:func:`plot_layers`) or ``"comparison"`` (:func:`plot_comparison`).
        x: layers: the bars' positions, ``0, 1, ...`` in execution order; comparison: each
            plotted model's total ops (exact integers).
        y: layers: each record's ops; comparison: each plotted model's published acc@1.
        labels: layers: each bar's layer (as in the table); comparison: each point's model.
        groups: layers: each bar's module type (``functional`` for the work a module did
            outside counted modules); comparison: ``"pareto"`` or ``"other"``.
        colors: each bar's or point's colour (``#rrggbb``); one colour per group.
        legend: ``(entry, colour)`` pairs, in the legend's order.
        annotated: the labels named on the picture (layers: the heaviest, heaviest first,
            numbered above their bars and named in a key; comparison: every model beside its
            point, with ``@size`` when its accuracy was published at another input size).
        pareto: comparison: the models of the Pareto front, by increasing ops.
        missing: comparison: models counted but without a published acc@1 (not plotted).
        failed: comparison: models that failed, so have no count (not plotted).
        title: the picture's title.
    """

    kind: str
    x: tuple[int, ...]
    y: tuple[float, ...]
    labels: tuple[str, ...]
    groups: tuple[str, ...]
    colors: tuple[str, ...]
    legend: tuple[tuple[str, str], ...]
    annotated: tuple[str, ...]
    title: str
    pareto: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def pareto_front(points: Sequence[tuple[str, int, float]]) -> tuple[str, ...]:
    """Names of the ``(name, ops, accuracy)`` points no other point beats: none has at
    most as many ops and at least the accuracy, and is better in one. Equal points both stay.
    By increasing ops.

    Example:
        >>> pareto_front([("a", 1, 70.0), ("b", 2, 75.0), ("c", 3, 72.0), ("d", 4, 80.0)])
        ('a', 'b', 'd')
    """

    def beaten(ops: int, acc: float) -> bool:
        return any((o <= ops and a >= acc) and (o < ops or a > acc) for _, o, a in points)

    front = [point for point in points if not beaten(point[1], point[2])]
    return tuple(name for name, _, _ in sorted(front, key=lambda point: (point[1], point[2])))


def plot_layers(
    report: Report, path: str | os.PathLike[str], *, title: str | None = None
) -> PlotData:
    """Draw the ops of every record as a bar, in execution order, coloured by module type,
    with the :data:`LAYER_LABELS` heaviest layers named; write it to ``path`` (.png or .svg).

    An empty report gives a picture that says why it is empty.

    The file is written atomically (a temporary file, then a rename).

    Raises:
        ValueError: ``path`` does not end in .png or .svg.
        PlotDependencyError: matplotlib is not installed.
        OSError: the file cannot be written (its folder does not exist, ...).
    """
    return _draw(path, lambda: _layers_figure(report, title))


def plot_comparison(
    summaries: Sequence[ModelSummary], path: str | os.PathLike[str], *, title: str | None = None
) -> PlotData:
    """Draw published acc@1 against total ops (log scale), one named point per model, the
    Pareto front as a step line, and the models without an accuracy or a count listed
    beside the plot; write it to ``path`` (.png or .svg).

    The file is written atomically (a temporary file, then a rename).

    Raises:
        ValueError: ``path`` does not end in .png or .svg.
        PlotDependencyError: matplotlib is not installed.
        OSError: the file cannot be written (its folder does not exist, ...).
    """
    return _draw(path, lambda: _comparison_figure(summaries, title))


def layers_svg(report: Report, *, title: str | None = None) -> tuple[str, PlotData]:
    """:func:`plot_layers`'s picture as an ``<svg>`` element to inline in HTML."""
    with _style():
        figure, data = _layers_figure(report, title)
        return _inline_svg(figure), data


def comparison_svg(
    summaries: Sequence[ModelSummary], *, title: str | None = None
) -> tuple[str, PlotData]:
    """:func:`plot_comparison`'s picture as an ``<svg>`` element to inline in HTML."""
    with _style():
        figure, data = _comparison_figure(summaries, title)
        return _inline_svg(figure), data


# --- matplotlib --------------------------------------------------------------------------


def _matplotlib() -> Any:
    """The matplotlib package, or :class:`PlotDependencyError`."""
    try:
        import matplotlib
        import matplotlib.backends.backend_agg
        import matplotlib.figure
    except ImportError as error:
        raise PlotDependencyError(
            f"plots need matplotlib, which is not installed: {INSTALL_HINT}"
        ) from error
    return matplotlib


_RC = {"svg.hashsalt": "opscope", "svg.fonttype": "path", "font.size": 9}


def _style() -> Any:
    """matplotlib's settings while a picture is drawn and saved (restored afterwards): fixed
    SVG ids, text as paths, the font size. Raises :class:`PlotDependencyError` first."""
    return _matplotlib().rc_context(_RC)


def _new_figure(width: float, height: float) -> Any:
    mpl = _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = mpl.figure.Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _freeze_layout(figure: Any) -> Any:
    """Run the constrained layout once and keep it, so that labels placed afterwards (inside
    the axes) are measured where they will be drawn; returns the renderer."""
    figure.draw_without_rendering()
    figure.set_layout_engine("none")
    return figure.canvas.get_renderer()


def _draw(
    path: str | os.PathLike[str], make_figure: Callable[[], tuple[Any, PlotData]]
) -> PlotData:
    """Check the suffix, draw the figure in the house style and save it to ``path``."""
    fmt = plot_format(path)
    with _style():
        figure, data = make_figure()
        _save(figure, path, fmt)
    return data


def _save(figure: Any, path: str | os.PathLike[str], fmt: str) -> None:
    """Render the whole file in memory, then write it atomically: a failure leaves nothing."""
    buffer = io.BytesIO()
    # No date and a fixed id salt (_RC): the same report gives the same file.
    metadata = {"Date": None} if fmt == "svg" else {}
    figure.savefig(buffer, format=fmt, dpi=150 if fmt == "png" else 100, metadata=metadata)
    exports.write_atomic(path, buffer.getvalue())


def _inline_svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # no XML declaration nor DOCTYPE (which names a DTD URL)
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.DOTALL)


def _tick(value: float, _position: Any = None) -> str:
    """An axis tick as ``250 M``, ``1 G``, ``0`` (matplotlib's formatter signature)."""
    return format_tick(value)


def _log_ticks(axis: Any) -> None:
    """Label a log axis's decades, and its 2× and 5× ticks as well when it spans at most three
    decades (every tick under one decade), all as ``_tick`` text."""
    import math

    from matplotlib.ticker import Formatter

    class Minor(Formatter):
        def __call__(self, x: float, pos: Any = None) -> str:
            low, high = sorted(self.axis.get_view_interval())
            decades = math.log10(high / low) if low > 0 else math.inf
            mantissa = round(x / 10 ** math.floor(math.log10(x) + 1e-9), 6)
            if decades > 3 or (decades > 1 and mantissa not in (2, 5)):
                return ""
            return _tick(x)

    axis.set_major_formatter(_tick)
    axis.set_minor_formatter(Minor())


_DIRECTIONS = ((0, 1), (1, 1), (-1, 1), (1, 0), (-1, 0), (1, -1), (-1, -1), (0, -1))


def _boxes(axes: Any, extents: Sequence[tuple[float, float, float, float]]) -> list[Any]:
    """Display boxes of ``(x0, y0, x1, y1)`` data rectangles."""
    from matplotlib.transforms import Bbox

    if not extents:
        return []
    points = [corner for x0, y0, x1, y1 in extents for corner in ((x0, y0), (x1, y1))]
    corners = axes.transData.transform(points)
    return [Bbox([corners[2 * i], corners[2 * i + 1]]) for i in range(len(extents))]


def _overlap(a: Any, b: Any) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def _outside(box: Any, frame: Any) -> float:
    return box.width * box.height - _overlap(box, frame)


def _place_labels(
    axes: Any,
    renderer: Any,
    items: Sequence[tuple[str, float, float]],
    obstacles: list[Any],
    *,
    distances: Sequence[float] = (3, 12, 24, 40),
    fontsize: float = 8,
) -> None:
    """Write each ``(text, x, y)`` label next to its data point where it overlaps nothing:
    not the obstacles (display boxes), not the labels already placed, and inside the axes.
    Far positions get a thin leader line; when every position overlaps, the least bad one."""
    from matplotlib.text import Text

    frame = axes.get_window_extent(renderer)
    for text, x, y in items:
        best: tuple[float, Any] | None = None
        for distance in distances:
            for dx, dy in _DIRECTIONS:
                far = distance > distances[0]
                label = axes.annotate(
                    text,
                    (x, y),
                    xytext=(dx * distance, dy * distance),
                    textcoords="offset points",
                    ha={1: "left", -1: "right", 0: "center"}[dx],
                    va={1: "bottom", -1: "top", 0: "center"}[dy],
                    fontsize=fontsize,
                    annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "#888888", "lw": 0.6, "shrinkA": 0,
                                "shrinkB": 2} if far else None,
                )  # fmt: skip
                # The text alone: the leader line may cross bars and points.
                label.update_positions(renderer)
                box = Text.get_window_extent(label, renderer).padded(1.5)
                score = 4 * _outside(box, frame) + sum(_overlap(box, other) for other in obstacles)
                score += distance / 1000  # among equals, the nearest
                if best is None or score < best[0]:
                    if best is not None:
                        best[1][0].remove()
                    best = (score, (label, box))
                else:
                    label.remove()
                if score < 1:
                    break
            if best is not None and best[0] < 1:
                break
        assert best is not None
        obstacles.append(best[1][1])


# --- the per-layer picture ---------------------------------------------------------------


def _bar_group(record: LayerRecord) -> str:
    """What a bar's colour says: the module type, ``functional`` for the work a module did
    outside counted modules in the forward, or the phase (``backward``, ``step``,
    ``recompute``) for a training step's other work."""
    if record.phase != "forward":
        return record.phase
    return FUNCTIONAL if record.family == FUNCTIONAL else record.module_type


def _group_ops(records: Sequence[LayerRecord]) -> dict[str, int]:
    """Operations per bar group, the heaviest first."""
    ops: dict[str, int] = {}
    for record in records:
        ops[_bar_group(record)] = ops.get(_bar_group(record), 0) + record.ops
    return dict(sorted(ops.items(), key=lambda item: -item[1]))


def _layers_figure(report: Report, title: str | None) -> tuple[Any, PlotData]:
    records = report.records
    title = title or "Operations per layer"
    count = len(records)
    figure = _new_figure(min(16.0, max(8.0, 5.0 + 0.04 * count)), 4.8)
    axes = figure.add_subplot()
    axes.set_title(title, loc="left", fontsize=11)
    if not records:
        axes.set_axis_off()
        axes.text(0.5, 0.5, empty_message(report), ha="center", va="center",
                  wrap=True, transform=axes.transAxes)  # fmt: skip
        data = PlotData("layers", (), (), (), (), (), (), (), title)
        return figure, data

    total = report.total_ops
    group_ops = _group_ops(records)
    colors = {group: PALETTE[index % len(PALETTE)] for index, group in enumerate(group_ops)}
    labels = tuple(layer_labels(records))
    types = tuple(_bar_group(record) for record in records)
    x = tuple(range(count))
    y = tuple(record.ops for record in records)
    bar_colors = tuple(colors[kind] for kind in types)
    legend = tuple(
        (f"{group} ({format_share(ops, total)})", colors[group]) for group, ops in group_ops.items()
    )
    heaviest = sorted(range(count), key=lambda index: -y[index])[: min(LAYER_LABELS, count)]

    from matplotlib.legend import Legend
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    bars = axes.bar(x, [float(value) for value in y], width=0.8, color=bar_colors, linewidth=0)
    axes.set_title(f"total {format_count(total)} ops in {report.total_calls} calls",
                   loc="right", fontsize=9, color="#555555")  # fmt: skip
    axes.set_xlabel("layer, in execution order")
    axes.set_ylabel("operations")
    axes.yaxis.set_major_formatter(_tick)
    axes.set_xlim(-1, count)
    axes.set_ylim(0, max(max(y), 1) * 1.15)  # room above the bars for their numbers
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(axis="y", color="#e6e6e6", linewidth=0.6)
    axes.set_axisbelow(True)
    axes.legend(
        handles=[Patch(color=color, label=entry) for entry, color in legend],
        loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8,
        title="module type", alignment="left",
    )  # fmt: skip
    # The heaviest layers get a number above their bar, and a key names them: names are long
    # and the heaviest layers often stand side by side, numbers never hide each other.
    key = Legend(
        axes,
        [Line2D([], [], linestyle="", marker=f"${rank}$", color="black", markersize=6)
         for rank in range(1, len(heaviest) + 1)],
        [f"{labels[i]}  ({format_count(y[i])})" for i in heaviest],
        loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False, fontsize=8,
        title="heaviest layers", alignment="left", handlelength=1.0, handletextpad=0.6,
    )  # fmt: skip
    axes.add_artist(key)
    renderer = _freeze_layout(figure)
    obstacles = _boxes(axes, [(bar.get_x(), 0.0, bar.get_x() + bar.get_width(), bar.get_height())
                              for bar in bars if bar.get_height() > 0])  # fmt: skip
    numbers = [(str(rank), index, float(y[index])) for rank, index in enumerate(heaviest, 1)]
    _place_labels(axes, renderer, numbers, obstacles, distances=(2, 8, 16, 28), fontsize=8)
    data = PlotData(
        kind="layers",
        x=x,
        y=y,
        labels=labels,
        groups=types,
        colors=bar_colors,
        legend=legend,
        annotated=tuple(labels[index] for index in heaviest),
        title=title,
    )
    return figure, data


# --- the comparison picture --------------------------------------------------------------


def _listed(entries: list[str], limit: int = 15) -> list[str]:
    """At most ``limit`` entries, then how many more there are."""
    if len(entries) <= limit:
        return entries
    return [*entries[: limit - 1], f"  … and {len(entries) - limit + 1} more"]


def _wrapped(text: str, width: int = 44, lines: int = 3) -> str:
    """``text`` in at most ``lines`` lines of ``width``, indented under a list entry."""
    import textwrap

    return "\n".join(
        textwrap.wrap(text, width, initial_indent="  ", subsequent_indent="    ", max_lines=lines,
                      placeholder=" …")
    )  # fmt: skip


def _comparison_figure(
    summaries: Sequence[ModelSummary], title: str | None
) -> tuple[Any, PlotData]:
    at = at_common_shape(summary.input_shape for summary in summaries)
    title = title or f"Published acc@1 against operations{at}"
    failed = tuple(s.name for s in summaries if s.total_ops is None)
    missing = tuple(s.name for s in summaries if s.total_ops is not None and s.acc1 is None)
    plotted = [s for s in summaries if s.total_ops is not None and s.acc1 is not None]
    points = [(s.name, s.total_ops, s.acc1) for s in plotted]
    front = pareto_front(points)  # type: ignore[arg-type]
    on_front = set(front)
    groups = tuple("pareto" if s.name in on_front else "other" for s in plotted)
    colors = tuple(FRONT_COLOR if group == "pareto" else OTHER_COLOR for group in groups)
    x = tuple(int(s.total_ops) for s in plotted)  # type: ignore[arg-type]
    y = tuple(float(s.acc1) for s in plotted)  # type: ignore[arg-type]
    names = tuple(s.name for s in plotted)
    # As in the table's GFLOPS column: "@300" when the weights were evaluated at another size
    # than this run's; said once, on the axis, when that holds for every model alike.
    elsewhere = [published_elsewhere(s.published_size, s.input_shape) for s in plotted]
    sizes = {s.published_size for s in plotted}
    common = sizes.pop() if plotted and all(elsewhere) and len(sizes) == 1 else None
    texts = tuple(
        s.name + (f" @{s.published_size}" if other and common is None else "")
        for s, other in zip(plotted, elsewhere)
    )
    legend = (("Pareto front", FRONT_COLOR), ("other models", OTHER_COLOR)) if plotted else ()

    by_name = {s.name: s for s in summaries}
    side = []
    if missing:
        side.append("No published acc@1:")
        side += _listed(
            [f"  {name} ({format_count(by_name[name].total_ops or 0)} ops)" for name in missing]
        )
    if failed:
        side.append("\nFailed:" if side else "Failed:")
        side += _listed(
            [_wrapped(f"{name}: {by_name[name].error or 'no count'}") for name in failed]
        )

    # Room for every name: a larger picture, and smaller names, for many models.
    crowd = max(0, len(plotted) - 12)
    width = min(16.0, 8.0 + 0.08 * crowd) + (2.0 if side else 0.0)
    figure = _new_figure(width, min(10.0, 5.6 + 0.06 * crowd))
    axes = figure.add_subplot()
    axes.set_title(title, loc="left", fontsize=11)
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(color="#e6e6e6", linewidth=0.6)
    axes.set_axisbelow(True)
    if side:
        box = {"boxstyle": "round,pad=0.5", "facecolor": "#f7f7f7", "edgecolor": "#cccccc"}
        axes.text(1.02, 1.0, "\n".join(side), transform=axes.transAxes, va="top", ha="left",
                  fontsize=8, bbox=box)  # fmt: skip
        # the layout makes room for the text, not for its box's padding and edge
        figure.get_layout_engine().set(rect=(0, 0, 1 - 0.12 / width, 1))
    if not plotted:
        axes.set_axis_off()
        axes.text(0.5, 0.5, "No model has both a count and a published acc@1.",
                  ha="center", va="center", transform=axes.transAxes)  # fmt: skip
        _freeze_layout(figure)
        return figure, PlotData(
            "comparison", (), (), (), (), (), (), (), title, (), missing, failed
        )

    from matplotlib.lines import Line2D

    xs = [float(value) for value in x]
    front_points = sorted((ops, acc) for name, ops, acc in points if name in on_front)
    steps = axes.step([float(ops) for ops, _ in front_points], [acc for _, acc in front_points],
              where="post", color=FRONT_COLOR, linewidth=1.2, alpha=0.7, zorder=2)  # fmt: skip
    axes.scatter(xs, y, c=colors, s=28, zorder=3, edgecolors="white", linewidths=0.6)
    axes.set_xscale("log")
    # Margins in the log domain, wide enough for the labels at the ends.
    low, high = min(xs), max(xs)
    spread = max(high / low, 1.5)
    axes.set_xlim(low / spread**0.12, high * spread**0.12)
    bottom, top = min(y), max(y)
    pad = max(top - bottom, 2.0) * 0.12
    axes.set_ylim(bottom - pad, top + pad)
    _log_ticks(axes.xaxis)
    axes.tick_params(axis="x", which="minor", labelsize=7, labelcolor="#555555")
    axes.set_xlabel("total operations (log scale)")
    at_size = f", at {common}×{common}" if common else ""
    axes.set_ylabel(f"published ImageNet acc@1 (%){at_size}")
    axes.legend(
        handles=[Line2D([], [], marker="o", linestyle="-" if entry == "Pareto front" else "",
                        color=color, label=entry) for entry, color in legend],
        loc="lower right", fontsize=8, frameon=False,
    )  # fmt: skip
    renderer = _freeze_layout(figure)
    transform = axes.transData
    radius = renderer.points_to_pixels(3.0)
    markers = []
    from matplotlib.transforms import Bbox

    for px, py in transform.transform(list(zip(xs, y))):
        markers.append(Bbox.from_extents(px - radius, py - radius, px + radius, py + radius))
    legend_box = axes.get_legend().get_window_extent(renderer)
    # The step line's segments are level or upright, so their boxes are the segments.
    corners = steps[0].get_path().vertices  # drawn vertices, in data coordinates
    segments = _boxes(axes, [(min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))
                             for a, b in zip(corners[:-1], corners[1:])])  # fmt: skip
    markers += [box.padded(1.0) for box in segments]
    # The front first: its names get the best places.
    order = sorted(range(len(names)), key=lambda i: (groups[i] != "pareto", x[i]))
    _place_labels(
        axes,
        renderer,
        [(texts[i], xs[i], y[i]) for i in order],
        [*markers, legend_box],
        distances=(5, 12, 24, 40, 60),
        fontsize=8 if len(plotted) <= 30 else 7,
    )
    data = PlotData(
        kind="comparison",
        x=x,
        y=y,
        labels=names,
        groups=groups,
        colors=colors,
        legend=legend,
        annotated=tuple(texts[i] for i in order),
        title=title,
        pareto=front,
        missing=missing,
        failed=failed,
    )
    return figure, data
