"""The synthesizer interface: make labelled images from a frozen teacher, one optimizer step at a time."""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn


@dataclass
class StepReport:
    """One optimizer iteration. Loss terms stay 0-d device tensors: reading them is the caller's host sync.
    `metrics` are read-outs that are not optimized (e.g. how often h agrees with the teacher on the batch)."""

    round: int
    iteration: int
    losses: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    # images through each network in this step (host ints, no sync): the run's compute accounting
    passes: dict[str, int] = field(default_factory=dict)


class ImageParametrization(Protocol):
    """How a method's images are made and what the optimizer moves: pixels, a generator and its z, or a
    meta-learned generator. `ifhe.synth.PARAMETRIZATIONS` maps `synth.param` to the class; each is built with
    `(cfg, normalizer, device, rng, teacher=..., num_classes=...)`."""

    generator: nn.Module | None

    def start_round(self, batch_size: int, targets: torch.Tensor | None = None) -> None:
        """A new batch of `batch_size` images; `targets`: the round's classes (a label-conditioned generator
        renders them)."""

    def render(self) -> torch.Tensor:
        """The current batch in [0, 1] (float; a generator whose output is the teacher's input is mapped back)."""

    def zero_grad(self) -> None: ...

    def after_backward(self) -> None: ...

    def step(self) -> None: ...

    def end_round(self) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class OneOptimizerImages:
    """What a parametrization moved by a single optimizer `self.opt` does around a step (pixels, NAYER's
    generator); override what differs."""

    opt: torch.optim.Optimizer

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        pass

    def step(self) -> None:
        self.opt.step()

    def end_round(self) -> None:
        pass


class Synthesizer(ABC):
    """start_round() -> step() x iterations -> commit(); images() any time for display."""

    @abstractmethod
    def start_round(self, round_index: int) -> None: ...

    @abstractmethod
    def step(self) -> StepReport: ...

    @abstractmethod
    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current batch as uint8 CPU images (N, 3, H, W) and its target labels."""

    @abstractmethod
    def commit(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The round's kept (lowest-loss) batch as uint8 CPU images and labels; a copy, never a live tensor."""

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def sample(self, n: int) -> torch.Tensor:
        """Fresh images in [0, 1] from the current generator (GAN-style KD); only generator methods have it."""
        raise NotImplementedError(f"{type(self).__name__} has no generator to sample from")


@contextmanager
def no_param_grads(*modules: nn.Module):
    """Input gradients still flow through `modules`, but their weights get none (and cost nothing)."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
