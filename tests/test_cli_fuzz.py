"""The command line under a fuzzer: random argument lists never produce a traceback, only a
message and an exit code.

``main(argv)`` is called in-process with argument lists that hypothesis builds from the real
subcommands and options, real and bogus option names, valid and invalid values, model names of
every kind (torchvision names, globs, unknown names, ``package.module:callable`` forms) and
output paths inside a temporary folder. Whatever the list, ``main`` returns an int, nothing
prints a traceback, and a non-zero exit comes with exactly one ``opscope...`` line on stderr.

Runs stay cheap: before calling ``main``, :func:`_is_cheap` parses the list with the real parser
and skips the few that would run something expensive (``compare --all``, a real CPU forward of
a big input, a glob that matches many models) or write outside the temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from opscope import catalogue
from opscope import cli, zoo
from opscope.cli import build_parser, main

OUT = "{out}"  # stands for the fuzz run's temporary folder in generated paths

SUBCOMMANDS = ["profile", "compare", "list"]
BOGUS_SUBCOMMANDS = ["", "frobnicate", "PROFILE", "prof", "-", "--", "lis\nt", "🙂"]
OPTION_NAMES = ["--input", "--device", "--sort", "--top", "--format", "--output", "--coverage", "--all", "--task"]
STOPPING_OPTIONS = ["--help", "-h", "--version"]  # print and return 0: drawn rarely
BOGUS_OPTION_NAMES = ["--bogus", "--in", "--o", "--inputs", "---input", "-i", "--", "--=", "--top\n", "--ünï"]
# Option values: valid ones (for some subcommand or model) and invalid ones.
VALID = {
    "--input": ["1x3x32x32", "2x3x32x32", "1x3x8x8", "1x3x1x1", "1x3x8x8x8", "1x3x4x32x32",
                "99999999999x3x32x32", "99999999999x3x8x8", "9223372036854775807x1x1x1",
                "1X3X32X32", "1×3×32×32"],
    "--device": ["meta", "meta", "cpu", "cuda"],
    "--sort": ["order", "ops", "params", "name", "acc"],
    "--top": ["1", "5", "99999999999999999999"],
    "--seed": ["0", "7", "18446744073709551615"],
    "--format": ["table", "json", "csv", "markdown"],
    "--output": [f"{OUT}/out.json", f"{OUT}/out.csv", f"{OUT}/table.txt", f"{OUT}/ünï 🙂.md",
                 f"{OUT}/new\nline.txt", f"{OUT}/a_file", "relative.txt"],
    "--task": ["classification", "detection", "segmentation", "video", "optical_flow", "quantization"],
}  # fmt: skip
INVALID = {
    "--input": ["0x3x8x8", "x", "", "1x3x8x8x8x8", "-1x3x8x8", "1x3x224", "99999999999999999999x3x8x8",
                "²x3x8x8", "١x3x32x32", " 1x3x32x32", "1x3x32x32 ", "1.5x3x8x8", "1e3x3x8x8", "1xx3x8", "🙂"],
    "--device": ["CPU", "gpu", "cuda:0", "mps", ""],
    "--sort": ["size", "OPS", ""],
    "--top": ["0", "-1", "²", "x", "", "1.5", " 3"],
    "--seed": ["-1", "18446744073709551616", "99999999999999999999", "1.5", "x", ""],
    "--format": ["pdf", "JSON", ""],
    "--output": [f"{OUT}", f"{OUT}/", f"{OUT}/a_file/out.csv", f"{OUT}/missing/folder/out.json",
                 f"{OUT}/" + "n" * 300, f"{OUT}/nul\0.txt", ""],
    "--task": ["custom", "bogus", ""],
}  # fmt: skip
FLAGS = {"--coverage", "--all", *STOPPING_OPTIONS}
OWN_OPTIONS = {
    "profile": ["--input", "--device", "--sort", "--top", "--format", "--output", "--coverage", "--seed"],
    "compare": ["--input", "--device", "--sort", "--format", "--output", "--coverage", "--all", "--seed"],
    "list": ["--task"],
}  # fmt: skip
CHEAP_MODELS = {"squeezenet1_0", "squeezenet1_1", "resnet18"}
MODELS = [
    *sorted(CHEAP_MODELS),
    # globs
    "squeezenet*", "squeezenet1_?", "resnet1?", "zzz*", "*", "[", "[!a-z]*", "?",
    # unknown names
    "resnet19", "ResNet18", "squeezenet1_1 ", "resnet18\n", "", " ", "é", "🙂", "-", "x" * 300,
]  # fmt: skip
FACTORIES = [  # malformed, missing, not callable, not a module, failing, exiting, valid
    ":", "os:", ":net", ".relative:net", "a..b:c", "no_such_module_opscope:net", "os:no_such_attr",
    "os:path", "math:pi", "builtins:int", "builtins:dict", "collections:OrderedDict", "math:sqrt",
    "sys:exit", "torch.nn:Conv2d", "torch.nn:Identity", "torch.nn:ReLU", "os.path:join:x",
]  # fmt: skip
noise = st.text(max_size=12)  # any unicode, empty included
# Factory paths with a random attribute only on modules whose every callable is harmless.
random_factories = st.builds(
    lambda module, attribute: f"{module}:{attribute}",
    st.sampled_from(["math", "no_such_module_opscope", "", ".x"]),
    st.text(alphabet=st.characters(blacklist_characters=":"), max_size=8),
)
real_models = st.sampled_from(sorted(CHEAP_MODELS))
# Two in five a real model, so that many command lines get as far as running one.
model_names = st.one_of(
    real_models, real_models, st.sampled_from(MODELS), st.sampled_from(FACTORIES), random_factories,
    noise.filter(lambda s: ":" not in s),
)


def _any_value() -> st.SearchStrategy[str]:
    pools = [value for table in (VALID, INVALID) for values in table.values() for value in values]
    return st.one_of(st.sampled_from(pools), st.sampled_from(MODELS + FACTORIES), noise)


@st.composite
def options(draw: st.DrawFn, command: str) -> list[str]:
    """One option, as ``--name value``, ``--name=value`` or a bare flag: mostly one of the
    command's own with a value of its own (valid three times in four), now and then anything."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return [draw(st.sampled_from(STOPPING_OPTIONS))]
    own = OWN_OPTIONS.get(command, OPTION_NAMES)
    name = draw(st.sampled_from(BOGUS_OPTION_NAMES if kind == 1 else OPTION_NAMES if kind < 5 else own))
    if name in FLAGS and draw(st.integers(0, 4)):
        return [name]
    if name in VALID and draw(st.integers(0, 7)):
        value = draw(st.sampled_from(VALID[name] if draw(st.integers(0, 3)) else INVALID[name]))
    else:
        value = draw(_any_value())
    if draw(st.integers(0, 3)) == 0:
        return [f"{name}={value}"]
    return [name, value]


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A plausible command line (a subcommand, its models, some options), sometimes mangled."""
    real = st.sampled_from(["profile", "profile", "compare", "compare", "list"])
    command = draw(real if draw(st.integers(0, 9)) else st.sampled_from(BOGUS_SUBCOMMANDS))
    argv = [command]
    if command == "profile":
        argv += draw(st.lists(model_names, min_size=0 if draw(st.integers(0, 9)) == 0 else 1, max_size=1))
    elif command == "compare":
        argv += draw(st.lists(model_names, min_size=0 if draw(st.integers(0, 9)) == 0 else 1, max_size=3))
    elif command == "list":
        argv += draw(st.lists(st.one_of(st.sampled_from(MODELS + FACTORIES), noise), max_size=1))
    for _ in range(draw(st.integers(0, 4))):
        argv += draw(options(command))
    if draw(st.integers(0, 7)) == 0:  # mangle: drop a token, or insert noise anywhere
        position = draw(st.integers(0, len(argv)))
        if draw(st.booleans()) and position < len(argv):
            del argv[position]
        else:
            argv.insert(position, draw(st.one_of(noise, st.sampled_from(OPTION_NAMES + BOGUS_OPTION_NAMES))))
    if draw(st.integers(0, 19)) == 0:  # a global option first
        argv.insert(0, draw(st.sampled_from(["--version", "--help", "-h", "--bogus", "--device"])))
    return argv


token_soup = st.lists(
    st.one_of(
        st.sampled_from(SUBCOMMANDS + BOGUS_SUBCOMMANDS),
        st.sampled_from(OPTION_NAMES + STOPPING_OPTIONS + BOGUS_OPTION_NAMES),
        _any_value(),
        model_names,
    ),
    max_size=8,
)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder that generated paths point into; also the working directory meanwhile, so
    that a relative ``--output`` lands there too."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "a_file").write_text("")
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)


def _parse_quietly(argv: list[str]) -> object | None:
    """The parsed arguments, or None for a list that argparse stops at (usage, help, version)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return build_parser().parse_args(argv)
        except SystemExit:
            return None


def _is_cheap(argv: list[str], out_dir: Path) -> bool:
    """Whether ``main(argv)`` ends quickly and writes nowhere but ``out_dir``."""
    try:
        args = _parse_quietly(argv)
    except Exception:  # noqa: BLE001 - the parser failing is for main to show
        return True
    if args is None or args.command == "list":
        return True
    if args.output is not None:
        target = os.path.abspath(args.output)  # relative to out_dir, the working directory
        if target != str(out_dir) and not target.startswith(f"{out_dir}{os.sep}"):
            return False
    if args.device == "cuda" and not torch.cuda.is_available():
        return True  # refused before anything runs
    if args.command == "compare" and args.all:
        return False
    patterns = list(args.models) if args.command == "compare" else [args.model]
    try:
        models = catalogue.resolve(patterns)
    except catalogue.ZooError:
        return True
    if args.command == "profile" and len(models) != 1:
        return True  # "profile takes one"
    if len(models) > 3 or any(m.task != "custom" and m.name not in CHEAP_MODELS for m in models):
        return False
    if args.device != "meta":  # real forwards: small inputs only
        return args.input is not None and sum(math.prod(s.shape) for s in args.input) <= 2 * 3 * 64 * 64
    return True


def _check(argv: list[str], out_dir: Path) -> None:
    argv = [arg.replace(OUT, str(out_dir)) for arg in argv]
    assume(_is_cheap(argv, out_dir))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)  # SystemExit or any exception escaping fails the test here
    stdout, stderr = out.getvalue(), err.getvalue()
    # as ASCII: a lone surrogate from the noise broke hypothesis's statistics (INTERNALERROR)
    event(f"{ascii(argv[0]) if argv else '(nothing)'}: exit code {code}")  # see --hypothesis-show-statistics
    assert isinstance(code, int), (argv, code)
    assert "Traceback" not in stderr and "Traceback" not in stdout, (argv, stderr)
    if code == 0:
        assert stderr == "", (argv, stderr)
    else:
        assert code in (1, 2), (argv, code, stderr)
        lines = stderr.splitlines()
        assert len(lines) == 1 and stderr.endswith("\n"), (argv, stderr)
        assert lines[0].startswith("opscope") and ": error: " in lines[0], (argv, stderr)
        assert lines[0].strip() != "", (argv, stderr)
        assert stdout == "", (argv, stdout)  # nothing half-printed before the error


def _fuzz(max_examples: int) -> settings:
    """Few examples (each may run a model), no deadline (torch's first calls are slow)."""
    checks = [HealthCheck.too_slow, HealthCheck.filter_too_much]
    return settings(max_examples=max_examples, deadline=None, suppress_health_check=checks)


@_fuzz(max_examples=100)
@given(argv=command_lines())
def test_plausible_command_lines_never_trace_back(out_dir: Path, argv: list[str]) -> None:
    _check(argv, out_dir)


@_fuzz(max_examples=60)
@given(argv=token_soup)
def test_random_token_soups_never_trace_back(out_dir: Path, argv: list[str]) -> None:
    _check(argv, out_dir)


# What fuzzing found, kept as plain regression tests. Before the fixes in cli.py these were:
# an escaping SystemExit ('sys:exit'), a ValueError traceback (a NUL in --output), messages over
# several lines (a line break in an unrecognized argument), exit 1 "failed at input" for names
# that cannot be imported as written (':', '.relative:net'), "invalid parse_shape value" for
# '²' (str.isdigit accepts it, int refuses it), '١' accepted as a digit, a torch TypeError
# message for a size beyond int64, and "Device or resource busy" for an empty --output.
@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["profile", ":"], 2, "invalid model ':': expected package.module:callable"),
        (["profile", ".relative:net"], 2, "invalid model '.relative:net'"),
        (["profile", "a..b:c"], 2, "invalid model 'a..b:c'"),
        (["compare", ":", "squeezenet1_1"], 2, "invalid model ':'"),
        (["profile", "os:path"], 2, "'os:path' is not callable"),
        (["profile", "math:pi"], 2, "'math:pi' is not callable"),
        (["profile", "builtins:int"], 2, "'builtins:int' returned int, not a torch.nn.Module"),
        (["profile", "sys:exit", "--input", "1x3x8x8"], 1, "cannot build sys:exit: SystemExit"),
        (["compare", "sys:exit"], 1, "the model failed (sys:exit: cannot build it: SystemExit)"),
        (["profile", "squeezenet1_1", "--input", "²x3x8x8"], 2, "invalid input '²x3x8x8'"),
        (["profile", "squeezenet1_1", "--input", "١x3x32x32"], 2, "invalid input '١x3x32x32'"),
        (["profile", "squeezenet1_1", "--top", "²"], 2, "expected a positive integer, got '²'"),
        (["profile", "squeezenet1_1", "--input", "99999999999999999999x3x8x8"], 2, "is too large"),
        (["profile", "squeezenet1_1", "--output", ""], 2, "argument --output: invalid file name ''"),
        (["profile", "squeezenet1_1", "--output", "a\0b"], 2, "invalid file name 'a\\x00b'"),
        (["profile", "squeezenet1_1", "--seed", str(2**64), "--device", "cpu"], 2,
         "argument --seed: expected an integer from 0 to 2**64 - 1, got '18446744073709551616'"),
        (["list", "a", "b\nc"], 2, "unrecognized arguments: b\\nc"),
        (["list", "a", "b\u2028c"], 2, "unrecognized arguments: b\\u2028c"),
    ],
)
def test_what_the_fuzzer_found(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and err.startswith("opscope")


def test_a_directory_as_output_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["profile", "squeezenet1_1", "--input", "1x3x32x32", "--format", "json", "--output", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"opscope: error: cannot write {str(tmp_path)!r}: Is a directory\n"
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_huge_input_on_meta_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "squeezenet1_1", "--input", "99999999999x3x32x32", "--format", "json"]) == 0
    assert '"total_ops": ' in capsys.readouterr().out


def test_an_unexpected_exception_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object) -> int:
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(cli, "_list", broken)
    assert main(["list"]) == 1
    assert capsys.readouterr().err == "opscope: error: internal error: ValueError: boom\n"


def test_an_interrupt_returns_130(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    from opscope import commands

    monkeypatch.setattr(commands, "run", interrupted)
    assert main(["profile", "squeezenet1_1"]) == 130
    assert capsys.readouterr().err == "opscope: error: interrupted\n"


def test_help_and_version_return_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("opscope ")
    assert main(["profile", "--help"]) == 0 and "--input" in capsys.readouterr().out
