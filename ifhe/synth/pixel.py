"""Pixels as parameters (DeepInversion, ADI): a fresh batch of noise images optimized directly each round."""
from __future__ import annotations

import torch

from ..data import Normalizer
from ..device import RunRNG
from .base import OneOptimizerImages


class PixelImages(OneOptimizerImages):
    """Images live in the teacher's normalized input space, as in DeepInversion, and are clipped to [0, 1]."""

    generator = None

    def __init__(self, lr: float, normalizer: Normalizer, device: torch.device, rng: RunRNG, img_size: int = 32,
                 betas: tuple[float, float] = (0.5, 0.99)):
        self.lr, self.normalizer, self.device, self.rng, self.img_size = lr, normalizer, device, rng, img_size
        self.betas = tuple(betas)
        self.x: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None
        self._lo = ((0 - normalizer.mean) / normalizer.std).to(device)
        self._hi = ((1 - normalizer.mean) / normalizer.std).to(device)

    @classmethod
    def from_config(cls, cfg, normalizer: Normalizer, device: torch.device, rng: RunRNG, **_) -> "PixelImages":
        return cls(cfg.lr_g, normalizer, device, rng, betas=cfg.betas or (0.5, 0.99))

    def start_round(self, batch_size: int, targets: torch.Tensor | None = None) -> None:
        self.x = torch.randn(batch_size, 3, self.img_size, self.img_size, device=self.device,
                             generator=self.rng.dev).requires_grad_()
        self.opt = torch.optim.Adam([self.x], lr=self.lr, betas=self.betas)

    def render(self) -> torch.Tensor:
        return self.normalizer.denormalize(self.x)

    def step(self) -> None:
        self.opt.step()
        with torch.no_grad():
            self.x.copy_(torch.maximum(torch.minimum(self.x, self._hi), self._lo))

    def state_dict(self) -> dict:
        return {"x": self.x.detach() if self.x is not None else None,
                "opt": self.opt.state_dict() if self.opt is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("x") is not None:
            self.x = state["x"].to(self.device).requires_grad_()
            self.opt = torch.optim.Adam([self.x], lr=self.lr, betas=self.betas)
            if state.get("opt"):
                self.opt.load_state_dict(state["opt"])
