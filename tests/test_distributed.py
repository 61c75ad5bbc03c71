"""Profiling in a multi-process job: two gloo ranks on the CPU, spawned by the test.

Rank 0 runs three batches of 4, rank 1 two batches of 4 and a last batch of 2 (an uneven
last batch). The gathered totals are checked against the same batches profiled in this
process, without torch.distributed.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import socket
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn

from opscope import Profiler, Report
from opscope.distributed import DistributedReport, reduce

WORLD_SIZE = 2
TIMEOUT_S = 120  # for the whole job: start-up, profiling and gathering

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this build of torch has no torch.distributed with the gloo backend",
)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    )


def batches(rank: int) -> list[torch.Tensor]:
    """The rank's shard: 3 batches of 4 on rank 0; 4, 4 and an uneven last 2 on rank 1."""
    sizes = [4, 4, 4] if rank == 0 else [4, 4, 2]
    generator = torch.Generator().manual_seed(rank)
    return [torch.randn(size, 3, 6, 6, generator=generator) for size in sizes]


def profile(model: nn.Module, shard: list[torch.Tensor], *, backward: bool) -> Profiler:
    with Profiler(model) as p:
        for inputs in shard:
            loss = model(inputs).sum()  # counted, outside the model
            if backward:
                loss.backward()  # not counted: the forward's count is the same
    return p


def _loopback_interface() -> str | None:
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in names if name.startswith("lo")), None)


def _rank_main(rank: int, port: int, out: str) -> None:
    """One rank: profile its shard plainly, then wrapped in DDP, reducing each time; every rank
    writes what reduce() gave it (the receiving rank, the summary) to ``out``."""
    torch.set_num_threads(1)
    interface = _loopback_interface()
    if interface is not None:  # keep gloo's connections on the loopback interface
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    try:
        # Plain data parallel, gathered on rank 1 over an explicit group.
        p = profile(small_model(), batches(rank), backward=False)
        _write(out, "plain", rank, reduce(p.report, group=dist.new_group(), dst=1))
        # DDP, gathered on rank 0; the wrapper is profiled: DDP calls the inner module.
        ddp = nn.parallel.DistributedDataParallel(small_model())
        p = profile(ddp, batches(rank), backward=True)
        _write(out, "ddp", rank, p.reduce())  # the Profiler method, default group and dst
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _write(out: str, job: str, rank: int, summary: DistributedReport | None) -> None:
    result: dict = {"got": None}
    if summary is not None:
        console = Console(file=io.StringIO(), width=120)
        summary.print(console)
        result = {
            "summary": summary.to_dict(),
            "names": [sorted({r.name for r in report.records}) for report in summary.reports],
            "printed": console.file.getvalue(),
        }
    Path(out, f"{job}-rank{rank}.json").write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Spawn the ranks once for the module, wait at most TIMEOUT_S; the folder they wrote to."""
    out = tmp_path_factory.mktemp("distributed")
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [
        context.Process(target=_rank_main, args=(rank, port, str(out)), daemon=True)
        for rank in range(WORLD_SIZE)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        hung = [process for process in processes if process.is_alive()]
        for process in hung:
            process.kill()
            process.join()
    assert not hung, f"the distributed job did not finish in {TIMEOUT_S} s: killed {len(hung)} rank(s)"
    codes = [process.exitcode for process in processes]
    assert codes == [0] * WORLD_SIZE, f"ranks exited with {codes} (their tracebacks are above)"
    return out


def results(out: Path, job: str) -> list[dict]:
    return [json.loads((out / f"{job}-rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


def expected(backward: bool) -> tuple[list[int], list[int]]:
    """Each rank's ops and calls, profiled in this process on the same model and batches."""
    model = small_model()
    reports = [profile(model, batches(rank), backward=backward).report for rank in range(WORLD_SIZE)]
    return [r.total_ops for r in reports], [r.total_calls for r in reports]


def check_summary(summary: dict, per_rank_and_calls: tuple[list[int], list[int]]) -> None:
    per_rank = [rank["ops"] for rank in summary["ranks"]]
    assert summary["world_size"] == WORLD_SIZE
    assert summary["total_ops"] == sum(per_rank)
    assert (per_rank, [rank["calls"] for rank in summary["ranks"]]) == per_rank_and_calls
    assert summary["reference_rank"] == 0
    assert [rank["differs"] for rank in summary["ranks"]] == [False, True]
    fewer = 100 * (per_rank[0] - per_rank[1]) / per_rank[0]
    assert summary["differing_ranks"] == [
        {"rank": 1, "reason": f"rank 1: {fewer:.3g}% fewer ops than rank 0"}
    ]


def test_ddp_ranks_are_gathered_on_rank_0(job: Path) -> None:
    on_rank_0, on_rank_1 = results(job, "ddp")
    assert on_rank_1 == {"got": None}
    # A training step: what one process counts, and DDP's own averaging of the gradients
    # in the backward pass (its communication has no formula: listed, not counted).
    summary = on_rank_0["summary"]
    local_ops, local_calls = expected(backward=True)
    ddp_ops = [rank["ops"] for rank in summary["ranks"]]
    assert all(ddp > local for ddp, local in zip(ddp_ops, local_ops))
    check_summary(summary, (ddp_ops, [rank["calls"] for rank in summary["ranks"]]))
    layers = ["(outside the model)", *(f"module.{index}" for index in range(5))]  # the loss
    assert on_rank_0["names"] == [layers, layers]
    assert "reference" in on_rank_0["printed"] and "fewer ops than rank 0" in on_rank_0["printed"]


def test_plain_ranks_are_gathered_on_dst_over_a_group(job: Path) -> None:
    on_rank_0, on_rank_1 = results(job, "plain")
    assert on_rank_0 == {"got": None}
    check_summary(on_rank_1["summary"], expected(backward=False))
    assert on_rank_1["names"] == [["(outside the model)", "0", "1", "2", "3", "4"]] * 2


# -- without processes -------------------------------------------------------------------


def reports(*shards: list[tuple[int, ...]], summary: bool = False) -> DistributedReport:
    """A DistributedReport of ranks that ran batches of these shapes, profiled here."""
    model = small_model().eval()
    profiled = []
    for shapes in shards:
        with torch.no_grad(), Profiler(model, summary=summary) as p:
            for shape in shapes:
                model(torch.zeros(shape))
        profiled.append(p.report)
    return DistributedReport(tuple(profiled))


def test_reduce_needs_an_initialized_process_group() -> None:
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        reduce(Report(records=(), hooked_modules=0))


def test_the_majority_profile_is_the_reference() -> None:
    full, short = [(4, 3, 6, 6)] * 3, [(4, 3, 6, 6)] * 2
    gathered = reports(short, full, full, full)
    assert gathered.world_size == 4
    assert gathered.reference_rank == 1
    assert gathered.differing_ranks == (0,)
    assert gathered.differences[0] == "5 fewer calls, 33.3% fewer ops than rank 1"
    assert gathered.total_ops == sum(gathered.per_rank_ops) == 11 * gathered.reports[0].total_ops // 2


def test_a_tie_is_broken_by_the_lowest_rank_and_more_is_flagged_too() -> None:
    gathered = reports([(2, 3, 6, 6)], [(4, 3, 6, 6)])
    assert (gathered.reference_rank, gathered.differing_ranks) == (0, (1,))
    assert gathered.differences[1] == "100% more ops than rank 0"


def test_equal_ranks_and_summary_mode_are_not_flagged() -> None:
    shapes = [(4, 3, 6, 6), (2, 3, 6, 6), (4, 3, 6, 6)]
    detailed, summary = reports(shapes, shapes), reports(shapes, summary=True)
    assert detailed.differing_ranks == ()
    mixed = DistributedReport((detailed.reports[0], summary.reports[0]))
    assert mixed.differing_ranks == ()
    assert mixed.to_dict()["differing_ranks"] == []


def test_same_totals_in_other_layers_name_the_layers() -> None:
    gathered = reports([(4, 3, 6, 6)], [(4, 3, 6, 6)])
    first, second = gathered.reports
    # Same calls and ops under other names: rank 1 profiled the DDP wrapper, rank 0 the model.
    wrapped = tuple(replace(record, name=f"module.{record.name}") for record in second.records)
    other = Report(records=wrapped, hooked_modules=second.hooked_modules)
    assert DistributedReport((first, other)).differences == {
        1: "same totals as rank 0, but other calls or ops in 0, 1, 2 and 7 more"
    }


def test_print_shows_one_row_per_rank_and_the_flag() -> None:
    gathered = reports([(4, 3, 6, 6)] * 2, [(4, 3, 6, 6), (2, 3, 6, 6)])
    console = Console(file=io.StringIO(), width=100)
    gathered.print(console)
    printed = console.file.getvalue()
    assert "2 ranks" in printed and "reference" in printed and "Total" in printed
    assert "25% fewer ops than rank 0" in printed


def test_empty_reports_share_is_none() -> None:
    gathered = reports([], [])
    assert gathered.total_ops == 0 and gathered.differing_ranks == ()
    assert [rank["share"] for rank in gathered.to_dict()["ranks"]] == [None, None]
    json.dumps(gathered.to_dict())
