"""Count one training step of a ResNet-18: the forward, the loss, the backward pass and an
AdamW step, each phase apart, with each module's forward and backward in the tree."""

import torch
import torchvision

from opscope import Profiler

model = torchvision.models.resnet18(weights=None).train()
optimizer = torch.optim.AdamW(model.parameters())
criterion = torch.nn.CrossEntropyLoss()
images, labels = torch.randn(8, 3, 64, 64), torch.randint(0, 1000, (8,))

with Profiler(model, timing=True) as profiler:
    loss = criterion(model(images), labels)
    loss.backward()
    optimizer.step()

profiler.print(depth=1)
for phase, (ops, macs) in profiler.report.by_phase().items():
    print(f"{phase:>9}: {ops:>15,} operations, {macs:>15,} multiply-accumulates")
