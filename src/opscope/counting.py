"""Counting: everything that runs when results are read.

The hooked modules (sites), their settings and parameter counts, the formulas applied to the
logged calls, and the records built from them. Nothing here runs inside the forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.parameter import is_lazy

from opscope.capture import LoggedCall, TensorMeta
from opscope.formulas.registry import Call, Formula
from opscope.records import LayerRecord


@dataclass(frozen=True)
class Site:
    """A hooked module: its qualified name, the module and the formula that counts it."""

    name: str
    module: nn.Module
    formula: Formula

    @property
    def module_type(self) -> str:
        return type(self.module).__name__


@dataclass(frozen=True)
class Description:
    """A site's settings (its formula's config), parameter count and parameter bytes."""

    config: Any
    params: int
    param_bytes: int


def describe(site: Site) -> Description | None:
    """The site's settings, parameter count and bytes; None while its parameters are lazy
    (``nn.LazyConv2d`` before its first call)."""
    parameters = list(site.module.parameters())
    if any(is_lazy(p) for p in parameters):
        return None
    return Description(
        site.formula.describe(site.module),
        sum(p.numel() for p in parameters),
        sum(p.numel() * p.element_size() for p in parameters),
    )


def tensor_bytes(metas: tuple[TensorMeta, ...]) -> int:
    """Bytes the tensors occupy, from metadata only: numel times the dtype's element size."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in metas)


class Counter:
    """Applies the sites' formulas to logged calls. Each site is described once (when first
    needed: a lazy module has its parameters by then), each distinct call counted once."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self.sites = sites
        self._descriptions: dict[int, Description] = {}

    def description(self, index: int) -> Description:
        """Site ``index``'s settings and parameters (cached once they are final)."""
        description = self._descriptions.get(index)
        if description is None:
            site = self.sites[index]
            description = describe(site)
            if description is None:  # still lazy: settings known, parameters not yet
                return Description(site.formula.describe(site.module), 0, 0)
            self._descriptions[index] = description
        return description

    def count(self, logged: LoggedCall) -> tuple[Call, int]:
        """The call's shapes, as its formula sees them, and its exact operations.

        Raises:
            RuntimeError: the formula failed; the message names the module and the shapes.
        """
        index, inputs, outputs, training = logged
        site = self.sites[index]
        call = Call(
            tuple(tuple(shape) for shape, _ in inputs),
            tuple(tuple(shape) for shape, _ in outputs),
            training,
        )
        try:
            return call, site.formula.count(self.description(index).config, call)
        except Exception as error:
            raise RuntimeError(
                f"cannot count {site.name or '(model)'} ({site.module_type}) on inputs "
                f"{call.inputs} and outputs {call.outputs}: {error}"
            ) from error

    def records(
        self,
        distinct: Sequence[LoggedCall],
        calls: Sequence[tuple[int, int]],
        times: Sequence[int | None],
    ) -> list[LayerRecord]:
        """One record per ``(distinct call number, calls)`` pair, in order, with its time."""
        counted: dict[int, tuple[Call, int]] = {}
        calls_per_site = [0] * len(self.sites)
        records = []
        for (code, count), time_ns in zip(calls, times):
            logged = distinct[code]
            index = logged[0]
            site, description = self.sites[index], self.description(index)
            calls_per_site[index] += 1
            if code not in counted:
                counted[code] = self.count(logged)
            call, ops = counted[code]
            records.append(
                LayerRecord(
                    name=site.name,
                    module_type=site.module_type,
                    family=site.formula.module_type.__name__,
                    call_index=calls_per_site[index],
                    input_shapes=call.inputs,
                    output_shapes=call.outputs,
                    training=call.training,
                    config=description.config,
                    params=description.params,
                    ops=ops * count,
                    calls=count,
                    time_ns=time_ns,
                    input_bytes=tensor_bytes(logged[1]) * count,
                    output_bytes=tensor_bytes(logged[2]) * count,
                    param_bytes=description.param_bytes * count,
                )
            )
        return records
