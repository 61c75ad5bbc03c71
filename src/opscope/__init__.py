"""opscope: exact per-layer operation counts for PyTorch models, from the shapes that really run.

Example:
    >>> import torch, torchvision
    >>> from opscope import Profiler
    >>> model = torchvision.models.resnet18(weights=None).eval()
    >>> with Profiler(model, include=[torch.nn.Conv2d]) as p:
    ...     _ = model(torch.randn(1, 3, 224, 224))
    >>> p.total_ops, len(p.records)
    (3624638976, 20)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from opscope.version import __version__

if TYPE_CHECKING:
    from opscope.distributed import DistributedReport
    from opscope.formulas import Call, ConvConfig, Formula, conv_ops, register
    from opscope.profiler import Profiler
    from opscope.records import LayerRecord
    from opscope.report import Report

# The public names, by the module that defines them. They are imported when first used, so
# that `import opscope` (and the command line's --help) does not load torch.
_EXPORTS = {
    "Call": "opscope.formulas",
    "ConvConfig": "opscope.formulas",
    "DistributedReport": "opscope.distributed",
    "Formula": "opscope.formulas",
    "LayerRecord": "opscope.records",
    "Profiler": "opscope.profiler",
    "Report": "opscope.report",
    "conv_ops": "opscope.formulas",
    "register": "opscope.formulas",
}

__all__ = [
    "Call",
    "ConvConfig",
    "DistributedReport",
    "Formula",
    "LayerRecord",
    "Profiler",
    "Report",
    "__version__",
    "conv_ops",
    "register",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'opscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
