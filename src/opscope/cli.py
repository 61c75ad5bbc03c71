"""The ``opscope`` command line: profile one model, compare many, list the zoo.

Arguments are parsed, checked and model names resolved before torch is loaded, so ``--help``,
``--version``, ``list`` and a mistyped argument or name answer at once; the commands that
build models run in :mod:`opscope.commands`. Every failure the user can cause ends in one
``opscope: error: ...`` line on stderr and a non-zero exit code, never a traceback: 2 for bad
arguments and unknown models, 1 for a model that fails or output that cannot be written, 130
for an interrupt.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import os
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from opscope import catalogue
from opscope.choices import COMPARE_SORTS, FORMATS, SORT_ORDERS, plot_format
from opscope.format import plural
from opscope.inputs import InputSpec, parse_input
from opscope.version import __version__

if TYPE_CHECKING:
    from rich.console import Console

# Characters that str.splitlines() breaks on: escaped in messages so that an error stays one line.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
MACHINE_FORMATS = ("json", "csv")
"""Formats that hold every record in execution order: ``--sort`` and ``--top`` shape tables."""


class CliError(Exception):
    """A failure to report as one line, with the exit code to return."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _is_ascii_number(text: str) -> bool:
    """Only the digits 0-9 (``str.isdigit`` also accepts ``'²'``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped (``'a\\nb'``), so that it prints as one line."""
    return "".join(
        char.encode("unicode_escape").decode() if char in _LINE_BREAKS else char for char in text
    )


def _input(text: str) -> InputSpec:
    try:
        return parse_input(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    if not _is_ascii_number(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    if not _is_ascii_number(text):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _seed(text: str) -> int:
    """A seed torch accepts: an integer from 0 to 2**64 - 1."""
    if not _is_ascii_number(text) or int(text) >= 2**64:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**64 - 1, got {text!r}")
    return int(text)


def _output_path(text: str) -> str:
    """A file name that can be passed to the OS: not empty, without a NUL character."""
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"invalid file name {text!r}")
    return text


def _plot_path(text: str) -> str:
    path = _output_path(text)
    try:
        plot_format(path)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, no usage dump: "opscope compare: error: ..."; argparse's own exit code 2.
        # Some messages quote arguments as given ("unrecognized arguments: ..."): escape breaks.
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


INPUT_HELP = (
    "an input of the forward pass, [NAME=]SIZES[:DTYPE]: 1x3x224x224, 4x64, 1x128:int64, "
    "attention_mask=1x128:int64; repeat for several (default: the model's own)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="opscope", description="Exact per-layer operation counts of PyTorch models."
    )
    parser.add_argument("--version", action="version", version=f"opscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add_common(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--input", type=_input, action="append", metavar="SPEC", help=INPUT_HELP
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
        command.add_argument(
            "--seed",
            type=_seed,
            default=0,
            help="random seed of the weights and inputs on a real device (0)",
        )
        command.add_argument(
            "--format",
            default="table",
            choices=FORMATS,
            help="what to write: table (default, for the terminal), json, csv, markdown, "
            "latex or html",
        )
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
            help="also check the count against FlopCounterMode (slower)",
        )

    profile = commands.add_parser("profile", help="the per-layer table of one model")
    profile.add_argument(
        "model",
        help="torchvision model name, timm:NAME, hf:MODEL_TYPE, or package.module:callable",
    )
    add_common(profile)
    profile.add_argument("--sort", choices=SORT_ORDERS, help="row order: order (default), ops")
    profile.add_argument(
        "--top", type=_positive_int, metavar="K", help="show the K first rows only"
    )
    profile.add_argument(
        "--train",
        action="store_true",
        help="count one training step: forward, a scalar loss, backward, optimizer step",
    )
    profile.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        help="with --train: the optimizer whose step is counted (sgd, with momentum)",
    )
    profile.add_argument(
        "--peak-flops",
        type=_positive_float,
        metavar="F",
        help="with --train --time: the device's peak FLOP/s, for the model FLOPs utilisation "
        "(default: known for some GPUs)",
    )
    profile.add_argument(
        "--depth",
        type=_non_negative_int,
        metavar="D",
        help="the per-module tree down to depth D instead of one row per call",
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
        metavar="N",
        help="with --time: timed runs, reported as median and spread (5)",
    )
    profile.add_argument(
        "--warmup",
        type=_non_negative_int,
        metavar="W",
        help="with --time: runs dropped before the timed ones; with --train: steps run "
        "before the counted one (1)",
    )

    comparison = commands.add_parser("compare", help="one row per model, side by side")
    comparison.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="names, globs ('resnet*', 'timm:resnet*'), hf:MODEL_TYPE or package.module:callable",
    )
    comparison.add_argument(
        "--all", action="store_true", help="every torchvision classification model"
    )
    add_common(comparison)
    comparison.add_argument(
        "--sort",
        default="ops",
        choices=COMPARE_SORTS,
        help="row order: ops (default, heaviest first), " + ", ".join(COMPARE_SORTS[1:]),
    )

    listing = commands.add_parser("list", help="the model names opscope knows")
    listing.add_argument(
        "pattern", nargs="?", help="part of a name ('resnet') or a glob ('efficientnet_b?')"
    )
    listing.add_argument("--task", choices=catalogue.LISTED_TASKS)
    listing.add_argument(
        "--source",
        default=catalogue.TORCHVISION,
        choices=catalogue.SOURCES,
        help="whose models: torchvision (default), timm (timm:NAME), hf (hf:MODEL_TYPE)",
    )
    return parser  # fmt: skip


def _check_writable(path: str | None) -> None:
    """Refuse, before any work, an output path that cannot be written: a missing folder, a
    folder, a path under a file. Standard output (``-``) and devices are fine."""
    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise CliError(f"cannot write {path!r}: Is a directory")
    if path.endswith(os.sep):  # a folder was meant: Path drops the slash and writes a file
        raise CliError(f"cannot write {path!r}: not a file name (it ends with {os.sep!r})")
    # the folder the file would really be in (a link's target's)
    folder = Path(os.path.realpath(target)).parent
    if not folder.is_dir():
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if existing.is_dir():  # the first folder on the way that is missing
            missing = existing / folder.relative_to(existing).parts[0]
            why = f"folder {_shown(missing)} does not exist"
        else:
            why = f"{_shown(existing)} is not a folder"
        raise CliError(f"cannot write {path!r}: {why}")
    if not os.access(folder, os.W_OK) and not target.exists():
        raise CliError(f"cannot write {path!r}: Permission denied")


def _shown(path: Path) -> str:
    """``path`` as a message quotes it: relative to the current folder when it is inside."""
    relative = os.path.relpath(path)
    return repr(str(path) if relative.startswith(os.pardir) else relative)


def check(args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot mean anything, and output paths that cannot be
    written, before any model is built."""
    if args.input and args.published_size:
        raise CliError("--input and --published-size cannot be combined: choose one size", 2)
    names = [spec.name for spec in args.input or () if spec.name]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # the last would be the one run, and the reports would say the first
        raise CliError(f"--input {repeated[0]}= is given more than once", 2)
    if args.plot and args.output not in (None, "-"):
        if os.path.abspath(args.plot) == os.path.abspath(args.output):
            raise CliError(f"--output and --plot name the same file, {args.plot!r}", 2)
    if args.command == "profile":
        if args.format in MACHINE_FORMATS and (args.sort or args.top):
            raise CliError(
                f"--sort and --top shape tables; --format {args.format} holds every record in "
                "execution order",
                2,
            )
        if args.depth is not None and (args.sort or args.top or args.bytes):
            raise CliError(
                "--depth shows the model's tree in its own order, with operations and "
                "parameters: no --sort, --top or --bytes",
                2,
            )
        if args.depth is not None and args.time and not (args.train or args.format == "json"):
            raise CliError(
                "--depth shows the model's tree, without times: --time goes with it only "
                "with --train (the step's time) or --format json (each layer's)",
                2,
            )
        if args.repeat is not None and not args.time:
            raise CliError("--repeat goes with --time", 2)
        if args.warmup is not None and not (args.time or args.train):
            raise CliError("--warmup goes with --time or --train", 2)
        if args.train and args.coverage:
            raise CliError("--coverage measures a forward pass: not with --train", 2)
        if args.optimizer and not args.train:
            raise CliError("--optimizer goes with --train", 2)
        if args.peak_flops is not None and not (args.train and args.time):
            raise CliError("--peak-flops goes with --train --time", 2)
        if args.time and args.coverage:
            raise CliError(
                "--time and --coverage cannot be combined: coverage slows every layer", 2
            )
        if args.time and args.device == "meta":
            raise CliError(
                "--time needs real execution: add --device cpu (or cuda); the meta "
                "device computes shapes only",
                2,
            )
    _check_writable(args.output)
    _check_writable(args.plot)


def resolve(args: argparse.Namespace) -> list[catalogue.ZooModel]:
    """The models the command names, from the catalogue (without loading torch)."""
    if args.command == "profile":
        models = catalogue.resolve([args.model])
        if len(models) != 1:
            raise CliError(
                f"{args.model!r} matches {len(models)} models; profile takes one "
                "(compare takes many)",
                2,
            )
        return models
    patterns = list(args.models)
    if args.all:
        patterns += [model.name for model in catalogue.list_models(task="classification")]
    if not patterns:
        raise CliError("compare needs at least one MODEL, or --all", 2)
    return catalogue.resolve(patterns)


def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    if args.pattern and catalogue.source_of(args.pattern) in catalogue.EXTRAS:
        # a name as opscope prints it, 'timm:resnet18': the prefix says the source
        prefix, args.pattern = catalogue.split_source(args.pattern)
        if args.source not in (catalogue.TORCHVISION, prefix):
            raise CliError(f"'{prefix}:' names {prefix}'s models, not {args.source}'s", 2)
        args.source = prefix
    models = catalogue.list_models(args.pattern, args.task, args.source)
    if not models and args.task:
        matching = f"matching {args.pattern!r} " if args.pattern else ""
        raise CliError(f"no {args.source} model {matching}has the task {args.task!r}", 2)
    if not models:
        raise CliError(catalogue.unknown_message(catalogue.qualified(args.source, args.pattern)), 2)
    console = stdout_console()
    table = Table("Model", "Task", box=None, show_edge=False, pad_edge=False)
    for model in models:
        table.add_row(model.name, model.task)
    with stdout_writes():
        console.print(
            f"{plural(len(models), 'model')} from {catalogue.library(args.source)}",
            highlight=False,
        )
        console.print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help, --version, or a usage error
        return int(exit_.code or 0)
    try:
        if args.command == "list":
            return _list(args)
        check(args)
        models = resolve(args)
        _import_sparing_dynamo("torchvision")  # torch: only once the arguments are known good
        from opscope import commands

        return commands.run(args, models)
    except catalogue.MissingExtra as error:  # the name may be right: install, and it works
        return _fail(str(error), 1)
    except catalogue.ZooError as error:
        return _fail(str(error), 2)
    except CliError as error:
        return _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # the reader of the output went away (| head): it wants no more
        discard_stdout()
        return 0
    except SystemExit as exit_:  # a user's factory or forward called sys.exit()
        return _fail(f"a model exited while running (SystemExit: {exit_.code})", 1)
    except Exception as error:  # noqa: BLE001 - last resort: a bug of ours is still one line
        lines = str(error).strip().splitlines()
        return _fail(f"internal error: {type(error).__name__}: {lines[0] if lines else ''}", 1)


def stdout_console() -> Console:
    """A rich console on stdout that raises ``BrokenPipeError`` when the reader goes away
    (rich's own raises ``SystemExit(1)``, which reads as a model's exit)."""
    from rich.console import Console

    console = Console()
    if console.width < 1:  # COLUMNS=0: a console that wide prints nothing at all
        console = Console(width=80)
    console.on_broken_pipe = _broken_pipe  # type: ignore[method-assign]
    return console


def _broken_pipe() -> None:
    raise BrokenPipeError


@contextmanager
def stdout_writes() -> Iterator[None]:
    """Writing to standard output: a failure (a full disk) is a one-line error; a reader
    that went away (``BrokenPipeError``) is left to the caller."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        raise CliError(f"cannot write to standard output: {error.strerror or error}") from None


def discard_stdout() -> None:
    """Send what is left on stdout, flushed at exit, nowhere (its reader has gone)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (output captured in-process)
        pass


_DYNAMO_UTILS = "torch._dynamo.utils"


def _import_sparing_dynamo(name: str) -> None:
    """Import module ``name`` (torchvision) without importing ``torch._dynamo`` for it.

    ``torchvision.ops`` imports one function of ``torch._dynamo.utils`` when it is imported
    (``is_compile_supported``, which only ``roi_align`` calls), and with it all of dynamo:
    about 1.6 s of every command on 2 cores, for models that never need it. While ``name``
    is imported, that module is a stand-in whose function imports dynamo's own at its first
    call. A module that imports anything else of it (another torchvision) is imported again,
    as it is, without the stand-in.
    """
    import torch  # noqa: F401 - first: the stand-in is only ever seen by ``name``

    # Another thread importing meanwhile would see the stand-in: only while there is none.
    if name in sys.modules or "torch._dynamo" in sys.modules or threading.active_count() > 1:
        importlib.import_module(name)
        return
    stand_in = types.ModuleType(_DYNAMO_UTILS)
    stand_in.is_compile_supported = _is_compile_supported  # type: ignore[attr-defined]
    sys.modules[_DYNAMO_UTILS] = stand_in
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - it wants more of dynamo (or fails anyway): as it is
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]
    else:
        return
    finally:
        if sys.modules.get(_DYNAMO_UTILS) is stand_in:
            del sys.modules[_DYNAMO_UTILS]
    importlib.import_module(name)


def _is_compile_supported(device_type: str) -> bool:
    """``torch._dynamo.utils.is_compile_supported``, dynamo imported at the first call.

    Raises:
        ImportError: called while the stand-in stands in (by the module being imported),
            which then is imported as it is.
    """
    dynamo_utils = importlib.import_module(_DYNAMO_UTILS)
    if dynamo_utils.is_compile_supported is _is_compile_supported:
        raise ImportError(f"{_DYNAMO_UTILS} itself is needed while importing")
    return bool(dynamo_utils.is_compile_supported(device_type))


def _fail(message: str, exit_code: int) -> int:
    print(f"opscope: error: {one_line(message)}", file=sys.stderr)
    return exit_code


def run() -> None:
    """Console-script entry point. Like ``python -m opscope``, it imports users' factories
    from the current folder too (a console script's own folder is the script's)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        code = main()
    except KeyboardInterrupt:  # before main could catch it
        code = _fail("interrupted", 130)
    try:
        sys.stdout.flush()  # now: at exit, a reader that went away would be a traceback
    except BrokenPipeError:
        discard_stdout()
    # The interpreter's last garbage collections need not walk torch's objects (0.6 s of
    # every command): frozen as it exits, not now (a host that catches SystemExit and goes
    # on, such as runpy, keeps collecting them).
    atexit.register(gc.freeze)
    sys.exit(code)
