"""VGG-11 with BatchNorm for 32x32 inputs: five conv stages, each closed by max-pool, and one linear layer."""
from __future__ import annotations

import torch
from torch import nn

_VGG11 = ((64,), (128,), (256, 256), (512, 512), (512, 512))


class VGG(nn.Module):
    stages = ("block1", "block2", "block3", "block4", "block5", "penultimate")
    stage_modules = {f"block{i + 1}": f"block{i + 1}" for i in range(5)} | {"penultimate": "pool"}

    def __init__(self, num_classes: int, config=_VGG11):
        super().__init__()
        in_ch = 3
        self.stage_channels = {}
        for i, widths in enumerate(config):
            layers: list[nn.Module] = []
            for w in widths:
                layers += [nn.Conv2d(in_ch, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                in_ch = w
            layers.append(nn.MaxPool2d(2))
            setattr(self, f"block{i + 1}", nn.Sequential(*layers))
            self.stage_channels[f"block{i + 1}"] = in_ch
        self.stage_channels["penultimate"] = in_ch
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(5):
            x = getattr(self, f"block{i + 1}")(x)
        return self.fc(self.pool(x))
