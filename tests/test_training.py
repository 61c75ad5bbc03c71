"""A training step through the Profiler: the forward, the backward pass and the optimizer step
each counted as its own phase, checked against ``FlopCounterMode`` (the MACs) and closed forms
(gradient accumulation, SGD and AdamW steps), and the command line's ``--train``.

The operator formulas of the backward pass and of the optimizers are tested one by one in
``tests/formulas/test_backward_*.py`` and ``tests/formulas/test_optimizer.py``; these tests
take whole models through the user's entry point.
"""

from __future__ import annotations

import dataclasses
import json
import time
import weakref
from collections.abc import Callable

import pytest
import torch
import torchvision
from formulas.step_harness import flop_counter_phases
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from opscope import Profiler
from opscope.cli import main
from opscope.meta import build_on_meta
from opscope.records import OUTSIDE_NAME
from opscope.report import Report
from opscope.tables import notes

SIZE = 32  # small images: the same operators as at 224, a fraction of the time


def resnet18(frozen: bool = False) -> nn.Module:
    """resnet18 on meta in training mode; ``frozen``: its stem and first stage without
    gradients (no weight gradient there, no input gradient for the first convolution)."""
    model = build_on_meta(lambda: torchvision.models.resnet18(weights=None)).train()
    if frozen:
        for part in (model.conv1, model.bn1, model.layer1):
            part.requires_grad_(False)
    return model


def batch() -> torch.Tensor:
    return torch.empty(2, 3, SIZE, SIZE, device="meta")


def trainable_elements(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def profiled_step(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Report:
    with Profiler(model) as profiler:
        model(batch()).sum().backward()
        if optimizer is not None:
            optimizer.step()
    return profiler.report


def flop_counter_forward_backward(model: nn.Module) -> tuple[int, int]:
    """``FlopCounterMode``'s FLOPs of the forward and of the backward of the same step."""
    flops = flop_counter_phases(model, batch())
    return flops["forward"], flops["backward"]


@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen stem"])
def test_each_phase_has_flop_counter_modes_macs_and_nothing_is_uncounted(frozen: bool) -> None:
    model = resnet18(frozen)
    report = profiled_step(model)
    phases = report.by_phase()
    forward_flops, backward_flops = flop_counter_forward_backward(model)
    assert list(phases) == ["forward", "backward"]
    assert 2 * phases["forward"][1] == forward_flops
    assert 2 * phases["backward"][1] == backward_flops
    assert report.uncounted_ops == ()
    assert sum(ops for ops, _ in phases.values()) == report.total_ops
    assert sum(macs for _, macs in phases.values()) == report.total_macs


def test_frozen_layers_cost_less_backward_and_the_same_forward() -> None:
    trainable, frozen = profiled_step(resnet18()), profiled_step(resnet18(frozen=True))
    assert frozen.by_phase()["forward"] == trainable.by_phase()["forward"]
    assert frozen.by_phase()["backward"][0] < trainable.by_phase()["backward"][0]


def test_an_accumulated_gradient_is_added_once_per_parameter_element() -> None:
    """Two backward passes before a step: each computes the same gradients, and the second
    adds its gradients into the first's, one addition per trainable element."""
    model = resnet18()
    once = profiled_step(model).by_phase()["backward"][0]
    model.zero_grad(set_to_none=True)
    with Profiler(model) as profiler:
        for _ in range(2):
            model(batch()).sum().backward()
    assert profiler.report.by_phase()["backward"][0] == 2 * once + trainable_elements(model)


def test_an_sgd_step_with_momentum_in_closed_form() -> None:
    """SGD with momentum: the first step starts the buffer as a copy of the gradient and
    updates each weight ``p - lr * buf`` (2 operations per element); later steps first update
    the buffer ``momentum * buf + grad`` (2 more)."""
    model = resnet18()
    elements = trainable_elements(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first = profiled_step(model, optimizer).by_phase()["step"]
    optimizer.zero_grad()
    second = profiled_step(model, optimizer).by_phase()["step"]
    assert (first, second) == ((2 * elements, 0), (4 * elements, 0))


@pytest.mark.parametrize("foreach", [False, True])
def test_an_adamw_step_in_closed_form(foreach: bool) -> None:
    """AdamW (weight decay 0.01): 14 operations per trainable element and one per parameter
    tensor (its step count), for the for-loop and the foreach implementations alike."""
    model = resnet18(frozen=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, foreach=foreach)
    report = profiled_step(model, optimizer)
    assert report.by_phase()["step"] == (14 * trainable_elements(model) + len(trainable), 0)
    assert [r.name for r in report.records if r.phase == "step"] == ["(optimizer step)"]
    assert report.uncounted_ops == ()


def test_the_step_is_counted_once_however_the_optimizer_is_hooked() -> None:
    """The optimizer's step hooks are removed on exit: a step after the block is not
    counted, and a second block counts its own step only."""
    model = resnet18()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    report = profiled_step(model, optimizer)
    optimizer.step()  # outside any profiler
    again = profiled_step(model, optimizer)
    assert (
        report.by_phase()["step"] == again.by_phase()["step"] == (2 * trainable_elements(model), 0)
    )


def test_mixed_precision_counts_the_same_products() -> None:
    """Under autocast (bfloat16 on the CPU) the casts are data movement (0 operations): the
    forward counts what it counts in float32, and each phase's MACs are still
    ``FlopCounterMode``'s FLOPs / 2."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)
    )
    x = torch.randn(2, 3, 8, 8)

    def step(autocast: bool) -> tuple[int, int]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            output = model(x)
        loss = output.float().sum()
        forward = counter.get_total_flops()
        loss.backward()
        return forward, counter.get_total_flops() - forward

    with Profiler(model) as mixed, FlopCounterMode(display=False) as counter:
        forward_flops, backward_flops = step(autocast=True)
    with Profiler(model) as full, FlopCounterMode(display=False) as counter:
        step(autocast=False)
    phases = mixed.report.by_phase()
    assert mixed.report.uncounted_ops == ()
    assert (2 * phases["forward"][1], 2 * phases["backward"][1]) == (forward_flops, backward_flops)
    assert phases["forward"] == full.report.by_phase()["forward"]


def test_timing_gives_each_module_its_backward_time() -> None:
    """With ``timing=True`` a module's backward record has the time of the autograd nodes
    its forward made; together they fit inside the backward pass's wall time."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).train()
    x = torch.randn(2, 3, SIZE, SIZE)
    with Profiler(model, timing=True) as p:
        loss = model(x).sum()
        start = time.perf_counter_ns()
        loss.backward()
        wall = time.perf_counter_ns() - start
    backward = [r for r in p.records if r.phase == "backward"]
    owned = [r for r in backward if r.name != OUTSIDE_NAME]
    assert owned and all(r.time_ns is not None and r.time_ns > 0 for r in owned)
    assert sum(r.time_ns for r in owned) <= wall
    assert all(r.throughput for r in owned if r.ops)
    # The loss's sum() runs outside the model: its node has no module to be timed with.
    assert all(r.time_ns is None for r in backward if r.name == OUTSIDE_NAME)


def test_each_autograd_node_is_timed_once_per_step_and_not_after_the_block() -> None:
    """A parameter's gradient accumulator is the same node at every step of a loop: it is
    hooked once a block, not once more at each forward (which made each step slower than the
    last and timed the accumulators many times over), and no hook is left on it after the
    block (later steps ran opscope's hooks and grew the finished profiler's times)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 8)

    losses = []

    def step() -> None:
        losses[:] = [model(x).sum()]  # as in a loop, the last loss lives until the next one
        losses[0].backward()
        optimizer.step()
        optimizer.zero_grad()

    def timed_nodes(profiler: Profiler) -> int:
        return sum(map(len, profiler._block.timer._backward.values()))

    timed = []
    with Profiler(model, timing=True) as p:
        for _ in range(4):
            step()
            timed.append(timed_nodes(p))
    # per Linear: addmm's and the transpose's nodes, and the weight's and bias's accumulators
    assert timed == [8, 16, 24, 32]
    for _ in range(3):
        step()
    assert timed_nodes(p) == 32
    assert not p._block.tracker._accumulators  # the parameters' nodes are not held either


def test_gradient_clipping_between_backward_and_step_is_work_outside_the_model() -> None:
    """As the README says: clipping is neither the backward pass nor the optimizer's step;
    it is the block's work outside the model, in phase forward."""
    model = nn.Linear(64, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 64)
    phases = []
    for clip in (False, True):
        with Profiler(model) as p:
            model(x).sum().backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        optimizer.zero_grad()
        outside = sum(r.ops for r in p.records if r.name == OUTSIDE_NAME and r.phase == "forward")
        phases.append((p.report.by_phase(), outside))
    (plain, plain_outside), (clipped, clipped_outside) = phases
    assert clipped["backward"] == plain["backward"] and clipped["step"] == plain["step"]
    grown = clipped["forward"][0] - plain["forward"][0]
    assert grown > 0 and clipped_outside - plain_outside == grown


@dataclasses.dataclass
class _Encoded:
    hidden: torch.Tensor


class _Encoder(nn.Module):
    def __init__(self, as_dataclass: bool) -> None:
        super().__init__()
        self.linear, self.as_dataclass = nn.Linear(8, 8), as_dataclass

    def forward(self, x: torch.Tensor) -> object:
        hidden = torch.tanh(self.linear(x) * 2)  # the encoder's own work: a mul and a tanh
        return _Encoded(hidden) if self.as_dataclass else (hidden,)


@pytest.mark.parametrize("as_dataclass", [False, True])
def test_a_module_returning_a_dataclass_keeps_its_own_backward(as_dataclass: bool) -> None:
    """The nodes a module's forward made are found from its output, a dataclass instance's
    fields included, as its output shapes are (before, a dataclass output gave its module's
    backward to the module that called it)."""
    encoder = _Encoder(as_dataclass)
    model = nn.ModuleDict({"encoder": encoder})
    with Profiler(model) as p:
        out = encoder(torch.randn(4, 8))
        (out.hidden if as_dataclass else out[0]).sum().backward()
    backward = {r.name: r.ops for r in p.records if r.phase == "backward"}
    # tanh_backward (a multiply and a subtract and a multiply: 3) and mul's (1) per element
    assert backward["encoder"] == 4 * 8 * 4
    assert "encoder.linear" in backward


@pytest.mark.parametrize("inplace", [False, True])
def test_an_in_place_module_keeps_its_own_backward(inplace: bool) -> None:
    """``ReLU(inplace=True)`` gives its input a new autograd node: its backward is still its
    own, not its parent's."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=inplace), nn.Linear(4, 2))
    with Profiler(model) as p:
        model(torch.randn(3, 4)).sum().backward()
    backward = {r.name: r.ops for r in p.records if r.phase == "backward"}
    assert backward["1"] == 3 * 4  # threshold_backward: one comparison per element
    assert set(backward) == {"0", "1", "2"}


def test_a_block_around_the_backward_alone_says_what_it_cannot_tell() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    loss = model(torch.randn(3, 4)).sum()
    with Profiler(model) as p:
        loss.backward()
    text = " ".join(notes(p.report))
    assert "The backward pass ran without the model's forward in the block" in text
    assert "Never called" not in text
    assert {r.name for r in p.records} == {OUTSIDE_NAME} and p.report.by_phase()["backward"][0]


def test_a_loss_module_is_the_steps_own_work() -> None:
    """``nn.CrossEntropyLoss()`` called in the block is counted like ``F.cross_entropy``,
    outside the model; another model called in the block is still not counted."""
    model, other = nn.Linear(5, 5), nn.Linear(5, 5)
    x, target = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])

    def forward_outside(loss: Callable[[torch.Tensor], torch.Tensor]) -> int:
        with Profiler(model) as p:
            loss(model(x))
        return sum(r.ops for r in p.records if r.name == OUTSIDE_NAME)

    class PlainLoss(nn.Module):  # a loss that is not an nn.modules.loss._Loss (timm's)
        def forward(self, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(y, target)

    module = forward_outside(lambda y: nn.CrossEntropyLoss()(y, target))
    assert module == forward_outside(lambda y: F.cross_entropy(y, target)) > 0
    assert forward_outside(lambda y: PlainLoss()(y, target)) == module  # was 0: foreign
    assert forward_outside(other) == 0


class _BufferTeacher(nn.Module):
    """A frozen teacher keeping its weight in a buffer: no parameters, still another model."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(10, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor.*deprecated:UserWarning")
def test_a_teacher_without_parameters_is_still_another_model() -> None:
    """Only a module without state of its own (a plain loss, a transform) is the block's
    work: a teacher keeping its weights in buffers, or quantized (its layers hold packed
    weights, no parameters), is another model, not counted."""
    student, x = nn.Linear(64, 10), torch.randn(32, 64)
    float_teacher = nn.Sequential(nn.Linear(64, 10))
    quantized = torch.ao.quantization.quantize_dynamic(float_teacher, {nn.Linear}, torch.qint8)
    assert next(quantized.parameters(), None) is None
    outside = []
    for teacher in (float_teacher, quantized, _BufferTeacher()):
        with Profiler(student) as p:
            with torch.no_grad():
                target = teacher(x)
            ((student(x) - target) ** 2).mean()
        outside.append(sum(r.ops for r in p.records if r.name == OUTSIDE_NAME))
    assert outside == [32 * 10 * 3] * 3  # the loss's sub, pow and mean, not the teacher


def test_an_inputs_gradient_accumulator_is_not_held() -> None:
    """The parameters' accumulators are held for the block (they live as long as the
    model); an input's is not, nor its tensor: a saliency loop's inputs were all kept."""
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    inputs = []
    with Profiler(model) as p:
        for _ in range(5):
            x = torch.randn(3, 8, requires_grad=True)
            model(x).sum().backward()
            inputs.append(weakref.ref(x))
        del x
        assert len(p._block.tracker._accumulators) == 4  # two weights, two biases
        assert sum(ref() is not None for ref in inputs) == 0


def test_the_models_own_forward_hook_is_its_work() -> None:
    """A forward hook of the profiled model itself runs after its forward, while no module
    of the model runs: the block's work outside the model, not another model's (it was not
    counted; the same hook on a child was)."""
    model = nn.Sequential(nn.Linear(8, 8))
    model.register_forward_hook(lambda module, args, output: output * 2)
    with Profiler(model) as p:
        model(torch.randn(4, 8))
    assert [(r.name, r.ops) for r in p.records] == [("0", 4 * 8 * 16), (OUTSIDE_NAME, 4 * 8)]


def test_the_command_line_writes_the_phases(capsys: pytest.CaptureFixture[str]) -> None:
    size = f"2x3x{SIZE}x{SIZE}"
    assert main(["profile", "resnet18", "--train", "--input", size, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    phases = data["by_phase"]
    assert list(phases) == ["forward", "backward", "step"]
    assert sum(phase["ops"] for phase in phases.values()) == data["total_ops"]
    model = resnet18()
    forward_flops, backward_flops = flop_counter_forward_backward(model)
    assert (2 * phases["forward"]["macs"], 2 * phases["backward"]["macs"]) == (
        forward_flops,
        backward_flops,
    )
    # The default optimizer, SGD with momentum, after the warm-up step: a step of the loop.
    assert phases["step"] == {"ops": 4 * trainable_elements(model), "macs": 0}
    assert main(["profile", "resnet18", "--train", "--input", size, "--warmup", "0",
                 "--format", "json"]) == 0  # fmt: skip
    first_step = json.loads(capsys.readouterr().out)["by_phase"]["step"]
    assert first_step == {"ops": 2 * trainable_elements(model), "macs": 0}  # a buffer made
    assert Report.from_json(json.dumps(data)).by_phase() == {
        name: (phase["ops"], phase["macs"]) for name, phase in phases.items()
    }


def test_a_timed_training_step_reports_its_utilisation(capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["profile", "resnet18", "--train", "--input", "2x3x32x32", "--device", "cpu"]
    timed = ["--time", "--repeat", "1", "--warmup", "0", "--peak-flops", "1e12"]
    assert main([*arguments, *timed]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the note is wrapped to the terminal
    assert "Operations by phase: forward" in out and "step" in out
    assert "One training step:" in out and "(median of 1, unprofiled)" in out
    assert "model FLOPs utilisation" in out and "of 1.00 TFLOP/s" in out
    assert "conv1 [backward]" in out  # each layer timed, its backward too
    assert "fc [backward]" in out  # not "fc ×3": its three operators are not calls of fc
    assert main([*arguments, "--time", "--repeat", "1", "--warmup", "0"]) == 0
    assert "give --peak-flops for the model FLOPs utilisation" in " ".join(
        capsys.readouterr().out.split()
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--optimizer", "adamw"], "--optimizer goes with --train"),
        (["--train", "--peak-flops", "1e12"], "--peak-flops goes with --train --time"),
        (["--train", "--coverage"], "--coverage measures a forward pass: not with --train"),
        (["--warmup", "2"], "--warmup goes with --time or --train"),
    ],
)
def test_training_options_out_of_place_are_refused(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", "resnet18", *extra]) == 2
    assert message in capsys.readouterr().err
