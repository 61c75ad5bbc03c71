"""The op harness for a whole training step: the forward, ``loss.backward()`` and an optimizer
step, each counted apart at the ATen-operator level (no hooks), under the same dispatch mode.

:class:`StepCounter` is :class:`~formulas.op_harness.OpCounter` with one
:class:`~formulas.op_harness.OpCounts` per phase: whatever the autograd engine runs during
``backward()`` is the backward's, whatever ``optimizer.step()`` runs the optimizer's.
:func:`flop_counter_phases` gives ``FlopCounterMode``'s FLOPs per phase of the same step, the
backward's being its forward-and-backward total minus its forward total.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from formulas.op_harness import OpCounter, OpCounts
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PHASES = ("forward", "backward", "optimizer")

Loss = Callable[[Any], torch.Tensor]


def total_loss(output: Any) -> torch.Tensor:
    """The sum of every element of the output (of its first tensor): a gradient of ones."""
    first = output if isinstance(output, torch.Tensor) else output[0]
    return first.sum()


class StepCounter(OpCounter):
    """An :class:`OpCounter` whose counts go to the phase that is running."""

    def __init__(self) -> None:
        super().__init__()
        self.phases: dict[str, OpCounts] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count what runs inside the block as phase ``name``."""
        previous = self.counts
        self.counts = self.phases.setdefault(name, OpCounts())
        try:
            yield
        finally:
            self.counts = previous


def count_step(
    model: nn.Module,
    *inputs: Any,
    loss: Loss = total_loss,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, OpCounts]:
    """The op-level counts of one training step of ``model`` on ``inputs``, by phase
    (``"optimizer"`` only with an optimizer). The gradients are cleared first, so that none
    is accumulated into an earlier one."""
    model.zero_grad(set_to_none=True)
    with StepCounter() as counter:
        with counter.phase("forward"):
            value = loss(model(*inputs))
        with counter.phase("backward"):
            value.backward()
        if optimizer is not None:
            with counter.phase("optimizer"):
                optimizer.step()
    return counter.phases


def count_optimizer_step(optimizer: torch.optim.Optimizer) -> OpCounts:
    """The op-level counts of one ``optimizer.step()`` (the gradients already set)."""
    with StepCounter() as counter, counter.phase("optimizer"):
        optimizer.step()
    return counter.phases["optimizer"]


def flop_counter_phases(model: nn.Module, *inputs: Any, loss: Loss = total_loss) -> dict[str, int]:
    """``FlopCounterMode``'s FLOPs of the forward and of the backward of one step."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        value = loss(model(*inputs))
        forward = counter.get_total_flops()
        value.backward()
    return {"forward": forward, "backward": counter.get_total_flops() - forward}


def flop_counter_flops_of(run: Callable[[], Any]) -> int:
    """``FlopCounterMode``'s FLOPs of ``run()`` (in grad mode, as a backward operator runs)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()
