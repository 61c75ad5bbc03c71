"""Profile a torchvision ResNet-18: its per-layer table, the totals and the MACs."""

import torch
import torchvision

from opscope import Profiler

model = torchvision.models.resnet18(weights=None).eval()
with torch.inference_mode(), Profiler(model) as profiler:
    model(torch.randn(1, 3, 224, 224))

profiler.print(sort="ops", top=10)
report = profiler.report
print(f"Exact operations of the whole forward pass: {report.total_ops:,}")
print(f"Of which Conv2d layers: {report.ops_of('Conv2d'):,}")
print(f"Multiply-accumulates (torchvision's 'GFLOPS'): {report.total_macs / 1e9:.2f} G")
