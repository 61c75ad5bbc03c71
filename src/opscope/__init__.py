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

from opscope.distributed import DistributedReport
from opscope.formulas import Call, ConvConfig, Formula, conv_ops, register
from opscope.profiler import Profiler
from opscope.records import LayerRecord
from opscope.report import Report
from opscope.version import __version__

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
