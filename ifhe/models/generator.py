"""The 32x32 generator of CMI / Fast-Datafree / IFHE: z -> image in [0, 1] (normalization comes after it)."""
from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, nc: int = 3):
        super().__init__()
        self.nz, self.init_size = nz, img_size // 4
        self.project = nn.Sequential(nn.Linear(nz, ngf * 2 * self.init_size ** 2))
        self.body = nn.Sequential(
            nn.BatchNorm2d(ngf * 2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf * 2, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, 1, 1),
            nn.Sigmoid(),
        )
        self.ngf = ngf

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"generator expects z of shape (N, {self.nz}), got {tuple(z.shape)}")
        out = self.project(z).view(z.shape[0], self.ngf * 2, self.init_size, self.init_size)
        return self.body(out.contiguous(memory_format=torch.channels_last))
