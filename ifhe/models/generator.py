"""32x32 generators z -> image, one per reference code base (`create_generator(name, nz)`).

- "cmi": CMI / Fast-Datafree / IFHE's generator; a sigmoid gives images in [0, 1] (normalization comes after it).
- "large": CMI's LargeGenerator (twice the channels at the first stage), which its scripts use for DFQ.
- "dafl": DAFL's own generator: tanh, then a BatchNorm without affine parameters; its output is the teacher's
  input as it is (already normalized), and its BatchNorms use eps 0.8, as DAFL-train.py writes them.
- "zskt": ZSKT's generator: the output is a BatchNorm with affine parameters (the teacher's input as it is).

- `LabelGenerator`: NAYER's NLGenerator (Tran et al., CVPR 2024): no z; a class embedding, a BatchNorm1d, one
  "noisy layer" (a Linear re-drawn from N(0, 1) before every batch) per group of samples, then the "cmi" body.

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


class LabelGenerator(nn.Module):
    """NAYER's `NLGenerator` (tmtuan1307/NAYER datafree/models/generator.py): images from class labels.

    Each target's row of `embedding` (C x E: NAYER uses CLIP text embeddings; see `class_embedding` for ours)
    goes through BatchNorm1d(E), then through the noisy layer of its group (sample i uses layer i // group, a
    Linear(E -> le_size)); the "cmi" generator maps the result to an image. The noisy layers are re-drawn from
    N(0, 1) before every batch (`reinit_noise`, NAYER's `re_init_le`); the rest is kept and learns."""

    output_space = "unit"

    def __init__(self, embedding: torch.Tensor, batch_size: int, group: int, le_size: int = 1000, ngf: int = 64,
                 img_size: int = 32, nc: int = 3):
        super().__init__()
        if embedding.dim() != 2:
            raise ValueError(f"embedding must be (classes, dim), got shape {tuple(embedding.shape)}")
        self.register_buffer("embedding", embedding.detach().float().clone())
        self.group = group
        n_layers = -(-batch_size // group)
        self.norm = nn.BatchNorm1d(embedding.shape[1])
        self.noisy = nn.ModuleList(nn.Linear(embedding.shape[1], le_size) for _ in range(n_layers))
        self.net = Generator(nz=le_size, ngf=ngf, img_size=img_size, nc=nc)

    @torch.no_grad()
    def reinit_noise(self, rng: torch.Generator | None = None) -> None:
        for layer in self.noisy:
            nn.init.normal_(layer.weight, 0.0, 1.0, generator=rng)
            nn.init.zeros_(layer.bias)

    def codes(self, targets: torch.Tensor) -> torch.Tensor:
        """The generator's input for a batch of class indices (the noisy layers' outputs)."""
        if targets.dim() != 1 or len(targets) > len(self.noisy) * self.group:
            raise ValueError(f"targets must be a vector of at most {len(self.noisy) * self.group} class indices")
        le = self.norm(self.embedding[targets])
        return torch.cat([self.noisy[i](le[j:j + self.group])
                          for i, j in enumerate(range(0, len(targets), self.group))])

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        return self.net(self.codes(targets))


def class_embedding(source: str, teacher: nn.Module, num_classes: int, dim: int = 512, seed: int = 0) -> torch.Tensor:
    """The class embedding NAYER's generator starts from, without downloading anything. "classifier": the rows of
    the teacher's last linear layer (C x D: what the teacher itself associates with each class; strictly
    data-free, the default); "onehot": the identity (C x C); "gaussian": a fixed N(0, 1) draw (C x `dim`).
    NAYER's own is CLIP's text embedding of "a image of <class>", which needs a download."""
    if source == "classifier":
        fc = getattr(teacher, "fc", None)
        if not isinstance(fc, nn.Linear) or fc.out_features != num_classes:
            raise ValueError("embedding=classifier needs a teacher whose last layer `fc` is a Linear with one row "
                             "per class")
        return fc.weight.detach().float().cpu().clone()
    if source == "onehot":
        return torch.eye(num_classes)
    if source == "gaussian":
        return torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"unknown class embedding {source!r}; known: classifier, onehot, gaussian")
