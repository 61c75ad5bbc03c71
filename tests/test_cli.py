"""The command line, through its real entry points."""

from __future__ import annotations

import csv
import gc
import io
import json
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from opscope import Profiler, cli, zoo
from opscope.cli import main
from opscope.compare import profile_model
from opscope.format import format_count


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_profile_json_equals_the_python_api(capsys) -> None:
    code, out, err = run(capsys, "profile", "mobilenet_v3_small", "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    report, *_ = profile_model(zoo.ZooModel("mobilenet_v3_small", "classification"))
    assert data["total_ops"] == report.total_ops
    assert data["layers"] == report.to_dict()["layers"]
    assert (data["model"], data["input_shape"], data["device"]) == ("mobilenet_v3_small", [1, 3, 224, 224], "meta")


def test_profile_csv_parses_with_exact_integers(capsys) -> None:
    code, out, _ = run(capsys, "profile", "resnet18", "--format", "csv", "--input", "2x3x64x64")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    report, *_ = profile_model(zoo.ZooModel("resnet18", "classification"), (2, 3, 64, 64))
    assert [int(row["ops"]) for row in rows] == [r.ops for r in report.records]
    assert rows[0]["input_shape"] == "2x3x64x64"
    assert rows[0]["kernel_size"] == "7x7"


def test_profile_markdown_parses(capsys) -> None:
    code, out, _ = run(capsys, "profile", "resnet18", "--format", "markdown", "--sort", "ops", "--top", "5")
    assert code == 0
    heading, layers, by_type = out.strip().split("\n\n")[:3]
    assert heading == "resnet18 at 1×3×224×224 on meta"  # a saved report says what it profiled
    lines = layers.splitlines()
    widths = {line.count(" | ") for line in lines}
    assert len(widths) == 1 and all(line.startswith("| ") and line.endswith(" |") for line in lines)
    report, *_ = profile_model(zoo.ZooModel("resnet18", "classification"))
    assert len(lines) == 2 + 5 + 2  # header, rule, 5 rows, "… N more", total
    assert f"… {len(report.records) - 5} more rows" in lines[-2]
    assert f"**{format_count(report.total_ops)}**" in lines[-1]
    assert by_type.splitlines()[0].startswith("**By type**")


def test_profile_table_shows_the_total(capsys) -> None:
    code, out, _ = run(capsys, "profile", "resnet18")
    report, *_ = profile_model(zoo.ZooModel("resnet18", "classification"))
    assert code == 0
    assert f"Total ({len(report.records)} calls)" in out and format_count(report.total_ops) in out


def test_compare_json_csv_markdown(capsys) -> None:
    code, out, err = run(capsys, "compare", "resnet1?", "squeezenet1_1", "--format", "json", "--sort", "name")
    assert (code, err) == (0, "")  # no progress bar when output is json
    names = [m["name"] for m in json.loads(out)["models"]]
    assert names == sorted(["resnet18", "squeezenet1_1"])
    resnet = json.loads(out)["models"][0]
    report = profile_model(zoo.ZooModel("resnet18", "classification"))[0]
    assert (resnet["conv_ops"], resnet["total_ops"]) == (report.ops_of("Conv2d"), report.total_ops)

    code, out, _ = run(capsys, "compare", "resnet18", "squeezenet1_1", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["name"] for row in rows] == ["resnet18", "squeezenet1_1"]  # by ops
    assert int(rows[0]["conv_ops"]) > int(rows[1]["conv_ops"])

    code, out, _ = run(capsys, "compare", "resnet18", "squeezenet1_1", "--format", "markdown")
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert code == 0 and len(table) == 2 + 2  # header, rule, two models
    assert table[2].split(" | ")[:4] == ["| resnet18", "11.7 M", "20", "3.62 G"]


def test_compare_reports_every_model_when_one_fails(capsys) -> None:
    code, out, _ = run(capsys, "compare", "alexnet", "resnet18", "--input", "1x3x16x16", "--format", "json")
    assert code == 0
    rows = {m["name"]: m for m in json.loads(out)["models"]}
    assert "too small" in rows["alexnet"]["error"]
    assert rows["resnet18"]["conv_ops"] > 0


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["profile", "resnet19"], 2, "unknown model 'resnet19'; did you mean resnet18"),
        (["compare", "resnet18", "nope*"], 2, "no model matches 'nope*'"),
        (["profile", "resnet*"], 2, "profile takes one"),
        (["profile", "resnet18", "--input", "1x3x224"], 1, "resnet18 failed at input 1×3×224: "),
        (["profile", "resnet18", "--input", "0x3x224x224"], 2, "expected [NAME=]SIZES[:DTYPE]"),
        (["profile", "resnet18", "--input", "abc"], 2, "expected [NAME=]SIZES[:DTYPE]"),
        (["profile", "resnet18", "--input", "1x3:complex"], 2, "dtype one of"),
        (["profile", "resnet18", "--input", "1-x=4x4"], 2, "expected [NAME=]SIZES[:DTYPE]"),
        (["profile", "resnet18", "--repeat", "3"], 2, "--repeat goes with --time"),
        (["profile", "resnet18", "--format", "json", "--top", "3"], 2, "--sort and --top shape tables"),
        (["profile", "RESNET18"], 2, "unknown model 'RESNET18'; did you mean resnet18?"),
        (["profile", "vit"], 2, "did you mean vit_b_16, vit_b_32"),
        (["profile", "resnet18", "--top", "0"], 2, "expected a positive integer"),
        (["profile", "resnet18", "--format", "pdf"], 2, "invalid choice: 'pdf'"),
        (["profile", "alexnet", "--input", "1x3x16x16"], 1, "alexnet failed at input 1×3×16×16: RuntimeError"),
        (["profile", "ssdlite320_mobilenet_v3_large"], 1, "torch.nonzero() needs tensor values, which the meta device has not: try --device cpu"),
        (["compare"], 2, "needs at least one MODEL"),
        (["list", "zzz*"], 2, "no model matches"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(capsys, argv: list[str], code: int, message: str) -> None:
    got_code, out, err = run(capsys, *argv)
    assert got_code == code
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_a_device(capsys) -> None:
    code, _, err = run(capsys, "profile", "resnet18", "--device", "cuda")
    assert code == 1 and "no CUDA device" in err


def test_output_is_written_atomically_or_not_at_all(capsys, tmp_path: Path) -> None:
    target = tmp_path / "resnet.json"
    code, out, _ = run(capsys, "profile", "resnet18", "--format", "json", "--output", str(target))
    assert (code, out) == (0, "")
    assert json.loads(target.read_text())["total_ops"] == profile_model(zoo.ZooModel("resnet18", "classification"))[0].total_ops
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left

    missing = tmp_path / "no" / "such" / "folder.json"
    code, _, err = run(capsys, "profile", "resnet18", "--format", "json", "--output", str(missing))
    assert code == 1 and "does not exist" in err and not missing.parent.exists()

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = run(capsys, "compare", "resnet18", "--output", str(blocker / "out.csv"))
    assert code == 1 and "cannot write" in err

    table = tmp_path / "table.txt"
    assert run(capsys, "profile", "resnet18", "--output", str(table))[0] == 0
    assert "Total (" in table.read_text() and "Stride" in table.read_text()


def test_meta_equals_cpu_through_the_cli(capsys) -> None:
    outputs = []
    for device in ("meta", "cpu"):
        code, out, _ = run(capsys, "profile", "squeezenet1_1", "--format", "json", "--device", device)
        assert code == 0
        data = json.loads(out)
        outputs.append((data["total_ops"], data["layers"]))
    assert outputs[0] == outputs[1]


def test_list_takes_names_as_it_prints_them(capsys) -> None:
    pytest.importorskip("timm")
    code, out, _ = run(capsys, "list", "timm:resnet18*")  # said: no model matches
    assert code == 0 and out.split()[-4:] == ["timm:resnet18", "classification", "timm:resnet18d", "classification"]
    code, out, _ = run(capsys, "list", "timm:resnet18")  # said: did you mean timm:resnet18?
    assert code == 0 and "timm:resnet18 " in out
    code, _, err = run(capsys, "list", "--source", "hf", "timm:resnet18")  # said: hf:timm:...
    assert (code, err) == (2, "opscope: error: 'timm:' names timm's models, not hf's\n")


def test_columns_zero_prints_at_80_columns(capsys, monkeypatch) -> None:
    """COLUMNS=0 made every command print nothing, and exit 0; the API's print too."""
    monkeypatch.setenv("COLUMNS", "0")
    code, out, _ = run(capsys, "list", "efficientnet_b?")
    assert code == 0 and "efficientnet_b7" in out
    code, out, _ = run(capsys, "profile", "resnet18")
    assert code == 0 and "conv1" in out and max(map(len, out.splitlines())) <= 80
    model = torch.nn.Linear(2, 2)
    p = Profiler(model)
    p.print()  # before any block: a message
    assert "Nothing profiled yet" in capsys.readouterr().out
    with p:
        model(torch.randn(1, 2))
    p.print()
    assert "Linear" in capsys.readouterr().out


def test_list(capsys) -> None:
    code, out, _ = run(capsys, "list", "efficientnet_b?")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == f"8 models from torchvision {version('torchvision')}"  # the default source
    assert [line.split() for line in lines[2:]] == [
        [f"efficientnet_b{i}", "classification"] for i in range(8)
    ]
    code, out, _ = run(capsys, "list", "--task", "video")
    assert "r3d_18" in out and "resnet18" not in out
    code, _, err = run(capsys, "list", "resnet", "--task", "video")
    assert (code, err) == (2, "opscope: error: no torchvision model matching 'resnet' has the task 'video'\n")
    code, _, err = run(capsys, "list", "--source", "keras")
    assert code == 2 and "invalid choice: 'keras'" in err


def test_user_factory(capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "zoo_of_mine.py").write_text(
        "import torch\ndef net():\n    return torch.nn.Conv2d(3, 2, 1, bias=False)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run(capsys, "profile", "zoo_of_mine:net", "--input", "1x3x4x4", "--format", "json")
    assert code == 0 and json.loads(out)["total_ops"] == 2 * 16 * (2 * 3 - 1)
    code, _, err = run(capsys, "profile", "zoo_of_mine:nope")
    assert code == 2 and "has no attribute 'nope'" in err


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_input_runs_the_model_in_half_precision(capsys, dtype: str) -> None:
    # float32 weights would fail on a real device ("Input type and weight type should be the
    # same"): the model is cast to its input's precision, on meta as on the CPU
    argv = ["profile", "resnet18", "--input", f"1x3x32x32:{dtype}", "--format", "json"]
    reports = []
    for device in ("meta", "cpu"):
        code, out, err = run(capsys, *argv, "--device", device)
        assert code == 0, err
        reports.append(json.loads(out))
    on_meta, on_cpu = reports
    assert on_meta["total_ops"] == on_cpu["total_ops"]
    assert on_meta["layers"] == on_cpu["layers"]
    conv1 = on_cpu["layers"][0]
    assert (conv1["input_bytes"], conv1["param_bytes"]) == (2 * 3 * 32 * 32, 2 * 64 * 3 * 7 * 7)


def test_the_coverage_is_in_the_csv_too(capsys) -> None:
    code, out, _ = run(capsys, "profile", "resnet18", "--coverage", "--format", "json")
    share = json.loads(out)["coverage"]["share"]
    for depth in ([], ["--depth", "1"]):
        code, out, _ = run(capsys, "profile", "resnet18", "--coverage", "--format", "csv", *depth)
        rows = list(csv.DictReader(io.StringIO(out)))
        assert code == 0 and rows and {row["coverage"] for row in rows} == {str(share)}
    code, out, _ = run(capsys, "profile", "resnet18", "--format", "csv")
    assert "coverage" not in out.splitlines()[0].split(",")


def test_output_and_plot_of_one_file_are_refused(capsys, tmp_path: Path) -> None:
    same = tmp_path / "report.svg"
    for command in ("profile", "compare"):
        code, _, err = run(capsys, command, "resnet18", "--output", str(same), "--plot", str(tmp_path / "." / "report.svg"))
        assert code == 2 and "--output and --plot name the same file" in err
    assert not same.exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [["profile", "resnet18"], ["profile", "resnet18", "--format", "json"], ["list"]])
def test_a_full_disk_on_stdout_is_one_line(argv: list[str]) -> None:
    script = Path(sys.executable).parent / "opscope"
    with open("/dev/full", "w") as full:
        done = subprocess.run([str(script), *argv], stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "opscope: error: cannot write to standard output: No space left on device\n"


def test_a_factorys_own_inputs_stand_with_published_size_and_csv_rows_are_flat(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    # a factory's model has no published size: it runs on its own example, as without the
    # option, and its row says the shape that ran
    (tmp_path / "pairs_of_mine.py").write_text(
        "import torch\ndef pair():\n    return torch.nn.Linear(8, 4), torch.randn(2, 8)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run(capsys, "profile", "pairs_of_mine:pair", "--published-size", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["total_ops"] == 2 * 4 * (8 + 7 + 1)
    code, out, err = run(capsys, "compare", "resnet18", "pairs_of_mine:pair", "--published-size", "--format", "csv")
    assert code == 0, err
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(out))}
    mine, resnet = rows["pairs_of_mine:pair"], rows["resnet18"]
    assert (mine["input_shape"], mine["inputs"], mine["total_ops"]) == ("2x8", "2×8", str(2 * 4 * 16))
    assert (mine["published_metric"], mine["published_gflops"]) == ("", "")
    published = zoo.published_metrics(zoo.ZooModel("resnet18", "classification"))
    assert (resnet["published_metric"], resnet["published_gflops"]) == ("acc@1", str(published.gflops))
    assert float(resnet["published_value"]) == published.acc1
    assert {row["device"] for row in rows.values()} == {"meta"}


@pytest.mark.parametrize("entry", [[sys.executable, "-m", "opscope"], [str(Path(sys.executable).parent / "opscope")]])
def test_real_entry_points(entry: list[str]) -> None:
    ok = subprocess.run([*entry, "compare", "resnet18", "--format", "json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["models"][0]["conv_ops"] == 3_624_638_976
    assert ok.stderr == ""  # not a terminal: no progress bar, and no warnings
    bad = subprocess.run([*entry, "profile", "resnet19"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "opscope: error: unknown model 'resnet19'; did you mean resnet18, resnet152, resnet101?"


def test_plots_and_html_from_the_command_line(capsys, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    chart, page = tmp_path / "compare.svg", tmp_path / "compare.html"
    code, _, err = run(
        capsys, "compare", "resnet18", "squeezenet1_1", "--plot", str(chart),
        "--format", "html", "--output", str(page),
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert chart.read_text().lstrip().startswith(("<?xml", "<svg"))
    text = page.read_text()
    assert "resnet18" in text and "squeezenet1_1" in text and "<svg" in text
    layers = tmp_path / "layers.png"
    assert run(capsys, "profile", "resnet18", "--plot", str(layers))[0] == 0
    assert layers.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    code, _, err = run(capsys, "profile", "resnet18", "--plot", str(tmp_path / "x.pdf"))
    assert code == 2 and "must end in .png or .svg" in err

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    code, _, err = run(capsys, "profile", "resnet18", "--plot", str(tmp_path / "y.png"))
    assert code == 1 and "pip install 'opscope[plot]'" in err
    assert not (tmp_path / "y.png").exists()


def test_output_dash_is_stdout_and_a_symlink_stays_a_link(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "profile", "resnet18", "--format", "json", "--output", "-")
    assert code == 0 and json.loads(out)["model"] == "resnet18"
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("{}")
    link.symlink_to(real)
    code, out, _ = run(capsys, "profile", "resnet18", "--format", "json", "--output", str(link))
    assert (code, out) == (0, "")
    assert link.is_symlink() and json.loads(real.read_text())["model"] == "resnet18"


def test_the_console_script_imports_factories_from_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / "mymodels.py").write_text(
        "import torch\ndef tiny():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))\n"
    )
    script = Path(sys.executable).parent / "opscope"
    done = subprocess.run(
        [str(script), "profile", "mymodels:tiny", "--input", "1x3x8x8", "--format", "json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_ops"] == 4 * 36 * (2 * 27)


@pytest.mark.parametrize("after", [0.3, 4.0])
def test_an_interrupt_ends_promptly_in_one_line_and_leaves_no_worker(after: float) -> None:
    script = Path(sys.executable).parent / "opscope"
    # started as from a terminal, where Ctrl-C is not ignored (a shell's background job, as
    # `make test &` runs this one, ignores it, and so would the command line it starts)
    process = subprocess.Popen(
        [str(script), "compare", "--all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(after)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130, err
    assert err == "opscope: error: interrupted\n" and out == ""
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # no worker is left in the group


def test_detection_counts_are_reproducible_and_say_what_ran(capsys) -> None:
    argv = ["profile", "ssdlite320_mobilenet_v3_large", "--device", "cpu", "--format", "markdown"]
    first = run(capsys, *argv)
    second = run(capsys, *argv)
    assert first[0] == 0 and first[1] == second[1]  # the same seed, the same count
    heading = first[1].splitlines()[0]
    assert heading.startswith("ssdlite320_mobilenet_v3_large at 1×3×224×224 on cpu")
    assert "its first layer saw 1×3×320×320: the model resized its input" in heading
    assert "the same --seed gives the same count" in first[1]
    code, out, _ = run(capsys, *argv[:-1], "json")  # not the first record's (a list of images)
    assert code == 0 and json.loads(out)["input_shape"] == [1, 3, 224, 224]


def test_output_paths_that_cannot_be_files_say_why(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.json").touch()
    (tmp_path / "link").symlink_to(tmp_path / "gone" / "x.json")
    for path, why in (
        (f"new{os.sep}", "not a file name (it ends with '/')"),  # wrote a file 'new'
        ("file.json/x.json", "'file.json' is not a folder"),  # said: folder does not exist
        ("file.json/a/x.json", "'file.json' is not a folder"),  # said: 'file.json/a' missing
        ("link", "folder 'gone' does not exist"),  # named the folder of the link, '.'
        (f"{tmp_path}/../{tmp_path.name}-x/a.json", f"folder '{tmp_path}-x' does not exist"),
    ):
        code, out, err = run(capsys, "profile", "resnet18", "--output", path)
        assert (code, out) == (1, "") and why in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json", "link"]


def test_a_keyword_input_given_twice_is_refused(capsys) -> None:
    argv = ["profile", "resnet18", "--input", "x=1x3x224x224", "--input", "x=1x3x64x64"]
    assert run(capsys, *argv) == (2, "", "opscope: error: --input x= is given more than once\n")


def test_saved_csv_says_what_it_profiled(capsys) -> None:
    code, out, _ = run(capsys, "profile", "resnet18", "--format", "csv", "--input", "1x3x32x32")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {(r["model"], r["inputs"], r["device"]) for r in rows} == {
        ("resnet18", "1×3×32×32", "meta")
    }


def test_output_paths_are_checked_before_any_work(capsys, tmp_path: Path) -> None:
    for option, path in (("--plot", tmp_path / "missing" / "p.png"), ("--output", tmp_path)):
        code, out, err = run(capsys, "profile", "resnet18", option, str(path))
        assert code == 1 and out == "" and "cannot write" in err
    assert list(tmp_path.iterdir()) == []


def test_compare_fails_when_every_model_fails(capsys) -> None:
    code, out, err = run(capsys, "compare", "alexnet", "vgg11", "--input", "1x3x16x16")
    assert code == 1 and out == ""
    assert err.startswith("opscope: error: all 2 models failed (alexnet: ")
    assert "; vgg11: " in err and len(err.splitlines()) == 1  # each one's reason


def test_the_console_script_spares_the_interpreters_last_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At exit the interpreter collects every object torch created (0.6 s a command): the
    # console script has them frozen then, and only then (a host that catches SystemExit,
    # such as runpy, goes on collecting).
    at_exit: list[object] = []
    monkeypatch.setattr(cli, "main", lambda: 3)
    monkeypatch.setattr(cli.atexit, "register", at_exit.append)
    with pytest.raises(SystemExit) as ended:
        cli.run()
    assert ended.value.code == 3
    assert at_exit == [gc.freeze]
    assert gc.get_freeze_count() == 0


def _fresh_python(code: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_commands_import_torchvision_without_dynamo_until_it_is_needed() -> None:
    # torchvision.ops imports one function of torch._dynamo.utils, and with it all of dynamo
    # (1.6 s a command); the CLI gives it a stand-in that imports dynamo's own when called.
    out = _fresh_python(
        "import sys\n"
        "from opscope.cli import _import_sparing_dynamo\n"
        "_import_sparing_dynamo('torchvision')\n"
        "import torchvision\n"
        "print('torch._dynamo' in sys.modules, 'torch._dynamo.utils' in sys.modules)\n"
        "stand_in = sys.modules['torchvision.ops.roi_align'].is_compile_supported\n"
        "answers = [stand_in(device) for device in ('cpu', 'meta')]\n"
        "from torch._dynamo.utils import is_compile_supported\n"
        "print(answers == [is_compile_supported(device) for device in ('cpu', 'meta')])\n"
    )
    assert out.split() == ["False", "False", "True"]


def test_a_module_that_calls_the_function_while_it_is_imported_is_imported_as_it_is(
    tmp_path: Path,
) -> None:
    (tmp_path / "calls_it.py").write_text(
        "from torch._dynamo.utils import is_compile_supported\n"
        "SUPPORTED = is_compile_supported('cpu')\n"
    )
    out = _fresh_python(
        "from opscope.cli import _import_sparing_dynamo\n"
        "_import_sparing_dynamo('calls_it')\n"
        "import torch._dynamo.utils as real, calls_it\n"
        "print(calls_it.is_compile_supported is real.is_compile_supported,\n"
        "      calls_it.SUPPORTED == real.is_compile_supported('cpu'))\n",
        cwd=tmp_path,
    )
    assert out.split() == ["True", "True"]


def test_with_other_threads_running_torchvision_is_imported_as_it_is() -> None:
    # another thread importing meanwhile would see the stand-in
    out = _fresh_python(
        "import sys, threading\n"
        "done = threading.Event()\n"
        "threading.Thread(target=done.wait).start()\n"
        "from opscope.cli import _import_sparing_dynamo\n"
        "_import_sparing_dynamo('torchvision')\n"
        "print('torch._dynamo' in sys.modules)\n"
        "done.set()\n"
    )
    assert out.split() == ["True"]


def test_a_module_that_wants_more_of_dynamo_is_imported_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "wants_more.py").write_text(
        "from torch._dynamo.utils import is_compile_supported, counters\n"
    )
    out = _fresh_python(
        "import sys\n"
        "from opscope.cli import _import_sparing_dynamo\n"
        "_import_sparing_dynamo('wants_more')\n"
        "import torch._dynamo.utils, wants_more\n"
        "print(wants_more.counters is torch._dynamo.utils.counters,\n"
        "      wants_more.is_compile_supported is torch._dynamo.utils.is_compile_supported)\n",
        cwd=tmp_path,
    )
    assert out.split() == ["True", "True"]


def _to_a_reader_gone(command: list[str]) -> tuple[int, str]:
    """Run the console script with a stdout whose reader has gone before anything is
    written, its own output buffered as a user's is: exit code and stderr."""
    script = Path(sys.executable).parent / "opscope"
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = subprocess.Popen(
        [str(script), *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before anything is written: every write fails
    err = process.stderr.read().decode()
    return process.wait(timeout=120), err


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["--version"],  # a few bytes, left in the buffer until the interpreter exits
        ["profile", "resnet18"],
        ["profile", "resnet18", "--format", "csv"],
        ["compare", "resnet18", "--format", "csv"],
    ],
)
def test_a_reader_that_goes_away_ends_the_command_quietly(command: list[str]) -> None:
    # `opscope list | head -1`: once the reader has gone, the rest is not wanted (rich's
    # own handling read as "a model exited while running", plain text as a traceback, and
    # a short output failed at exit).
    assert _to_a_reader_gone(command) == (0, "")


def test_a_plot_is_still_written_when_the_reader_of_the_table_goes_away(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    plot = tmp_path / "layers.png"
    assert _to_a_reader_gone(["profile", "resnet18", "--plot", str(plot)]) == (0, "")
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_closed_output_in_process_ends_quietly_too(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    monkeypatch.setattr(sys, "stdout", Closed())  # no file descriptor to redirect
    assert main(["list", "resnet1*"]) == 0
