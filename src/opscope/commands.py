"""The commands that build and run models: ``opscope profile`` and ``opscope compare``, each
with one ``{format: writer}`` table. :mod:`opscope.cli` parses and checks the arguments first.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from rich.console import Console, ConsoleRenderable
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from opscope import documents, exports, html, plots, zoo
from opscope.catalogue import ZooModel
from opscope.cli import CliError, discard_stdout, stdout_console, stdout_writes
from opscope.compare import (
    ModelError,
    ModelSummary,
    compare,
    profile_model,
    sort_summaries,
    time_model,
    train_model,
)
from opscope.format import format_count, format_shape, format_time, plural
from opscope.report import ModuleTotal, Report
from opscope.tables import Document, comparison_grid, report_document
from opscope.terminal import ComparisonTable, LayerTable

TABLE_WIDTH_IN_FILES = 160  # a table written to a file gets the wide layout
DATA_DEPENDENT_TASKS = ("detection",)
"""Tasks whose models' work depends on the input's values and the weights (proposals)."""


def run(args: argparse.Namespace, models: list[ZooModel]) -> int:
    """Run ``profile`` or ``compare`` on the resolved ``models``; returns the exit code."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available here", 1)
    torch.manual_seed(args.seed)  # the weights and inputs on a real device
    try:
        return _profile(args, models[0]) if args.command == "profile" else _compare(args, models)
    except plots.PlotDependencyError as error:
        raise CliError(str(error), 1) from None
    except ModelError as error:
        raise CliError(str(error), 1) from None


def _inputs(args: argparse.Namespace, model: ZooModel) -> Any:
    return zoo.published_inputs(model) if args.published_size else args.input


def _emit(args: argparse.Namespace, content: str | ConsoleRenderable) -> None:
    """Print to stdout, or write to ``--output`` (atomically for a regular file; ``-`` is
    stdout). Text is written as it is; a rich renderable (the terminal table) is drawn for
    the terminal, or at :data:`TABLE_WIDTH_IN_FILES` columns for a file."""
    to_stdout = args.output in (None, "-")
    if to_stdout:
        try:
            with stdout_writes():
                if isinstance(content, str):
                    print(content, end="", flush=True)
                else:
                    stdout_console().print(content)
        except BrokenPipeError:  # the reader went away (| head): the rest (a plot) still runs
            discard_stdout()
        return
    if not isinstance(content, str):
        buffer = io.StringIO()
        Console(file=buffer, width=TABLE_WIDTH_IN_FILES, color_system=None).print(content)
        content = buffer.getvalue()
    try:
        exports.write_atomic(args.output, content)
    except (OSError, ValueError) as error:  # ValueError: a name the file system cannot encode
        raise CliError(
            f"cannot write {args.output!r}: {getattr(error, 'strerror', None) or error}"
        ) from None


def _write_plot(path: str, draw: Callable[..., Any], data: Any, *, title: str) -> None:
    try:
        draw(data, path, title=title)
    except (OSError, ValueError) as error:
        raise CliError(
            f"cannot write {path!r}: {getattr(error, 'strerror', None) or error}"
        ) from None


# -- profile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profiled:
    """What ``opscope profile`` measured: the model, the inputs that ran and the report."""

    model: ZooModel
    inputs: str
    device: str
    report: Report
    measured: tuple[str, ...] = ()
    """Lines about what was measured on the device (a training step's time)."""
    input_shape: tuple[int, ...] = ()
    """The first input's shape, as it was given to the model."""

    @property
    def heading(self) -> str:
        """What was profiled, as saved reports say it: ``resnet18 at 1×3×224×224 on meta``,
        and the size the model's first layer really saw when the model resized its input."""
        text = f"{self.model.name} at {self.inputs} on {self.device}"
        first = next((r.input_shape for r in self.report.records if r.input_shape), None)
        # The first layer's height and width in none of the inputs (a multimodal model's
        # first layer may see its second input).
        if first and len(first) == 4 and format_shape(first[-2:]) not in self.inputs:
            text += f" (its first layer saw {format_shape(first)}: the model resized its input)"
        return text

    @property
    def notes(self) -> tuple[str, ...]:
        if self.model.task not in DATA_DEPENDENT_TASKS or self.device == "meta":
            return self.measured
        return (
            *self.measured,
            "The count depends on the input's values and the weights (how many proposals and "
            "detections the model keeps): the same --seed gives the same count.",
        )


def _profile(args: argparse.Namespace, model: ZooModel) -> int:
    inputs = _inputs(args, model)
    repeat, warmup = args.repeat or 5, 1 if args.warmup is None else args.warmup
    if args.train:
        run = train_model(
            model, inputs, args.device, optimizer=args.optimizer or "sgd",
            repeat=repeat if args.time else 0, warmup=warmup,
        )  # fmt: skip
    elif args.time:
        run = time_model(model, inputs, args.device, repeat=repeat, warmup=warmup)
    else:
        run = profile_model(model, inputs, args.device, coverage=args.coverage)
    report = run.report
    notes = () if run.seconds is None else (_step_note(report, run.seconds, repeat, _peak(args)),)
    profiled = Profiled(model, run.inputs, args.device, report, notes, run.input_shape)
    _emit(args, PROFILE_WRITERS[args.format](profiled, args))
    if args.plot:
        _write_plot(
            args.plot, plots.plot_layers, report, title=f"{model.name}: operations per layer"
        )
    return 0


KNOWN_PEAKS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}
"""Dense BF16/FP16 tensor-core peaks (FLOP/s), by a piece of the CUDA device's name."""


def _peak(args: argparse.Namespace) -> float | None:
    """The peak FLOP/s to compare a step with: ``--peak-flops``, else a known GPU's."""
    if args.peak_flops is not None or args.device != "cuda":
        return args.peak_flops
    name = torch.cuda.get_device_name()
    return next((peak for piece, peak in KNOWN_PEAKS.items() if piece in name), None)


def _step_note(report: Report, seconds: float, repeat: int, peak: float | None) -> str:
    """A training step's time, its achieved operations per second and, given the device's
    peak, the model FLOPs utilisation (2 × MACs per second over the peak)."""
    text = (
        f"One training step: {format_time(round(seconds * 1e9))} (median of {repeat}, "
        f"unprofiled), {format_count(round(report.total_ops / seconds))} ops/s"
    )
    if peak is None:
        return text + "; give --peak-flops for the model FLOPs utilisation."
    utilisation = 2 * report.total_macs / seconds / peak
    return (
        text + f"; model FLOPs utilisation {utilisation:.1%} of {format_count(round(peak))}FLOP/s."
    )


def _profile_json(profiled: Profiled, args: argparse.Namespace) -> str:
    data = {
        "model": profiled.model.name,
        "inputs": profiled.inputs,
        "input_shape": list(profiled.input_shape),
        "device": profiled.device,
        "notes": list(profiled.notes),
    }
    if args.depth is not None:
        data["tree"] = _nested(profiled.report.by_module(args.depth))
    return exports.to_json({**data, **profiled.report.to_dict()})


def _nested(nodes: list[ModuleTotal]) -> list[dict[str, Any]]:
    """The tree's nodes (in the model's order, each before its children) nested: each node's
    fields and its ``children``."""
    roots: list[dict[str, Any]] = []
    open_nodes: list[dict[str, Any]] = []  # the current path from a root
    for node in nodes:
        entry = {**asdict(node), "children": []}
        while open_nodes and open_nodes[-1]["depth"] >= node.depth:
            open_nodes.pop()
        (open_nodes[-1]["children"] if open_nodes else roots).append(entry)
        open_nodes.append(entry)
    return roots


def _profile_csv(profiled: Profiled, args: argparse.Namespace) -> str:
    context = {"model": profiled.model.name, "inputs": profiled.inputs, "device": profiled.device}
    coverage = profiled.report.coverage
    if coverage is not None:  # the whole run's: a column repeated on every row
        context["coverage"] = coverage.share
    if args.depth is not None:
        nodes = profiled.report.by_module(args.depth)
        return exports.to_csv([{**context, **asdict(node)} for node in nodes])
    return exports.to_csv([{**context, **record.to_dict()} for record in profiled.report.records])


def _layout(profiled: Profiled, args: argparse.Namespace) -> dict[str, Any]:
    """The options every view of the report gets alike."""
    return {
        "sort": args.sort or "order",
        "top": args.top,
        "show_bytes": args.bytes,
        "heading": profiled.heading,
        "extra_notes": profiled.notes,
        "depth": args.depth,
    }


def _document(profiled: Profiled, args: argparse.Namespace) -> Document:
    return report_document(profiled.report, **_layout(profiled, args))


def _profile_html(profiled: Profiled, args: argparse.Namespace) -> str:
    return html.report_html(
        profiled.report,
        title=f"{profiled.model.name} at {profiled.inputs}",
        model=profiled.model.name,
        **_layout(profiled, args),
    )


PROFILE_WRITERS: dict[str, Callable[[Profiled, argparse.Namespace], str | ConsoleRenderable]] = {
    "table": lambda profiled, args: LayerTable(profiled.report, **_layout(profiled, args)),
    "json": _profile_json,
    "csv": _profile_csv,
    "markdown": lambda profiled, args: documents.markdown_document(_document(profiled, args)),
    "latex": lambda profiled, args: documents.latex_document(_document(profiled, args)),
    "html": _profile_html,
}
"""How ``opscope profile`` writes each ``--format``."""


# -- compare ------------------------------------------------------------------------------


def _compare(args: argparse.Namespace, models: list[ZooModel]) -> int:
    summaries = sort_summaries(_run_with_progress(models, args), args.sort)
    if all(summary.error for summary in summaries):  # nothing to compare: say why, write nothing
        every = "the model" if len(summaries) == 1 else f"all {len(summaries)} models"
        reasons = [f"{summary.name}: {summary.error}" for summary in summaries[:3]]
        more = [f"and {len(summaries) - 3} more"] if len(summaries) > 3 else []
        raise CliError(f"{every} failed ({'; '.join([*reasons, *more])})", 1)
    _emit(args, COMPARE_WRITERS[args.format](summaries, args))
    if args.plot:
        _write_plot(args.plot, plots.plot_comparison, summaries, title="Accuracy against cost")
    return 0


def _compare_json(summaries: list[ModelSummary], args: argparse.Namespace) -> str:
    inputs = ", ".join(map(str, args.input)) if args.input else None
    data = {"inputs": inputs, "device": args.device}
    return exports.to_json({**data, "models": [summary.to_dict() for summary in summaries]})


def _compare_csv(summaries: list[ModelSummary], args: argparse.Namespace) -> str:
    """One row per model: the published figures a column each, and the device."""
    rows = []
    for summary in summaries:
        row = summary.to_dict()
        published = row.pop("published")
        row.update(
            {f"published_{key}": value for key, value in published.items()}, device=args.device
        )
        rows.append(row)
    return exports.to_csv(rows)


COMPARE_WRITERS: dict[
    str, Callable[[list[ModelSummary], argparse.Namespace], str | ConsoleRenderable]
] = {
    "table": lambda summaries, args: ComparisonTable(summaries),
    "json": _compare_json,
    "csv": _compare_csv,
    "markdown": lambda summaries, args: documents.markdown_table(comparison_grid(summaries)),
    "latex": lambda summaries, args: documents.latex_table(comparison_grid(summaries)),
    "html": lambda summaries, args: html.comparison_html(
        summaries, title=plural(len(summaries), "model")
    ),
}
"""How ``opscope compare`` writes each ``--format``."""


def _run_with_progress(models: list[ZooModel], args: argparse.Namespace) -> list[ModelSummary]:
    stderr = Console(stderr=True)
    # Only when a person watches: stderr and stdout both on a terminal, and a table to read.
    show = (
        len(models) > 1
        and stderr.is_terminal
        and Console().is_terminal
        and args.format not in ("json", "csv")
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=stderr, disable=not show, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("Profiling models", total=len(models))
        return compare(
            models, args.input, args.device, coverage=args.coverage,
            on_done=lambda summary: progress.update(task, advance=1, description=summary.name),
            published_size=args.published_size,
        )  # fmt: skip
