"""Comparing models: rows, failures kept per row, sorting, and parallel runs."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pytest

from opscope import catalogue
from opscope import zoo
from opscope.compare import _serve, compare, profile_model, sort_summaries, summarize

SMALL = ["resnet18", "mobilenet_v3_small", "squeezenet1_1"]


def models(*names: str) -> list[zoo.ZooModel]:
    return catalogue.resolve(list(names))


def test_a_summary_matches_the_profile() -> None:
    (model,) = models("resnet18")
    summary = summarize(model)
    report, params, *_ = profile_model(model)
    assert (summary.conv_ops, summary.conv_calls, summary.params) == (report.ops_of("Conv2d"), 20, params)
    assert summary.total_ops == report.total_ops
    assert summary.input_shape == (1, 3, 224, 224)
    assert summary.error is None
    assert summary.acc1 == zoo.published_metrics(model).acc1


def test_a_failing_model_keeps_its_row_and_the_others_are_reported() -> None:
    summaries = compare(models("alexnet", "resnet18"), (1, 3, 16, 16))
    alexnet, resnet = summaries
    assert alexnet.name == "alexnet" and alexnet.conv_ops is None
    assert "Output size is too small" in alexnet.error
    assert "\n" not in alexnet.error
    assert alexnet.acc1 is not None  # published figures do not depend on the run
    assert resnet.error is None and resnet.conv_ops > 0


def test_parallel_and_sequential_runs_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    parallel = compare(models(*SMALL))
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    done: list[str] = []
    sequential = compare(models(*SMALL), on_done=lambda s: done.append(s.name))
    assert parallel == sequential
    assert done == SMALL


def test_sorting() -> None:
    summaries = compare(models("alexnet", *SMALL), (1, 3, 16, 16))
    by_ops = sort_summaries(summaries, "ops")
    counted = [s.conv_ops for s in by_ops if s.conv_ops is not None]
    assert counted == sorted(counted, reverse=True) and len(counted) >= 2
    assert by_ops[-1].name in {"alexnet", "squeezenet1_1"} and by_ops[-1].conv_ops is None  # failed: last
    by_acc = sort_summaries(summaries, "acc")
    assert [s.acc1 for s in by_acc] == sorted((s.acc1 for s in summaries), reverse=True)
    assert [s.name for s in sort_summaries(summaries, "name")] == sorted(s.name for s in summaries)
    by_params = sort_summaries(summaries, "params")
    assert by_params[0].name == "resnet18"
    with pytest.raises(ValueError, match="sort must be one of"):
        sort_summaries(summaries, "flops")  # type: ignore[arg-type]


def importable(
    folder: Path, monkeypatch: pytest.MonkeyPatch, *, cores: int, module: str, source: str
) -> None:
    """Write ``module`` (importable) from ``source``, and make ``compare`` see ``cores`` cores."""
    (folder / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr("os.cpu_count", lambda: cores)


def factories(
    folder: Path, monkeypatch: pytest.MonkeyPatch, *, cores: int, module: str, body: str
) -> None:
    """Write ``module`` with two model factories, ``net`` and ``other``, each running
    ``body`` first (see :func:`importable`)."""
    importable(
        folder, monkeypatch, cores=cores, module=module,
        source="import gc, torch\nfreed, seen = [], []\n"
        f"def net():\n{body}    return torch.nn.Conv2d(3, 2, 1)\nother = net\n",
    )  # fmt: skip


def lives_dies(folder: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Write module ``lives_dies``: factory ``lives`` (a Conv2d) and those of ``source``, on
    2 cores (see :func:`importable`)."""
    importable(
        folder, monkeypatch, cores=2, module="lives_dies",
        source="import ctypes, os, signal, threading, time, torch\n"
        "def lives():\n    return torch.nn.Conv2d(3, 2, 1)\n" + textwrap.dedent(source),
    )  # fmt: skip


def test_workers_inherit_torchs_objects_frozen_and_the_caller_gets_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The factory runs in a worker: it fails there unless the objects inherited from this
    # process are frozen, which keeps its garbage collector off torch's several hundred
    # thousand.
    factories(
        tmp_path, monkeypatch, cores=2, module="frozen_check",
        body="    assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n",
    )  # fmt: skip
    summaries = compare(models("frozen_check:net", "frozen_check:other"))
    assert [s.error for s in summaries] == [None, None]
    assert gc.get_freeze_count() == 0  # this process's own objects are collectable again


def test_garbage_made_before_a_comparison_is_collectable_during_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In this process (one core, or a real device), nothing is frozen: a factory that
    # collects frees what its caller dropped (a model kept by a cycle, holding memory).
    factories(
        tmp_path, monkeypatch, cores=1, module="collecting",
        body="    gc.collect()\n    seen.append(bool(freed))\n",
    )  # fmt: skip
    import collecting  # noqa: PLC0415 - written just above

    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage  # type: ignore[attr-defined]
    weakref.finalize(garbage, collecting.freed.append, True)
    del garbage
    (summary,) = compare(models("collecting:net"), (1, 3, 8, 8), device="cpu")
    assert summary.error is None
    assert collecting.seen == [True]


def test_objects_the_caller_froze_stay_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        compare(models("squeezenet1_1", "resnet18"), (1, 3, 32, 32))
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("spared", [True, False])
def test_workers_run_torchs_python_meta_kernels_without_importing_dynamo(spared: bool) -> None:
    # SqueezeNet's cat and MNASNet's mean run through torch's Python meta kernels, whose
    # wrappers import torch._dynamo (1.6 s) at their first call: not in a worker.
    script = textwrap.dedent(
        f"""
        import dataclasses, os, sys
        from opscope import cli

        cli._import_sparing_dynamo("torchvision")
        from opscope import catalogue, compare

        os.cpu_count = lambda: 2
        if not {spared}:
            compare.disable_without_dynamo = lambda wrappers: None
        summarize = compare.summarize

        def reporting(*args):  # run in the worker: say whether it imported dynamo
            summary = summarize(*args)
            return dataclasses.replace(summary, error=summary.error or str("torch._dynamo" in sys.modules))

        compare.summarize = reporting
        rows = compare.compare(catalogue.resolve(["squeezenet1_1", "mnasnet0_5"]))
        print([(row.name, row.error, row.total_ops > 0) for row in rows])
        print("torch._dynamo" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows, parent = done.stdout.strip().splitlines()
    assert rows == str([("squeezenet1_1", str(not spared), True), ("mnasnet0_5", str(not spared), True)])
    assert parent == "False"


@pytest.mark.parametrize(
    "death, reason",
    [
        ("os._exit(3)", "the process profiling it exited (exit code 3)"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "the process profiling it was killed by SIGKILL (out of memory?)"),
        ("ctypes.string_at(0)", "the process profiling it was killed by SIGSEGV"),  # a crash
    ],
)
def test_a_worker_that_dies_fails_only_its_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, death: str, reason: str
) -> None:
    # A worker killed (out of memory), crashed or exited takes its model's row with it, not
    # the comparison: the others are profiled, by the remaining worker and a new one.
    lives_dies(tmp_path, monkeypatch, f"def dies():\n    {death}\na = c = d = f = lives\nb = e = dies\n")
    names = [f"lives_dies:{name}" for name in "abcdef"]
    done: list[str] = []
    summaries = compare(models(*names), (1, 3, 8, 8), on_done=lambda s: done.append(s.name))
    assert [s.name for s in summaries] == done == names
    assert [s.error for s in summaries] == [None, reason, None, None, reason, None]
    conv = 2 * 64 * (2 * 3)  # 2 channels of 8x8, each 3 products, 2 sums and the bias
    assert [s.total_ops for s in summaries] == [conv, None, conv, conv, None, conv]


def test_a_model_raising_keyboard_interrupt_in_a_worker_fails_its_row_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Not the user's Ctrl-C (the parent's to handle): the model's own failure, one row, no
    # worker's traceback on stderr.
    lives_dies(tmp_path, monkeypatch, "def stops():\n    raise KeyboardInterrupt\n")
    summaries = compare(models("lives_dies:lives", "lives_dies:stops"), (1, 3, 8, 8))
    assert [s.error for s in summaries] == [None, "the model raised KeyboardInterrupt"]
    assert summaries[1].inputs == "1×3×8×8"
    assert "Traceback" not in capfd.readouterr().err


def test_a_worker_killed_by_the_model_before_is_not_blamed_on_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "leaves" returns at once but leaves a thread that ends its worker 1 s later, while the
    # worker runs "slow": "slow" is run again by a new worker, and counted.
    lives_dies(tmp_path, monkeypatch, """
        def leaves():
            threading.Timer(1.0, os._exit, (4,)).start()
            return lives()
        def slow():
            time.sleep(3)
            return lives()
        def slower():
            time.sleep(6)
            return lives()
    """)  # fmt: skip
    summaries = compare(models("lives_dies:leaves", "lives_dies:slower", "lives_dies:slow"), (1, 3, 8, 8))
    assert [s.error for s in summaries] == [None, None, None]
    assert [s.total_ops for s in summaries] == [2 * 64 * (2 * 3)] * 3


def test_a_failed_rows_inputs_are_those_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lives_dies(tmp_path, monkeypatch, "def dies():\n    os._exit(3)\ndef raises():\n    raise RuntimeError('boom')\n")
    rows = compare(models("lives_dies:lives", "lives_dies:dies", "lives_dies:raises"), (1, 3, 8, 8))
    assert [(row.input_shape, row.inputs, row.error is None) for row in rows] == [
        ((1, 3, 8, 8), "1×3×8×8", True),
        ((1, 3, 8, 8), "1×3×8×8", False),
        ((1, 3, 8, 8), "1×3×8×8", False),
    ]


def test_a_model_that_failed_before_running_has_no_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None given: the one that ran says its default input; one whose worker died and one whose
    # factory raised say none alike (not the default, which a factory's example replaces and
    # which a table would take for a run at another size than the others').
    lives_dies(tmp_path, monkeypatch, "def dies():\n    os._exit(3)\ndef raises():\n    raise RuntimeError('boom')\n")
    rows = compare(models("lives_dies:lives", "lives_dies:dies", "lives_dies:raises"))
    assert [(row.input_shape, row.inputs) for row in rows] == [((1, 3, 224, 224), "1×3×224×224"), ((), ""), ((), "")]
    assert [row.error for row in rows] == [
        None, "the process profiling it exited (exit code 3)", "cannot build it: RuntimeError: boom",
    ]  # fmt: skip


def test_workers_that_ignore_sigterm_are_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A library that installs its own SIGTERM handler in a worker: the comparison still ends.
    lives_dies(tmp_path, monkeypatch, """
        def deaf():
            signal.signal(signal.SIGTERM, lambda *args: None)
            return lives()
        also_deaf = deaf
    """)  # fmt: skip
    rows = compare(models("lives_dies:deaf", "lives_dies:lives", "lives_dies:also_deaf"), (1, 3, 8, 8))
    assert [row.error for row in rows] == [None, None, None]
    assert multiprocessing.active_children() == []


def test_workers_stop_when_a_progress_callback_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lives_dies(tmp_path, monkeypatch, "")

    def progress(summary: object) -> None:
        raise RuntimeError("the display broke")

    with pytest.raises(RuntimeError, match="the display broke") as raised:
        compare(models("lives_dies:lives", "resnet18", "mobilenet_v3_small"), on_done=progress)
    assert raised.value.__traceback__ is not None  # held, as a notebook holds the last one
    assert multiprocessing.active_children() == []


def slow_factories(folder: Path, seconds: int) -> Path:
    """A module ``pids`` in ``folder`` with two factories, ``slow`` and ``other``, that write
    their process's id to the file returned, then take ``seconds`` to build a model."""
    pids = folder / "pids.txt"
    (folder / "pids.py").write_text(textwrap.dedent(f"""
        import os, time, torch
        def slow():
            with open({str(pids)!r}, "a") as pids:
                pids.write(f"{{os.getpid()}}\\n")
            time.sleep({seconds})
            return torch.nn.Conv2d(3, 2, 1)
        other = slow
    """))  # fmt: skip
    return pids


def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    # The comparing process dies (killed by SIGKILL) while both workers run a model: each ends
    # as its model ends, instead of waiting for a task forever.
    pids_file = slow_factories(tmp_path, seconds=2)
    script = textwrap.dedent(
        """
        import os, signal, threading
        from opscope import catalogue, compare
        os.cpu_count = lambda: 2
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGKILL)).start()
        compare.compare(catalogue.resolve(["pids:slow", "pids:other"]), (1, 3, 8, 8))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    pids = [int(line) for line in pids_file.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("unread", [False, True])
def test_a_worker_whose_parent_went_away_returns_quietly(unread: bool, capfd: pytest.CaptureFixture[str]) -> None:
    # The parent's end closed: the worker reads the end of its pipe, or, when the parent died
    # with a summary unread, has the pipe reset (ECONNRESET), which printed a traceback.
    parent, worker = multiprocessing.Pipe()
    if unread:
        worker.send("a summary the parent never read")
    parent.close()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert _serve(worker, [], []) is None
    finally:  # the worker's own, set by _serve: not this process's
        for number, handler in handlers.items():
            signal.signal(number, handler)
        worker.close()
    assert capfd.readouterr().err == ""


def test_sigterm_stops_the_workers_as_ctrl_c_does(tmp_path: Path) -> None:
    # Terminated while both workers run a model: one line, the exit code of an interrupt, and
    # the workers ended with it (not left to finish their models, nor to print tracebacks).
    pids = slow_factories(tmp_path, seconds=60)
    script = textwrap.dedent(
        """
        import os, sys
        from opscope import cli
        os.cpu_count = lambda: 2
        sys.exit(cli.main(["compare", "pids:slow", "pids:other", "--input", "1x3x8x8"]))
        """
    )
    comparing = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (pids.exists() and len(pids.read_text().split()) == 2):
            time.sleep(0.1)
        workers = [int(line) for line in pids.read_text().split()]
        assert len(workers) == 2
        comparing.send_signal(signal.SIGTERM)
        _, err = comparing.communicate(timeout=30)  # not the 60 s the models take
    finally:
        comparing.kill()
    assert (comparing.returncode, err) == (130, "opscope: error: interrupted\n")
    assert not any(alive(pid) for pid in workers)  # stopped and reaped before it exited


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_row_says_the_inputs_that_ran_or_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a factory's own example, whether its model runs or fails at it; a detection model's
    # image batch as given, though it runs on a list of images
    importable(
        tmp_path, monkeypatch, cores=1, module="ran_at",
        source="import torch\n"
        "class Fails(torch.nn.Linear):\n"
        "    def forward(self, x):\n        raise RuntimeError('boom')\n"
        "def runs():\n    return torch.nn.Linear(5, 3), torch.randn(2, 5)\n"
        "def fails():\n    return Fails(5, 3), torch.randn(2, 5)\n"
        "def raises():\n    raise RuntimeError('unbuilt')\n",
    )  # fmt: skip
    runs, fails, raises = (summarize(zoo.ZooModel(f"ran_at:{name}", "custom")) for name in ("runs", "fails", "raises"))
    assert (runs.input_shape, runs.inputs, runs.error) == ((2, 5), "2×5", None)
    assert (fails.input_shape, fails.inputs) == ((2, 5), "2×5") and "boom" in fails.error
    assert (raises.input_shape, raises.inputs) == ((), "") and "unbuilt" in raises.error  # it never ran
    detection = summarize(zoo.ZooModel("ssdlite320_mobilenet_v3_large", "detection"), (1, 3, 64, 64), "cpu")
    assert (detection.input_shape, detection.inputs, detection.error) == ((1, 3, 64, 64), "1×3×64×64", None)


def test_a_model_whose_formula_failed_ran_at_its_default_inputs() -> None:
    # it ran (a formula failed on its results): its row says the inputs it ran at
    import torch

    from opscope import Formula
    from opscope.formulas import registry

    linear = registry._REGISTRY[torch.nn.Linear]
    try:
        registry._REGISTRY[torch.nn.Linear] = Formula(torch.nn.Linear, lambda config, call: "many")
        row = summarize(zoo.ZooModel("alexnet", "classification"))
    finally:
        registry._REGISTRY[torch.nn.Linear] = linear
    assert "a formula must return" in row.error
    assert (row.input_shape, row.inputs) == ((1, 3, 224, 224), "1×3×224×224")
