"""Profiling whole models by name, one summary per model, in parallel where it pays."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch.nn.parameter import is_lazy

from opscope import zoo
from opscope.meta import MetaShortcuts
from opscope.profiler import Profiler
from opscope.report import Report, median_timing

CompareSort = Literal["ops", "params", "name", "acc"]
COMPARE_SORTS: tuple[CompareSort, ...] = ("ops", "params", "name", "acc")


def profile_model(
    model: zoo.ZooModel,
    input_shape: Sequence[int] | None = None,
    device: str = "meta",
    *,
    coverage: bool = False,
) -> tuple[Report, int]:
    """Build ``model`` on ``device`` and profile one forward pass of every counted family.

    Returns the report and the model's parameter count. ``input_shape`` defaults to the
    model's task default (``1×3×224×224`` for classification); ``coverage`` as in
    :class:`~opscope.profiler.Profiler`.
    """
    shape = input_shape or model.default_input
    net = zoo.build(model, device, shape)
    args = zoo.example_input(model, shape, device)
    on_meta = torch.device(device).type == "meta"
    shortcuts = MetaShortcuts() if on_meta else nullcontext()
    # A lazy module cannot materialise its parameters on meta in inference mode: no_grad there
    # (slower on meta, so only then).
    lazy = on_meta and any(is_lazy(p) for p in net.parameters())
    grad_mode = torch.no_grad() if lazy else torch.inference_mode()
    with grad_mode, shortcuts, Profiler(net, coverage=coverage) as profiler:
        net(*args)
    return profiler.report, sum(p.numel() for p in net.parameters())


def time_model(
    model: zoo.ZooModel,
    input_shape: Sequence[int] | None = None,
    device: str = "cpu",
    *,
    repeat: int = 5,
    warmup: int = 1,
) -> Report:
    """Build ``model`` on ``device`` and time ``warmup + repeat`` forward passes layer by
    layer; the first ``warmup`` runs are dropped and each call gets its median time and its
    spread over the rest (:func:`~opscope.report.median_timing`)."""
    shape = input_shape or model.default_input
    net = zoo.build(model, device, shape)
    args = zoo.example_input(model, shape, device)
    reports = []
    with torch.inference_mode():
        for run in range(warmup + repeat):
            with Profiler(net, timing=True) as profiler:
                net(*args)
            if run >= warmup:
                reports.append(profiler.report)
    return median_timing(reports)


@dataclass(frozen=True)
class ModelSummary:
    """One row of a comparison.

    Counts are None when the model failed; ``error`` then says why in one line.
    ``conv_calls`` and ``conv_ops`` are the Conv2d family's, ``total_ops`` and ``macs`` the
    whole block's; ``coverage`` is the share of FlopCounterMode FLOPs in work opscope counted,
    when asked for. ``acc1`` and ``gflops`` are torchvision's published figures for the default
    weights (``gflops`` counts multiply-accumulates of the whole model at ``published_size``).
    """

    name: str
    task: str
    input_shape: tuple[int, ...]
    params: int | None
    conv_calls: int | None
    conv_ops: int | None
    total_ops: int | None
    coverage: float | None
    acc1: float | None
    gflops: float | None
    published_size: int | None
    error: str | None = None
    macs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["input_shape"] = list(self.input_shape)
        return row


def describe_failure(error: BaseException, device: str) -> str:
    """``error`` as one line: its type and the first sentence of its message, and a hint when
    the model needs tensor values that the meta device does not have."""
    lines = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    if device == "meta" and isinstance(error, NotImplementedError):
        first_sentence = message.split(". ")[0]
        return f"{first_sentence} (its forward depends on tensor values: try --device cpu)"
    return message


def summarize(
    model: zoo.ZooModel,
    input_shape: Sequence[int] | None = None,
    device: str = "meta",
    coverage: bool = False,
) -> ModelSummary:
    """Profile ``model`` into one comparison row; a failure becomes the row's ``error``."""
    shape = tuple(input_shape or model.default_input)
    published = zoo.published_metrics(model)
    counts: tuple[int | float | None, ...] = (None,) * 5
    macs = None
    error = None
    try:
        report, params = profile_model(model, shape, device, coverage=coverage)
        conv_calls = sum(1 for record in report.records if record.family == "Conv2d")
        measured = report.coverage.share if report.coverage else None
        conv_ops = report.ops_of("Conv2d")
        counts = (params, conv_calls, conv_ops, report.total_ops, measured)
        macs = report.total_macs
    except Exception as failure:  # noqa: BLE001 - one model's failure must not stop the rest
        error = describe_failure(failure, device)
    return ModelSummary(
        model.name, model.task, shape, *counts,
        published.acc1, published.gflops, published.crop_size, error, macs,
    )  # fmt: skip


def _summarize_task(task: tuple[zoo.ZooModel, Sequence[int] | None, str, bool]) -> ModelSummary:
    return summarize(*task)


def compare(
    models: Sequence[zoo.ZooModel],
    input_shape: Sequence[int] | None = None,
    device: str = "meta",
    *,
    coverage: bool = False,
    on_done: Callable[[ModelSummary], None] | None = None,
    published_size: bool = False,
) -> list[ModelSummary]:
    """Summarise every model, in the order given, at ``input_shape`` (default: each model's
    task default) or, with ``published_size``, at the size of its published figures.

    On ``meta`` the work is Python-bound (building modules, shape functions), so several
    models are profiled in parallel, one process per core; real devices run one at a time.
    ``on_done`` is called as each model finishes (for a progress bar).
    """
    shapes = [model.published_input if published_size else input_shape for model in models]
    tasks = [(model, shape, device, coverage) for model, shape in zip(models, shapes)]
    workers = min(os.cpu_count() or 1, len(tasks)) if device == "meta" else 1
    with ExitStack() as stack:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            # fork: the workers inherit the imported torch and any user factory's module.
            context = multiprocessing.get_context("fork")
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
            summaries: Iterable[ModelSummary] = pool.map(_summarize_task, tasks)
        else:
            summaries = map(_summarize_task, tasks)
        results = []
        for summary in summaries:
            results.append(summary)
            if on_done:
                on_done(summary)
        return results


def sort_summaries(summaries: Sequence[ModelSummary], by: CompareSort) -> list[ModelSummary]:
    """Heaviest first for ``ops`` (total ops) and ``params``, most accurate first for ``acc``, A-Z for
    ``name``; rows without the value (failed, or unpublished) go last."""
    if by not in COMPARE_SORTS:
        raise ValueError(f"sort must be one of {', '.join(COMPARE_SORTS)}; got {by!r}")
    if by == "name":
        return sorted(summaries, key=lambda s: s.name)
    value = {"ops": "total_ops", "params": "params", "acc": "acc1"}[by]
    return sorted(summaries, key=lambda s: (getattr(s, value) is None, -(getattr(s, value) or 0)))
