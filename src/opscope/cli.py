"""The ``opscope`` command line: profile one model, compare many, list the zoo.

Every failure the user can cause ends in one ``opscope: error: ...`` line on stderr and a
non-zero exit code, never a traceback: 2 for bad arguments and unknown models, 1 for a model
that fails or output that cannot be written.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console, ConsoleRenderable
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from opscope import documents, exports, html, plots, zoo
from opscope.compare import (
    COMPARE_SORTS,
    ModelSummary,
    compare,
    describe_failure,
    profile_model,
    sort_summaries,
    time_model,
)
from opscope.format import format_shape
from opscope.report import SORT_ORDERS, Report
from opscope.tables import Document, comparison_grid, report_document
from opscope.terminal import ComparisonTable, LayerTable
from opscope.version import __version__

FORMATS = ("table", "json", "csv", "markdown", "latex", "html")
TABLE_WIDTH_IN_FILES = 160  # a table written to a file gets the wide layout
MAX_NUMEL = 2**63 - 1  # torch sizes are int64: a larger input cannot even be described
# Characters that str.splitlines() breaks on: escaped in messages so that an error stays one line.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


class CliError(Exception):
    """A failure to report as one line, with the exit code to return."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _is_ascii_number(text: str) -> bool:
    """Only the digits 0-9 (``str.isdigit`` also accepts ``'²'``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _one_line(text: str) -> str:
    """``text`` with its line breaks escaped (``'a\\nb'``), so that it prints as one line."""
    return "".join(
        char.encode("unicode_escape").decode() if char in _LINE_BREAKS else char for char in text
    )


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x3x224x224`` as ``(1, 3, 224, 224)``: 4 or 5 positive sizes (N×C×[T×]H×W)."""
    parts = text.lower().replace("×", "x").split("x")
    if not 4 <= len(parts) <= 5 or not all(
        _is_ascii_number(part) and int(part) > 0 for part in parts
    ):
        raise argparse.ArgumentTypeError(
            f"invalid input shape {text!r}: expected N×C×H×W (or N×C×T×H×W for video) "
            "as positive integers joined by 'x', e.g. 1x3x224x224"
        )
    shape = tuple(int(part) for part in parts)
    if math.prod(shape) > MAX_NUMEL:
        raise argparse.ArgumentTypeError(
            f"input shape {text!r} is too large: more than 2**63 - 1 elements"
        )
    return shape


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, no usage dump: "opscope compare: error: ..."; argparse's own exit code 2.
        # Some messages quote arguments as given ("unrecognized arguments: ..."): escape breaks.
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="opscope", description="Exact per-layer operation counts of PyTorch models."
    )
    parser.add_argument("--version", action="version", version=f"opscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add_common(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--input",
            type=parse_shape,
            metavar="SHAPE",
            help="input shape, e.g. 1x3x224x224 (default: the task's)",
        )
        command.add_argument(
            "--published-size",
            action="store_true",
            help="run each model at the input size its published figures were measured at",
        )
        command.add_argument(
            "--device",
            default="meta",
            choices=("meta", "cpu", "cuda"),
            help="where to run: meta (shapes only, default), cpu or cuda",
        )
        command.add_argument("--format", default="table", choices=FORMATS)
        command.add_argument(
            "--output",
            type=_output_path,
            metavar="FILE",
            help="write to FILE instead of stdout ('-': stdout)",
        )
        command.add_argument(
            "--plot",
            metavar="FILE.png|svg",
            type=_plot_path,
            help="also draw the picture (needs: pip install 'opscope[plot]')",
        )
        command.add_argument(
            "--coverage",
            action="store_true",
            help="also measure which share of FlopCounterMode's FLOPs the "
            "counted modules hold (slower)",
        )

    profile = commands.add_parser("profile", help="the per-layer table of one model")
    profile.add_argument("model", help="torchvision model name, or package.module:callable")
    add_common(profile)
    profile.add_argument("--sort", default="order", choices=SORT_ORDERS)
    profile.add_argument(
        "--top", type=_positive_int, metavar="K", help="show the K first rows only"
    )
    profile.add_argument(
        "--bytes",
        action="store_true",
        help="add the bytes each call moved and its operations per byte",
    )
    profile.add_argument(
        "--time", action="store_true", help="time every layer for real (needs --device cpu or cuda)"
    )
    profile.add_argument(
        "--repeat",
        type=_positive_int,
        default=5,
        metavar="N",
        help="with --time: timed runs, reported as median and spread (5)",
    )
    profile.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=1,
        metavar="W",
        help="with --time: runs dropped before the timed ones (1)",
    )

    comparison = commands.add_parser("compare", help="one row per model, side by side")
    comparison.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="names, globs ('resnet*') or package.module:callable",
    )
    comparison.add_argument(
        "--all", action="store_true", help="every torchvision classification model"
    )
    add_common(comparison)
    comparison.add_argument("--sort", default="ops", choices=COMPARE_SORTS)

    listing = commands.add_parser("list", help="the model names opscope knows")
    listing.add_argument("pattern", nargs="?", help="a glob, e.g. 'efficientnet*'")
    listing.add_argument("--task", choices=sorted(set(zoo.DEFAULT_INPUTS) - {"custom"}))
    return parser  # fmt: skip


def _positive_int(text: str) -> int:
    if not _is_ascii_number(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _plot_path(text: str) -> str:
    path = _output_path(text)
    try:
        plots.plot_format(path)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return path


def _non_negative_int(text: str) -> int:
    if not _is_ascii_number(text):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _output_path(text: str) -> str:
    """A file name that can be passed to the OS: not empty, without a NUL character."""
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"invalid file name {text!r}")
    return text


def _check_input_options(args: argparse.Namespace) -> None:
    if args.input and args.published_size:
        raise CliError("--input and --published-size cannot be combined: choose one size", 2)


def _check_factory_names(patterns: Sequence[str]) -> None:
    """Refuse ``package.module:callable`` names that cannot be imported as written (``':'``,
    ``'.relative:f'``, ``'a..b:f'``, ``'os:'``) as the usage errors they are."""
    for pattern in patterns:
        if zoo.is_factory_path(pattern):
            module_path, _, attribute = pattern.partition(":")
            if not attribute or not all(module_path.split(".")):
                raise CliError(f"invalid model {pattern!r}: expected package.module:callable", 2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help, --version, or a usage error
        return int(exit_.code or 0)
    try:
        if args.command == "list":
            return _list(args)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise CliError("--device cuda: no CUDA device is available here", 1)
        return _profile(args) if args.command == "profile" else _compare(args)
    except zoo.ZooError as error:
        return _fail(str(error), 2)
    except plots.PlotDependencyError as error:
        return _fail(str(error), 1)
    except CliError as error:
        return _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except SystemExit as exit_:  # a user's factory or forward called sys.exit()
        return _fail(f"a model exited while running ({describe_failure(exit_, 'cpu')})", 1)
    except Exception as error:  # noqa: BLE001 - last resort: a bug of ours is still one line
        return _fail(f"internal error: {describe_failure(error, 'cpu')}", 1)


def _fail(message: str, exit_code: int) -> int:
    print(f"opscope: error: {_one_line(message)}", file=sys.stderr)
    return exit_code


def _emit(args: argparse.Namespace, content: str | ConsoleRenderable) -> None:
    """Print to stdout, or write to ``--output`` (atomically for a regular file; ``-`` is
    stdout). Text is written as it is; a rich renderable (the terminal table) is drawn for
    the terminal, or at :data:`TABLE_WIDTH_IN_FILES` columns for a file."""
    to_stdout = args.output in (None, "-")
    if not isinstance(content, str):
        if to_stdout:
            Console().print(content)
            return
        buffer = io.StringIO()
        Console(file=buffer, width=TABLE_WIDTH_IN_FILES, color_system=None).print(content)
        content = buffer.getvalue()
    if to_stdout:
        sys.stdout.write(content)
        return
    try:
        exports.write_atomic(args.output, content)
    except (OSError, ValueError) as error:  # ValueError: a name the file system cannot encode
        raise CliError(
            f"cannot write {args.output!r}: {getattr(error, 'strerror', None) or error}"
        ) from None


def _list(args: argparse.Namespace) -> int:
    models = zoo.list_models(args.pattern, args.task)
    if not models:
        raise CliError(f"no model matches {args.pattern!r}", 2)
    table = Table("Model", "Task", box=None, show_edge=False, pad_edge=False)
    for model in models:
        table.add_row(model.name, model.task)
    Console().print(table)
    return 0


def _profile(args: argparse.Namespace) -> int:
    _check_factory_names([args.model])
    models = zoo.resolve([args.model])
    if len(models) != 1:
        raise CliError(
            f"{args.model!r} matches {len(models)} models; profile takes one (compare takes many)",
            2,
        )
    (model,) = models
    _check_input_options(args)
    shape = model.published_input if args.published_size else args.input or model.default_input
    if args.time and args.coverage:
        raise CliError("--time and --coverage cannot be combined: coverage slows every layer", 2)
    if args.time and args.device == "meta":
        raise CliError(
            "--time needs real execution: add --device cpu (or cuda); the meta "
            "device computes shapes only",
            2,
        )
    try:
        if args.time:
            report = time_model(model, shape, args.device, repeat=args.repeat, warmup=args.warmup)
        else:
            report, _ = profile_model(model, shape, args.device, coverage=args.coverage)
    except zoo.ZooError:
        raise
    except (Exception, SystemExit) as failure:  # noqa: BLE001 - the user's model failing is a message
        raise CliError(
            f"{model.name} failed at input {format_shape(shape)}: "
            f"{describe_failure(failure, args.device)}"
        ) from None
    _emit(args, PROFILE_WRITERS[args.format](Profiled(model.name, shape, report), args))
    if args.plot:
        _write_plot(
            args.plot, plots.plot_layers, report, title=f"{model.name}: operations per layer"
        )
    return 0


@dataclass(frozen=True)
class Profiled:
    """What ``opscope profile`` measured: the model's name, its input and the report."""

    model: str
    shape: tuple[int, ...]
    report: Report


def _profile_json(profiled: Profiled, args: argparse.Namespace) -> str:
    data = {"model": profiled.model, "input_shape": list(profiled.shape), "device": args.device}
    return exports.to_json({**data, **profiled.report.to_dict()})


def _profile_csv(profiled: Profiled, args: argparse.Namespace) -> str:
    return exports.to_csv([record.to_dict() for record in profiled.report.records])


def _document(profiled: Profiled, args: argparse.Namespace) -> Document:
    return report_document(profiled.report, sort=args.sort, top=args.top, show_bytes=args.bytes)


def _profile_html(profiled: Profiled, args: argparse.Namespace) -> str:
    return html.report_html(
        profiled.report,
        title=f"{profiled.model} at {format_shape(profiled.shape)}",
        model=profiled.model,
        sort=args.sort,
        top=args.top,
        show_bytes=args.bytes,
    )


def _profile_table(profiled: Profiled, args: argparse.Namespace) -> LayerTable:
    return LayerTable(profiled.report, sort=args.sort, top=args.top, show_bytes=args.bytes)


PROFILE_WRITERS: dict[str, Callable[[Profiled, argparse.Namespace], str | ConsoleRenderable]] = {
    "table": _profile_table,
    "json": _profile_json,
    "csv": _profile_csv,
    "markdown": lambda profiled, args: documents.markdown_document(_document(profiled, args)),
    "latex": lambda profiled, args: documents.latex_document(_document(profiled, args)),
    "html": _profile_html,
}
"""How ``opscope profile`` writes each ``--format``."""


def _compare(args: argparse.Namespace) -> int:
    patterns = list(args.models)
    if args.all:
        patterns += [model.name for model in zoo.list_models(task="classification")]
    if not patterns:
        raise CliError("compare needs at least one MODEL, or --all", 2)
    _check_factory_names(patterns)
    _check_input_options(args)
    models = zoo.resolve(patterns)
    summaries = sort_summaries(_run_with_progress(models, args), args.sort)
    _emit(args, COMPARE_WRITERS[args.format](summaries, args))
    if args.plot:
        _write_plot(args.plot, plots.plot_comparison, summaries, title="Accuracy against cost")
    return 0


def _compare_json(summaries: list[ModelSummary], args: argparse.Namespace) -> str:
    data = {"input_shape": list(args.input) if args.input else None, "device": args.device}
    return exports.to_json({**data, "models": [summary.to_dict() for summary in summaries]})


COMPARE_WRITERS: dict[
    str, Callable[[list[ModelSummary], argparse.Namespace], str | ConsoleRenderable]
] = {
    "table": lambda summaries, args: ComparisonTable(summaries),
    "json": _compare_json,
    "csv": lambda summaries, args: exports.to_csv([summary.to_dict() for summary in summaries]),
    "markdown": lambda summaries, args: documents.markdown_table(comparison_grid(summaries)),
    "latex": lambda summaries, args: documents.latex_table(comparison_grid(summaries)),
    "html": lambda summaries, args: html.comparison_html(
        summaries, title=f"{len(summaries)} models"
    ),
}
"""How ``opscope compare`` writes each ``--format``."""


def _write_plot(path: str, draw: Callable[..., Any], data: Any, *, title: str) -> None:
    try:
        draw(data, path, title=title)
    except (OSError, ValueError) as error:
        raise CliError(
            f"cannot write {path!r}: {getattr(error, 'strerror', None) or error}"
        ) from None


def _run_with_progress(models: list[zoo.ZooModel], args: argparse.Namespace) -> list[ModelSummary]:
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


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
