"""Generator parametrizations: generator + optimized z (CMI, IFHE), free-running GAN-style generators
(DAFL, ZSKT, DFQ: z resampled every step) and the meta-learned generator of Fast-Datafree."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..device import fast_layout
from ..models import Generator


def reinit_generator(g: nn.Module) -> None:
    """CMI's per-round reset: N(0, 0.02) weights, BN scales N(1, 0.02)."""
    for m in g.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _adam(params, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))


class GeneratorImages:
    """x = g(z). With lr_z > 0, z is a fresh N(0, I) batch each round, optimized with g; with lr_z = 0, z is
    redrawn at every step and only g learns (GAN-style)."""

    def __init__(self, nz: int, lr_g: float, lr_z: float, reset: bool, device: torch.device):
        self.nz, self.lr_g, self.lr_z, self.reset, self.device = nz, lr_g, lr_z, reset, device
        self.generator = fast_layout(Generator(nz=nz).to(device)).train()
        self.opt_g = _adam(self.generator.parameters(), lr_g)
        self.z: torch.Tensor | None = None
        self.opt_z: torch.optim.Optimizer | None = None
        self.batch_size = 0

    def start_round(self, batch_size: int) -> None:
        self.batch_size = batch_size
        if self.reset:
            reinit_generator(self.generator)
            self.opt_g = _adam(self.generator.parameters(), self.lr_g)
        if self.lr_z > 0:
            self.z = torch.randn(batch_size, self.nz, device=self.device).requires_grad_()
            self.opt_z = _adam([self.z], self.lr_z)

    def render(self) -> torch.Tensor:
        z = self.z if self.z is not None else torch.randn(self.batch_size, self.nz, device=self.device)
        return self.generator(z)

    def zero_grad(self) -> None:
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_z is not None:
            self.opt_z.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        pass

    def step(self) -> None:
        self.opt_g.step()
        if self.opt_z is not None:
            self.opt_z.step()

    def end_round(self) -> None:
        pass

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.generator(torch.randn(n, self.nz, device=self.device))

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "opt_g": self.opt_g.state_dict(),
                "z": self.z.detach() if self.z is not None else None,
                "opt_z": self.opt_z.state_dict() if self.opt_z is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.opt_g = _adam(self.generator.parameters(), self.lr_g)
        self.opt_g.load_state_dict(state["opt_g"])
        if state.get("z") is not None:
            self.z = state["z"].to(self.device).requires_grad_()
            self.batch_size = self.z.shape[0]
            self.opt_z = _adam([self.z], self.lr_z)
            if state.get("opt_z"):
                self.opt_z.load_state_dict(state["opt_z"])


class MetaGeneratorImages:
    """Fast-Datafree: each round adapts a copy of the meta-generator (and z) for a few steps; the first-order
    MAML gradient, summed over those steps, updates the meta-generator once at the end of the round."""

    def __init__(self, nz: int, lr_g: float, lr_z: float, iterations: int, device: torch.device):
        self.nz, self.lr_g, self.lr_z, self.device = nz, lr_g, lr_z, device
        self.generator = fast_layout(Generator(nz=nz).to(device)).train()
        self.meta_opt = _adam(self.generator.parameters(), lr_g * iterations)
        self.fast: Generator | None = None
        self.z: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None

    def start_round(self, batch_size: int) -> None:
        self.fast = copy.deepcopy(self.generator)
        self.z = torch.randn(batch_size, self.nz, device=self.device).requires_grad_()
        self.opt = torch.optim.Adam([{"params": self.fast.parameters()}, {"params": [self.z], "lr": self.lr_z}],
                                    lr=self.lr_g, betas=(0.5, 0.999))
        self.meta_opt.zero_grad(set_to_none=False)
        for p in self.generator.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def render(self) -> torch.Tensor:
        return self.fast(self.z)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        for p, fp in zip(self.generator.parameters(), self.fast.parameters()):
            if fp.grad is not None:
                p.grad.add_(fp.grad)

    def step(self) -> None:
        self.opt.step()

    def end_round(self) -> None:
        self.meta_opt.step()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.generator(torch.randn(n, self.nz, device=self.device))

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "meta_opt": self.meta_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.meta_opt.load_state_dict(state["meta_opt"])
