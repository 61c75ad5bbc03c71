"""Profiling whole models by name, one summary per model, in parallel where it pays."""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple

import torch
from torch.nn.parameter import is_lazy

from opscope import zoo
from opscope.choices import COMPARE_SORTS, CompareSort
from opscope.dispatch import disable_without_dynamo, lazy_dynamo_disables
from opscope.inputs import InputSpec, describe_inputs
from opscope.meta import MetaShortcuts
from opscope.profiler import Profiler
from opscope.report import Report, median_timing

Inputs = Sequence[InputSpec] | Sequence[int] | None
"""What a model is run on: input specifications, one float input's shape, or None for the
model's own (its factory's example, else its task's default input)."""


class ModelError(Exception):
    """A model that could not be built or run; the message says which, in one line, and
    ``reason`` why, without the model's name (for a comparison row)."""

    def __init__(self, message: str, reason: str, ran: Sequence[InputSpec] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.ran = ran  # the inputs it failed at, once built


class ModelRun(NamedTuple):
    """One profiled forward pass of a model by name."""

    report: Report
    params: int
    inputs: str
    """The inputs that ran, as ``--input`` writes them (``1×3×224×224``, ``ids=1×128:int64``)."""
    seconds: float | None = None
    """A training step's median wall time over timed steps run unprofiled, when asked."""
    input_shape: tuple[int, ...] = ()
    """The first input's shape, as ``--input`` gives it (a factory's example's, if given)."""


def describe_failure(error: BaseException, device: str) -> str:
    """``error`` as one line: its type and the first sentence of its message, and a hint when
    the model needs tensor values that the meta device does not have. opscope's own errors
    are their message alone."""
    lines = str(error).strip().splitlines()
    if isinstance(error, ModelError):
        return error.reason
    if isinstance(error, zoo.ZooError) and lines:
        return lines[0]
    message = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    if device == "meta" and isinstance(error, NotImplementedError):
        operator = re.search(r"for (torch\.[\w.]+\(\))", message)
        what = operator.group(1) if operator else "an operator"
        return f"{what} needs tensor values, which the meta device has not: try --device cpu"
    reading = re.search(r"([\w.]+\(\)) cannot be called on meta tensors", message)
    if device == "meta" and reading:  # a model that reads a value: mask.all(), x.item()
        return (
            f"the model reads tensor values ({reading.group(1)}), which the meta device has "
            "not: try --device cpu"
        )
    return message


def _specs(inputs: Inputs) -> list[InputSpec] | None:
    if not inputs:
        return None
    if isinstance(inputs[0], int):
        return [InputSpec(tuple(inputs))]  # type: ignore[arg-type]
    return list(inputs)  # type: ignore[arg-type]


def _example_specs(example: zoo.Example) -> list[InputSpec]:
    """The tensors of a factory's example input, as ``--input`` would give them."""
    given = (*((None, value) for value in example.args), *example.kwargs.items())
    return [
        InputSpec(tuple(value.shape), str(value.dtype).removeprefix("torch."), name)
        for name, value in given
        if isinstance(value, torch.Tensor)
    ]


def _first_shape(specs: Sequence[InputSpec]) -> tuple[int, ...]:
    return specs[0].shape if specs else ()


def prepare(
    model: zoo.ZooModel, inputs: Inputs, device: str
) -> tuple[torch.nn.Module, zoo.Example, list[InputSpec]]:
    """Build ``model`` and its forward's arguments: ``inputs`` when given, else its factory's
    example, else its default inputs (:func:`opscope.zoo.default_inputs`); and those inputs,
    as ``--input`` gives them. The model is built for the first positional input's size, or
    else the first keyword input's (a transformers model's ``pixel_values``).

    Raises:
        ModelError: the model cannot be built.
    """
    specs = _specs(inputs)
    positional = [spec.shape for spec in specs or () if spec.name is None]
    hint = positional[0] if positional else specs[0].shape if specs else None
    try:
        net, given = zoo.instantiate(model, device, hint)
    except zoo.ZooError:
        raise
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's factory failing
        reason = f"cannot build it: {describe_failure(error, device)}"
        raise ModelError(
            f"cannot build {model.name}: {describe_failure(error, device)}", reason
        ) from error
    if specs is None and given is not None:
        return net, given, _example_specs(given)
    floating = {spec.dtype for spec in specs or () if getattr(torch, spec.dtype).is_floating_point}
    if len(floating) == 1:  # an input in half precision is for the model in half precision
        net = net.to(dtype=getattr(torch, floating.pop()))
    specs = specs or zoo.default_inputs(model)
    return net, zoo.example_input(model, specs, device), specs


def _run(
    net: torch.nn.Module, example: zoo.Example, model: str, ran: Sequence[InputSpec], device: str
) -> None:
    try:
        net(*example.args, **example.kwargs)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's model failing
        reason = describe_failure(error, device)
        message = f"{model} failed at input {describe_inputs(ran)}: {reason}"
        raise ModelError(message, reason, ran) from error


def profile_model(
    model: zoo.ZooModel, inputs: Inputs = None, device: str = "meta", *, coverage: bool = False
) -> ModelRun:
    """Build ``model`` on ``device`` and profile one forward pass.

    ``inputs`` as in :func:`prepare`; ``coverage`` as in :class:`~opscope.profiler.Profiler`.

    Raises:
        ModelError: the model cannot be built, or fails at these inputs.
    """
    net, example, ran = prepare(model, inputs, device)
    described = describe_inputs(ran)
    on_meta = torch.device(device).type == "meta"
    shortcuts = MetaShortcuts() if on_meta else nullcontext()
    # A lazy module cannot materialise its parameters on meta in inference mode: no_grad there
    # (slower on meta, so only then).
    lazy = on_meta and any(is_lazy(p) for p in net.parameters())
    grad_mode = torch.no_grad() if lazy else torch.inference_mode()
    with grad_mode, shortcuts, Profiler(net, coverage=coverage) as profiler:
        _run(net, example, model.name, ran, device)
    params = sum(p.numel() for p in net.parameters())
    return ModelRun(profiler.report, params, described, input_shape=_first_shape(ran))


def time_model(
    model: zoo.ZooModel,
    inputs: Inputs = None,
    device: str = "cpu",
    *,
    repeat: int = 5,
    warmup: int = 1,
) -> ModelRun:
    """Build ``model`` on ``device`` and time ``warmup + repeat`` forward passes layer by
    layer; the first ``warmup`` runs are dropped and each call gets its median time and its
    spread over the rest (:func:`~opscope.report.median_timing`).

    Raises:
        ModelError: the model cannot be built, or fails at these inputs.
    """
    net, example, ran = prepare(model, inputs, device)
    described = describe_inputs(ran)
    reports = []
    with torch.inference_mode():
        for run in range(warmup + repeat):
            with Profiler(net, timing=True) as profiler:
                _run(net, example, model.name, ran, device)
            if run >= warmup:
                reports.append(profiler.report)
    params = sum(p.numel() for p in net.parameters())
    return ModelRun(median_timing(reports), params, described, input_shape=_first_shape(ran))


OPTIMIZERS = ("sgd", "adamw")
"""The optimizers a training step can take (``--optimizer``)."""


def _scalar_loss(output: Any) -> torch.Tensor:
    """A scalar to differentiate, from any output: the sum of the means of its floating-point
    tensors (a logits tensor, a tuple with auxiliary outputs, a dict)."""
    tensors = [value for value in _floats(output)]
    if not tensors:
        raise ModelError("the model's output has no floating-point tensor to train on", "no loss")
    return sum((tensor.mean() for tensor in tensors[1:]), tensors[0].mean())


def _floats(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict) or hasattr(value, "values") and callable(value.values):
        return [t for item in value.values() for t in _floats(item)]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _floats(item)]
    return []


def train_model(
    model: zoo.ZooModel,
    inputs: Inputs = None,
    device: str = "meta",
    *,
    optimizer: str = "sgd",
    repeat: int = 0,
    warmup: int = 1,
) -> ModelRun:
    """Build ``model`` on ``device`` and profile one training step: the forward in training
    mode, a scalar loss (:func:`_scalar_loss`), the backward pass and an optimizer step
    (``sgd`` with momentum, or ``adamw``). The report's phases (``report.by_phase()``) say
    what each costs.

    ``warmup`` unprofiled steps run first, so that the profiled step is one of a training
    loop (the optimizer's state made, the allocator warm). With ``repeat`` the profiled step
    is timed per layer, backward included (``timing=True``), and ``repeat`` more steps run
    unprofiled: the median wall time of those is ``seconds`` (CUDA synchronised around each).

    Raises:
        ModelError: the model cannot be built, or fails at these inputs.
    """
    net, example, ran = prepare(model, inputs, device)
    described = describe_inputs(ran)
    net.train()
    parameters = [p for p in net.parameters() if p.requires_grad]
    step = (
        torch.optim.SGD(parameters, lr=0.01, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.AdamW(parameters, lr=1e-3)
    )

    def train_step() -> None:
        _scalar_loss(net(*example.args, **example.kwargs)).backward()
        step.step()
        step.zero_grad()

    def guarded(steps: int) -> None:
        try:
            for _ in range(steps):
                train_step()
        except ModelError:
            raise
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's model failing
            reason = describe_failure(error, device)
            message = f"{model.name} failed a training step at input {described}: {reason}"
            raise ModelError(message, reason, ran) from error

    shortcuts = MetaShortcuts() if torch.device(device).type == "meta" else nullcontext()
    with shortcuts:
        guarded(warmup)
        with Profiler(net, timing=repeat > 0) as profiler:
            guarded(1)
    seconds = _median_seconds(train_step, device, repeat) if repeat else None
    params = sum(p.numel() for p in net.parameters())
    return ModelRun(profiler.report, params, described, seconds, _first_shape(ran))


def _median_seconds(run: Callable[[], None], device: str, repeat: int) -> float:
    """The median wall time of ``repeat`` calls of ``run``."""
    cuda = torch.device(device).type == "cuda"
    times = []
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class ModelSummary:
    """One row of a comparison.

    Counts are None when the model failed; ``error`` then says why in one line.
    ``conv_calls`` and ``conv_ops`` are the Conv2d family's, ``total_ops`` and ``macs`` the
    whole block's; ``coverage`` is the share of FlopCounterMode FLOPs in work opscope counted,
    when asked for. ``published`` holds torchvision's figures for the default weights.
    ``input_shape`` is the first input's shape, ``inputs`` all of them as ``--input`` writes
    them; both are empty for a model that failed before running (its factory raised, or its
    worker died) when no inputs were given.
    """

    name: str
    task: str
    input_shape: tuple[int, ...]
    params: int | None
    conv_calls: int | None
    conv_ops: int | None
    total_ops: int | None
    coverage: float | None
    macs: int | None
    published: zoo.PublishedMetrics = field(default_factory=zoo.PublishedMetrics)
    error: str | None = None
    inputs: str = ""

    @property
    def acc1(self) -> float | None:
        """The published top-1 accuracy (ImageNet or Kinetics), if any."""
        return self.published.acc1

    @property
    def gflops(self) -> float | None:
        """torchvision's published "GFLOPS" (multiply-accumulates, in billions)."""
        return self.published.gflops

    @property
    def published_size(self) -> int | None:
        """The image size torchvision's figures were measured at, when it says."""
        return self.published.size

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["input_shape"] = list(self.input_shape)
        return row


def _given(inputs: Inputs) -> tuple[tuple[int, ...], str]:
    """The first input's shape and all the inputs as ``--input`` writes them, of the inputs
    given; none when none are given (the model's own are known only once it is built)."""
    specs = _specs(inputs) or []
    return _first_shape(specs), describe_inputs(specs)


def summarize(
    model: zoo.ZooModel, inputs: Inputs = None, device: str = "meta", coverage: bool = False
) -> ModelSummary:
    """Profile ``model`` into one comparison row; a failure becomes the row's ``error``.

    The row's inputs are those it ran or failed at: one that failed before running (its
    factory raised) has the inputs given, or none (not its default inputs, which would read
    as a run); one that ran and failed after (a formula on its calls), those it ran at."""
    shape, described = _given(inputs)
    counts: tuple[int | float | None, ...] = (None,) * 6
    error = None
    try:
        report, params, described, _, shape = profile_model(
            model, inputs, device, coverage=coverage
        )
        conv_calls = sum(1 for record in report.records if record.family == "Conv2d")
        measured = report.coverage.share if report.coverage else None
        conv_ops = report.ops_of("Conv2d")
        counts = (params, conv_calls, conv_ops, report.total_ops, measured, report.total_macs)
    except Exception as failure:  # noqa: BLE001 - one model's failure must not stop the rest
        error = describe_failure(failure, device)
        if isinstance(failure, ModelError):  # built or not: it says what it ran at, if any
            if failure.ran:  # its example's, or its defaults
                shape, described = _first_shape(failure.ran), describe_inputs(failure.ran)
        elif not described and model.source != zoo.CUSTOM:
            # it ran at its defaults (a formula failed on its calls); a factory's own
            # example, which would have replaced them, is not known here
            specs = zoo.default_inputs(model)
            shape, described = _first_shape(specs), describe_inputs(specs)
    return _row(model, shape, counts, error, described)


def _row(
    model: zoo.ZooModel,
    shape: Sequence[int],
    counts: tuple[int | float | None, ...],
    error: str | None,
    described: str,
) -> ModelSummary:
    return ModelSummary(
        model.name, model.task, tuple(shape), *counts,  # type: ignore[arg-type]
        published=zoo.published_metrics(model), error=error, inputs=described,
    )  # fmt: skip


Task = tuple[zoo.ZooModel, Inputs, str, bool]
"""What :func:`summarize` is called with: a model, its inputs, the device, coverage."""

_STOPPING = {signal.SIGINT, signal.SIGTERM}
"""The signals that stop a comparison: blocked while a worker is forked, until it has set
its own handlers for them (:func:`_serve`)."""


def _serve(
    connection: Connection, inherited: Sequence[Connection], lazy_disables: Sequence[Any]
) -> None:
    """A worker's life: summarise each task the parent sends, until it sends None or goes
    away.

    Ctrl-C and SIGTERM are the parent's to handle (it stops the workers): here SIGINT is
    ignored and SIGTERM, which the parent turns into :class:`Terminated`, ends the process
    again, both blocked from before the fork until then. torch's Python meta kernels run
    without importing ``torch._dynamo`` (1.6 s a worker; 47 of the 80 classification models
    need one), which a worker, never compiling, does not need. The parent's ends of the
    pipes, inherited by the fork, are closed: with the parent gone, this one reads the end
    of its pipe, or finds it reset (the parent died with a summary unread), and returns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
    for end in inherited:
        end.close()
    disable_without_dynamo(lazy_disables)
    try:
        for task in iter(connection.recv, None):
            try:
                row = summarize(*task)
            except KeyboardInterrupt:  # raised by the model (Ctrl-C is ignored here)
                row = _failed_row(task, "the model raised KeyboardInterrupt")
            connection.send(row)
    except (EOFError, ConnectionError):  # the parent went away (a reset, a broken pipe)
        return


def _ended(exitcode: int | None) -> str:
    """How a worker process ended without a result, for the row of the model it ran."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        memory = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the process profiling it was killed by {name}{memory}"
    return f"the process profiling it exited (exit code {exitcode})"


def _failed_row(task: Task, reason: str) -> ModelSummary:
    """The row of a model whose worker died: its inputs as given (none if none were, as for
    a factory that raised: how far it got is not known), no counts."""
    model, inputs, *_ = task
    shape, described = _given(inputs)
    return _row(model, shape, (None,) * 6, reason, described)


@dataclass
class _Worker:
    """A forked worker process, the parent's end of its pipe, and the task it runs."""

    process: BaseProcess
    connection: Connection
    task: int | None = None

    def result(self) -> ModelSummary | None:
        """The summary it sent, if it sent one (its task is then done)."""
        try:
            if self.connection.poll():
                summary: ModelSummary = self.connection.recv()
                self.task = None
                return summary
        except (EOFError, OSError):  # its end closed: it died
            pass
        return None


class _Workers:
    """Forked worker processes, each running one task at a time, so that the task of one
    that dies (killed, out of memory, a crash in native code, ``os._exit``) is known."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = tasks
        self.pending = deque(range(len(tasks)))
        self.running: list[_Worker] = []
        self._context = multiprocessing.get_context("fork")  # inherits torch, factories
        self._lazy_disables = lazy_dynamo_disables()  # before any freeze, which hides them

    def start(self) -> None:
        """Fork a new worker."""
        mine, theirs = self._context.Pipe()
        inherited = [worker.connection for worker in self.running] + [mine]
        process = self._context.Process(
            target=_serve, args=(theirs, inherited, self._lazy_disables), daemon=True
        )
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
        try:
            with _frozen_for_fork():
                process.start()
            theirs.close()  # so that the parent's end reads the end of a worker that died
            self.running.append(_Worker(process, mine))
        finally:  # a Ctrl-C meanwhile: now, with the worker known to stop()
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def assign(self) -> None:
        """Give each idle worker the next pending task; replace those that died idle."""
        for worker in [w for w in self.running if w.task is None and not w.process.is_alive()]:
            self.running.remove(worker)
            worker.connection.close()
            self.start()
        for worker in self.running:
            if worker.task is None and self.pending:
                worker.task = self.pending.popleft()
                try:
                    worker.connection.send(self.tasks[worker.task])
                except OSError:  # it died between tasks: the task waits for another worker
                    self.pending.appendleft(worker.task)
                    worker.task = None

    def collect(self, finished: dict[int, ModelSummary], retried: set[int]) -> None:
        """Wait for a worker to send a summary or die; put the summaries in ``finished``. A
        worker's death fails its task's row if the task killed a worker before: the first
        time, the task is run again by a new worker, since the task before it on that
        worker may have left something that killed it (a thread)."""
        busy = [worker for worker in self.running if worker.task is not None]
        # an idle worker's end too: one that died between tasks is replaced by assign()
        wait([w.connection for w in busy] + [w.process.sentinel for w in self.running])
        for worker in busy:
            task, summary = worker.task, worker.result()
            assert task is not None
            if summary is not None:
                finished[task] = summary
            elif not worker.process.is_alive():
                worker.task = None  # replaced by assign()
                if task in retried:
                    finished[task] = _failed_row(self.tasks[task], _ended(worker.process.exitcode))
                else:
                    retried.add(task)
                    self.pending.appendleft(task)

    def stop(self) -> None:
        """Stop every worker: the idle ones are told to, all are terminated, and one that
        ignores it (a library's SIGTERM handler) is killed after a second."""
        for worker in self.running:
            if worker.task is None:
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
            worker.process.terminate()
        for worker in self.running:
            worker.process.join(timeout=1)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self.running.clear()


def _in_parallel(tasks: Sequence[Task], workers: int) -> Generator[ModelSummary, None, None]:
    """The summaries of ``tasks``, in order, made by ``workers`` forked processes: a worker
    that dies fails only the model it ran, whose row says so, and a new worker takes its
    place. Every worker is stopped when the summaries end, or are interrupted."""
    pool = _Workers(tasks)
    finished: dict[int, ModelSummary] = {}
    retried: set[int] = set()
    try:
        with _terminated_by_sigterm():
            for _ in range(workers):
                pool.start()
            for reported in range(len(tasks)):
                while reported not in finished:
                    pool.assign()
                    pool.collect(finished, retried)
                yield finished.pop(reported)
    finally:  # done, interrupted or terminated: no worker outlives the comparison
        pool.stop()


class Terminated(KeyboardInterrupt):
    """SIGTERM, while models are compared in worker processes: raised as Ctrl-C is, so that
    the workers are stopped and the command line says it was interrupted (exit code 130).
    By default SIGTERM would end the comparing process at once, its workers left running
    until their models end, and a progress bar's terminal not restored."""


@contextmanager
def _terminated_by_sigterm() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the block, where its handler is the default one
    (not one the caller set) and this is the main thread (the only one that can set one)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    ):
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise Terminated("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:  # a second SIGTERM while the workers are stopped ends this process, as before
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _frozen_for_fork() -> Iterator[None]:
    """Processes forked in the block inherit this one's objects frozen (``gc.freeze``): their
    garbage collector's full collections, several while models are built, never walk the
    several hundred thousand objects torch and torchvision import, nor write to (and so copy)
    the memory that holds them. Running the 80 classification models in one process,
    collections took 1.5 s of 8.9 s; frozen, 0.25 s of 6.0 s. This process's objects are
    unfrozen when the block ends (it only forks), unless some were frozen before it."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def compare(
    models: Sequence[zoo.ZooModel],
    inputs: Inputs = None,
    device: str = "meta",
    *,
    coverage: bool = False,
    on_done: Callable[[ModelSummary], None] | None = None,
    published_size: bool = False,
) -> list[ModelSummary]:
    """Summarise every model, in the order given, at ``inputs`` (default: each model's own)
    or, with ``published_size``, at the size of its published figures.

    On ``meta`` the work is Python-bound (building modules, shape functions), so several
    models are profiled in parallel, one process per core; real devices run one at a time.
    ``on_done`` is called as each model finishes (for a progress bar). An interrupt stops the
    workers at once.
    """
    zoo.preload(models)
    chosen = [zoo.published_inputs(model) if published_size else inputs for model in models]
    tasks = [(model, shape, device, coverage) for model, shape in zip(models, chosen)]
    workers = min(os.cpu_count() or 1, len(tasks)) if device == "meta" else 1
    parallel = workers > 1 and "fork" in multiprocessing.get_all_start_methods()
    summaries: Generator[ModelSummary, None, None] = (
        _in_parallel(tasks, workers) if parallel else (summarize(*task) for task in tasks)
    )
    results = []
    try:
        for summary in summaries:
            results.append(summary)
            if on_done:
                on_done(summary)
    finally:  # also when on_done raises: the workers are stopped now, not when freed
        summaries.close()
    return results


def sort_summaries(summaries: Sequence[ModelSummary], by: CompareSort) -> list[ModelSummary]:
    """Heaviest first for ``ops`` (total ops) and ``params``, highest published figure first
    for ``acc``, A-Z for ``name``; rows without the value (failed, or unpublished) go last."""
    if by not in COMPARE_SORTS:
        raise ValueError(f"sort must be one of {', '.join(COMPARE_SORTS)}; got {by!r}")
    if by == "name":
        return sorted(summaries, key=lambda s: s.name)

    def value(summary: ModelSummary) -> float | None:
        return {"ops": summary.total_ops, "params": summary.params, "acc": summary.published.value}[
            by
        ]

    return sorted(summaries, key=lambda s: (value(s) is None, -(value(s) or 0)))
