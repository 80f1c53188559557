"""32x32 generators z -> image, one per reference code base (`create_generator(name, nz)`).

- "cmi": CMI / Fast-Datafree / IFHE's generator; a sigmoid gives images in [0, 1] (normalization comes after it).
- "large": CMI's LargeGenerator (twice the channels at the first stage), which its scripts use for DFQ.
- "dafl": DAFL's own generator: tanh, then a BatchNorm without affine parameters; its output is the teacher's
  input as it is (already normalized), and its BatchNorms use eps 0.8, as DAFL-train.py writes them.
- "zskt": ZSKT's generator: the output is a BatchNorm with affine parameters (the teacher's input as it is).

`output_space` says which: "unit" ([0, 1], normalized afterwards) or "normalized" (the teacher's input space).
"""
from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    output_space = "unit"

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, nc: int = 3, width: int = 2):
        super().__init__()
        self.nz, self.init_size, self.c0 = nz, img_size // 4, ngf * width
        self.project = nn.Sequential(nn.Linear(nz, self.c0 * self.init_size ** 2))
        self.body = nn.Sequential(
            nn.BatchNorm2d(self.c0),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(self.c0, ngf * 2, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, 1, 1),
            nn.Sigmoid(),
        )

    def first_layers(self) -> tuple[nn.Module, nn.Module]:
        """The layers Fast-Datafree re-initialises late in a run (`reset_l0`: `l1.0` and `conv_blocks.0`)."""
        return self.project[0], self.body[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"generator expects z of shape (N, {self.nz}), got {tuple(z.shape)}")
        out = self.project(z).view(z.shape[0], self.c0, self.init_size, self.init_size)
        return self.body(out.contiguous(memory_format=torch.channels_last))


class LargeGenerator(Generator):
    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, nc: int = 3):
        super().__init__(nz, ngf, img_size, nc, width=4)


class DAFLGenerator(Generator):
    """DAFL-train.py's Generator: BN(128) after the projection, conv blocks with BN eps 0.8 and biased convs,
    tanh, then BatchNorm2d(3, affine=False)."""

    output_space = "normalized"

    def __init__(self, nz: int = 1000, ngf: int = 64, img_size: int = 32, nc: int = 3):
        nn.Module.__init__(self)
        self.nz, self.init_size, self.c0 = nz, img_size // 4, ngf * 2
        self.project = nn.Sequential(nn.Linear(nz, self.c0 * self.init_size ** 2))
        self.body = nn.Sequential(
            nn.BatchNorm2d(self.c0),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(self.c0, ngf * 2, 3, 1, 1),
            nn.BatchNorm2d(ngf * 2, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf, 3, 1, 1),
            nn.BatchNorm2d(ngf, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, 1, 1),
            nn.Tanh(),
            nn.BatchNorm2d(nc, affine=False),
        )


class ZSKTGenerator(Generator):
    """ZSKT's models/generator.py: biased convolutions and a final BatchNorm2d(3, affine=True) instead of a
    squashing activation."""

    output_space = "normalized"

    def __init__(self, nz: int = 100, ngf: int = 64, img_size: int = 32, nc: int = 3):
        nn.Module.__init__(self)
        self.nz, self.init_size, self.c0 = nz, img_size // 4, ngf * 2
        self.project = nn.Sequential(nn.Linear(nz, self.c0 * self.init_size ** 2))
        self.body = nn.Sequential(
            nn.BatchNorm2d(self.c0),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(self.c0, ngf * 2, 3, 1, 1),
            nn.BatchNorm2d(ngf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf, 3, 1, 1),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, 1, 1),
            nn.BatchNorm2d(nc, affine=True),
        )


GENERATORS: dict[str, type[Generator]] = {"cmi": Generator, "large": LargeGenerator, "dafl": DAFLGenerator,
                                          "zskt": ZSKTGenerator}
