"""Generator parametrizations: generator + optimized z (CMI, IFHE), free-running GAN-style generators
(DAFL, ZSKT, DFQ: z resampled every step) and the meta-learned generator of Fast-Datafree."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import Normalizer
from ..device import RunRNG, fast_layout
from ..models import create_generator


def reinit_generator(g: nn.Module, rng: torch.Generator | None = None) -> None:
    """CMI's per-round reset: N(0, 0.02) weights, BN scales N(1, 0.02)."""
    for m in g.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=rng)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02, generator=rng)
            nn.init.zeros_(m.bias)


def reset_first_layer(g: nn.Module, rng: torch.Generator | None = None) -> None:
    """Fast-Datafree's `reset_l0`: the projection from z and the BatchNorm after it get N(0, 0.02) weights and
    zero biases again (the BN's scale too: near 0, not near 1, as `fast_meta.reset_l0` draws it)."""
    for layer in g.first_layers():
        nn.init.normal_(layer.weight, 0.0, 0.02, generator=rng)
        nn.init.zeros_(layer.bias)


def _adam(params, lr: float, betas=None) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas) if betas else (0.5, 0.999))


class _GeneratorBase:
    """What both generator parametrizations share: the network, the map of its output to [0, 1], sampling."""

    def __init__(self, name: str, nz: int, normalizer: Normalizer, device: torch.device, rng: RunRNG):
        self.nz, self.normalizer, self.device, self.rng = nz, normalizer, device, rng
        self.generator = fast_layout(create_generator(name, nz).to(device)).train()

    def _to_unit(self, out: torch.Tensor) -> torch.Tensor:
        # DAFL's and ZSKT's generators emit the teacher's input itself; the engine keeps images in [0, 1]
        return self.normalizer.denormalize(out) if self.generator.output_space == "normalized" else out

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.nz, device=self.device, generator=self.rng.dev)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Fresh images in [0, 1] for KD, with the generator's running BN statistics (eval mode), as CMI's
        `GenerativeSynthesizer.sample` draws them."""
        self.generator.eval()
        try:
            return self._to_unit(self.generator(self.noise(n)))
        finally:
            self.generator.train()


class GeneratorImages(_GeneratorBase):
    """x = g(z). With lr_z > 0, z is a fresh N(0, I) batch each round, optimized with g; with lr_z = 0, z is
    redrawn at every step and only g learns (GAN-style)."""

    def __init__(self, cfg, normalizer: Normalizer, device: torch.device, rng: RunRNG):
        super().__init__(cfg.generator, cfg.nz, normalizer, device, rng)
        self.lr_g, self.lr_z, self.reset, self.grad_clip = cfg.lr_g, cfg.lr_z, cfg.reset_generator, cfg.grad_clip
        self.betas = cfg.betas
        self.opt_g = _adam(self.generator.parameters(), self.lr_g, self.betas)
        self.z: torch.Tensor | None = None
        self._last_z: torch.Tensor | None = None
        self.opt_z: torch.optim.Optimizer | None = None
        self.batch_size = 0

    def start_round(self, batch_size: int) -> None:
        self.batch_size = batch_size
        if self.reset:
            reinit_generator(self.generator, self.rng.dev)
            self.opt_g = _adam(self.generator.parameters(), self.lr_g, self.betas)
        if self.lr_z > 0:
            self.z = self.noise(batch_size).requires_grad_()
            self.opt_z = _adam([self.z], self.lr_z, self.betas)

    def set_lr(self, lr_g: float) -> None:
        for g in self.opt_g.param_groups:
            g["lr"] = lr_g

    def render(self) -> torch.Tensor:
        z = self.z if self.z is not None else self.noise(self.batch_size)
        self._last_z = z.detach()
        return self._to_unit(self.generator(z))

    @torch.no_grad()
    def rerender(self) -> torch.Tensor:
        """The last z through the generator as it is now (after its step), in training mode: the batch ZSKT's
        student learns from."""
        return self._to_unit(self.generator(self._last_z))

    def zero_grad(self) -> None:
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_z is not None:
            self.opt_z.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.generator.parameters(), self.grad_clip)

    def step(self) -> None:
        self.opt_g.step()
        if self.opt_z is not None:
            self.opt_z.step()

    def end_round(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "opt_g": self.opt_g.state_dict(),
                "z": self.z.detach() if self.z is not None else None,
                "opt_z": self.opt_z.state_dict() if self.opt_z is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.opt_g = _adam(self.generator.parameters(), self.lr_g, self.betas)
        self.opt_g.load_state_dict(state["opt_g"])
        if state.get("z") is not None:
            self.z = state["z"].to(self.device).requires_grad_()
            self.batch_size = self.z.shape[0]
            self.opt_z = _adam([self.z], self.lr_z, self.betas)
            if state.get("opt_z"):
                self.opt_z.load_state_dict(state["opt_z"])


class MetaGeneratorImages(_GeneratorBase):
    """Fast-Datafree: each round adapts a copy of the meta-generator (and z) for a few steps; the first-order
    MAML gradient, summed over those steps, updates the meta-generator once at the end of the round."""

    def __init__(self, cfg, normalizer: Normalizer, device: torch.device, rng: RunRNG):
        super().__init__(cfg.generator, cfg.nz, normalizer, device, rng)
        self.lr_g, self.lr_z, self.betas = cfg.lr_g, cfg.lr_z, cfg.betas
        self.meta_opt = _adam(self.generator.parameters(), cfg.lr_g * cfg.iterations, self.betas)
        self.fast: nn.Module | None = None
        self.z: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None

    def start_round(self, batch_size: int) -> None:
        self.fast = copy.deepcopy(self.generator)
        self.z = self.noise(batch_size).requires_grad_()
        self.opt = _adam([{"params": self.fast.parameters()}, {"params": [self.z], "lr": self.lr_z}], self.lr_g,
                         self.betas)
        self.meta_opt.zero_grad(set_to_none=False)
        for p in self.generator.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def render(self) -> torch.Tensor:
        return self._to_unit(self.fast(self.z))

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

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "meta_opt": self.meta_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.meta_opt.load_state_dict(state["meta_opt"])
