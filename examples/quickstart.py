"""Profile a torchvision ResNet-18 and print its per-layer Conv2d table."""

import torch
import torchvision

from opscope import Profiler

model = torchvision.models.resnet18(weights=None).eval()
with torch.inference_mode(), Profiler(model) as profiler:
    model(torch.randn(1, 3, 224, 224))

profiler.print()
print(f"Exact Conv2d operations: {profiler.total_ops:,}")
