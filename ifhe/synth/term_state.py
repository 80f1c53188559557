"""State that a loss term of inversion carries from step to step and round to round.

A term of `ifhe.terms.TERMS` may build a `TermState` when a synthesizer starts (`Term.make_state`). The
synthesizer calls every state at the same points without knowing which term it belongs to:

    extra_views(x01)       more rows for the step's teacher pass (CMI's local crops), or None
    before_step()          zero the gradients of the state's own parameters
    after_step(better)     after the images' optimizer step; `better`: this step's batch is the round's best so far
    commit()               when the round's batch is kept
    state_dict() / load_state_dict()   for checkpoints

The term's own function reads its state from `StepTensors.state(key)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses as L
from ..data import random_resized_crop


class TermState:
    """No extra views, nothing to zero, keep or commit: override what a term needs."""

    instance_means = False        # does the step's teacher pass record per-image BN input means?

    def extra_views(self, x01: torch.Tensor) -> torch.Tensor | None:
        return None

    def before_step(self) -> None:
        pass

    def observe(self, tensors) -> None:
        """Called once the step's terms are computed (before backward): read what after_step needs."""

    def after_step(self, better: torch.Tensor) -> None:
        pass

    def commit(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ProjectionHead(nn.Module):
    """CMI's MLP projecting instance-mean features onto the unit sphere for the contrastive loss."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out))

    def forward(self, x: torch.Tensor, constant_rows: torch.Tensor | None = None) -> torch.Tensor:
        """The projections of the rows of x, then of `constant_rows` (inputs that need no gradient: CMI's cached
        features): the same as projecting their concatenation, but the first layer's input gradient is only
        computed for x."""
        if constant_rows is None:
            return F.normalize(self.net(x), dim=1)
        first, act, second = self.net
        h = torch.cat([first(x), first(constant_rows.detach())])
        return F.normalize(second(act(h)), dim=1)


class FeatureMemory:
    """CMI's memory of earlier rounds' (local, global) features: a ring of `capacity` rows from which each
    iteration draws `k` distinct rows at random (all rows written so far until it is full), as CMI's
    `MemoryBank.get_data` does. Rows are stored as float16 (half the memory of CMI's float32; a feature is an
    instance mean of a BN input, far inside float16's range) and drawn as float32."""

    def __init__(self, capacity: int, dim: int, device: torch.device):
        self.data = torch.zeros(capacity, dim, device=device, dtype=torch.float16)
        self.count = 0
        self.ptr = 0

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def add(self, feats: torch.Tensor) -> None:
        feats = feats[-self.data.shape[0]:]
        n = feats.shape[0]
        idx = (self.ptr + torch.arange(n, device=self.data.device)) % self.data.shape[0]
        self.data[idx] = feats.detach().to(self.data.dtype)
        self.ptr = (self.ptr + n) % self.data.shape[0]
        self.count = min(self.count + n, self.data.shape[0])

    def draw(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.count == 0:
            return self.data[:0].float()
        if self.count <= k:
            return self.data[:self.count].float()
        idx = torch.randperm(self.count, device=self.data.device, generator=generator)[:k]
        return self.data[idx].float()

    def state_dict(self) -> dict:
        return {"data": self.data, "count": self.count, "ptr": self.ptr}

    def load_state_dict(self, s: dict) -> None:
        self.data.copy_(s["data"].to(self.data.dtype))
        self.count, self.ptr = s["count"], s["ptr"]


class ContrastiveState(TermState):
    """CMI's contrastive term: a projection head with its own Adam, a memory of earlier rounds' features, and
    each step a random-resized crop (the local view) of every image through the same teacher pass as the global
    one (the teacher is in eval mode, so each image's outputs do not depend on the others')."""

    instance_means = True

    def __init__(self, synth):
        cfg, teacher, device = synth.cfg, synth.teacher, synth.device
        from ..hooks import BNStatHook

        with BNStatHook(teacher, instance_means=True) as hook, torch.no_grad():
            teacher(torch.zeros(2, 3, 32, 32, device=device))
            dim = sum(s.instance_mean.shape[1] for s in hook.stats)
        self.synth = synth
        self.head = ProjectionHead(dim, cfg.cr_head_dim).to(device)
        self.opt = torch.optim.Adam(self.head.parameters(), lr=cfg.lr_g)
        self.memory = FeatureMemory(cfg.cr_bank, 2 * dim, device)
        self.feats: torch.Tensor | None = None       # this step's (local, global) features
        self.best_feats: torch.Tensor | None = None  # those of the round's best step so far

    def extra_views(self, x01: torch.Tensor) -> torch.Tensor:
        # drawn right after the global view's augmentation, from the run's CPU stream
        return self.synth.normalizer(random_resized_crop(x01, generator=self.synth.rng.cpu))

    def before_step(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def loss(self, s) -> torch.Tensor:
        """The local projections must identify their own global view among the batch and `cr_negatives` rows
        drawn from the memory. Only the local projections carry a gradient (the global ones enter detached, as
        in CMI), so the global half is projected without autograd and the cached rows skip the first layer's
        input gradient: the same loss and gradients as projecting all rows at once, with about 40% fewer FLOPs."""
        b = s.x.shape[0]
        inst = torch.cat([st.instance_mean for st in s.stats], dim=1)
        global_f, local_f = inst[:b], inst[b:]
        cached_local, cached_global = self.memory.draw(s.cfg.cr_negatives, self.synth.rng.dev).chunk(2, dim=1)
        p_local = self.head(local_f, cached_local).float()
        with torch.no_grad():
            p_global = self.head(torch.cat([global_f, cached_global])).float()
        self.feats = torch.cat([local_f, global_f], dim=1).detach()
        return L.contrastive_loss(p_local, p_global, T=s.cfg.cr_T, n_current=b)

    def after_step(self, better: torch.Tensor) -> None:
        self.opt.step()
        if self.feats is None:
            return
        # torch.where: a copy, and no host sync to choose it
        self.best_feats = self.feats if self.best_feats is None else torch.where(better, self.feats, self.best_feats)

    def commit(self) -> None:
        if self.best_feats is not None:
            self.memory.add(self.best_feats)
        self.feats = self.best_feats = None

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "opt": self.opt.state_dict(), "memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
        self.memory.load_state_dict(state["memory"])


class BNMomentumState(TermState):
    """Fast-Datafree's (and NAYER's) BN-statistics momentum: at each kept batch, the last step's batch statistics
    are blended into running ones (`m * old + (1 - m) * new`), which L_bns then matches instead of the bare batch
    statistics."""

    def __init__(self, synth):
        self.momentum = synth.cfg.bn_momentum
        self.device = synth.device
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.last: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def observe(self, tensors) -> None:
        self.last = [(st.mean.detach(), st.var.detach()) for st in tensors.stats]

    def commit(self) -> None:
        if self.last is None:
            return
        m = self.momentum
        if self.stats is None:
            self.stats = self.last
        else:
            self.stats = [(m * a + (1 - m) * b, m * c + (1 - m) * d)
                          for (a, c), (b, d) in zip(self.stats, self.last)]

    def state_dict(self) -> dict:
        return {"stats": [list(t) for t in self.stats] if self.stats else None}

    def load_state_dict(self, state: dict) -> None:
        st = state.get("stats")
        self.stats = [(a.to(self.device), b.to(self.device)) for a, b in st] if st else None


def legacy_term_states(state: dict) -> dict:
    """The term states of a synthesizer checkpoint written before terms kept their own (CMI's head, optimizer
    and memory, Fast's BN momentum were the synthesizer's own entries)."""
    out = {}
    if "negatives" in state:
        out["cr"] = {"head": state["cr_head"], "opt": state["cr_opt"], "memory": state["negatives"]}
    if state.get("bn_momentum_stats"):
        out["bns"] = {"stats": state["bn_momentum_stats"]}
    return out
