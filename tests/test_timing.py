"""Per-layer timing: real durations from the hooks, medians over repeated runs."""

from __future__ import annotations

import io
import time

import pytest
import torch
from rich.console import Console
from torch import nn

from opscope import Profiler, Report
from opscope.cli import main
from opscope.compare import time_model
from opscope.records import OUTSIDE_NAME
from opscope.report import median_timing
from opscope.zoo import ZooModel
from helpers import OpLog


def small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()).eval()


def test_every_call_gets_a_positive_time_within_the_forward() -> None:
    model = small()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), Profiler(model, timing=True) as p:
        start = time.perf_counter_ns()
        model(x)
        model(x)
        wall = time.perf_counter_ns() - start
    assert len(p.records) == 6
    assert all(r.time_ns is not None and r.time_ns > 0 for r in p.records)
    assert sum(r.time_ns for r in p.records) <= wall
    assert p.records[0].throughput == p.records[0].ops / (p.records[0].time_ns * 1e-9)


def test_untimed_records_have_no_time() -> None:
    model = small()
    with Profiler(model) as p:
        model(torch.randn(1, 3, 8, 8))
    assert {r.time_ns for r in p.records} == {None}


def test_timing_on_meta_is_refused() -> None:
    model = small().to("meta")
    with pytest.raises(ValueError, match="timing needs real execution"):
        with Profiler(model, timing=True):
            pass
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 0
    with pytest.raises(ValueError, match="without summary=True"):
        Profiler(model, timing=True, summary=True)


def test_cli_refuses_time_on_meta(capsys) -> None:
    assert main(["profile", "resnet18", "--time"]) == 2
    assert "--time needs real execution" in capsys.readouterr().err


def test_cpu_timing_reads_no_tensor_data_and_never_synchronises() -> None:
    model = small()
    x = torch.randn(1, 3, 16, 16)
    with OpLog() as bare:
        model(x)
    with Profiler(model, timing=True), OpLog() as timed:
        model(x)
    assert timed.ops == bare.ops  # no .item(), copy or synchronising op from the hooks


def test_median_timing_over_runs() -> None:
    model = small()
    reports = []
    for _ in range(3):
        with torch.inference_mode(), Profiler(model, timing=True) as p:
            model(torch.randn(1, 3, 16, 16))
        reports.append(p.report)
    merged = median_timing(reports)
    for position, record in enumerate(merged.records):
        times = sorted(r.records[position].time_ns for r in reports)
        assert record.time_ns == times[1]
        assert record.time_spread_ns == times[2] - times[0]
        assert record.ops == reports[0].records[position].ops
    with pytest.raises(ValueError, match="different numbers of calls"):
        median_timing([reports[0], Report(records=(), hooked_modules=3)])
    assert Report.from_json(merged.to_json()) == merged


def test_time_model_and_the_timed_table() -> None:
    report, *_ = time_model(ZooModel("squeezenet1_1", "classification"), (1, 3, 64, 64), repeat=3, warmup=1)
    assert all(r.time_ns > 0 and r.time_spread_ns is not None for r in report.records)
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    report.print(console=console)
    header = next(line for line in console.export_text().splitlines() if line.startswith("Layer"))
    assert header.split()[-3:] == ["Time", "Spread", "Ops/s"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_event_timing_synchronises_once_when_read() -> None:
    model = small().cuda()
    x = torch.randn(8, 3, 64, 64, device="cuda")
    model(x)
    torch.cuda.set_sync_debug_mode("error")  # any synchronisation inside the block raises
    try:
        with Profiler(model, timing=True) as p:
            model(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(r.time_ns > 0 for r in p.records)  # resolved here, after one synchronisation


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backward_timing_never_waits_inside_the_block() -> None:
    model = small().cuda().train()
    x = torch.randn(8, 3, 64, 64, device="cuda")
    model(x).sum().backward()
    torch.cuda.set_sync_debug_mode("error")  # any synchronisation inside the block raises
    try:
        with Profiler(model, timing=True) as p:
            model(x).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    backward = [r for r in p.records if r.phase == "backward" and r.name != OUTSIDE_NAME]
    assert backward and all(r.time_ns > 0 for r in backward)
