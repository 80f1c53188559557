"""One inversion mechanism for every method: a parametrization renders images, the frozen teacher (and the
student, the head h) score them with weighted loss terms, and the lowest-loss batch of each round is kept.

    L_inv = alpha * L_H + beta * L_bns + gamma * L_adv  (+ oh * L_oh + cr * L_cr + act * L_act + balance * L_bal
                                                          + tv * L_tv for the baselines)
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses as L
from ..config import SynthConfig
from ..errors import IfheError
from ..data import Normalizer, random_crop_flip, random_resized_crop, to_uint8
from ..device import autocast, check_precision
from ..hooks import BNStatHook, FeatureTap
from .base import StepReport, Synthesizer, no_param_grads
from .generative import GeneratorImages, MetaGeneratorImages
from .pixel import PixelImages

LIVE_WEIGHTS = ("alpha", "beta", "gamma", "oh", "cr", "act", "balance", "tv")


class ProjectionHead(nn.Module):
    """CMI's MLP projecting instance-mean features onto the unit sphere for the contrastive loss."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class FeatureCache:
    """A fixed-size ring of earlier rounds' (local, global) features: CMI's negatives, bounded in memory."""

    def __init__(self, capacity: int, dim: int, device: torch.device):
        self.data = torch.zeros(capacity, dim, device=device)
        self.count = 0
        self.ptr = 0

    def add(self, feats: torch.Tensor) -> None:
        feats = feats[-self.data.shape[0]:]
        n = feats.shape[0]
        idx = (self.ptr + torch.arange(n, device=self.data.device)) % self.data.shape[0]
        self.data[idx] = feats.detach()
        self.ptr = (self.ptr + n) % self.data.shape[0]
        self.count = min(self.count + n, self.data.shape[0])

    def all(self) -> torch.Tensor:
        return self.data[:self.count]

    def state_dict(self) -> dict:
        return {"data": self.data, "count": self.count, "ptr": self.ptr}

    def load_state_dict(self, s: dict) -> None:
        self.data.copy_(s["data"])
        self.count, self.ptr = s["count"], s["ptr"]


def make_parametrization(cfg: SynthConfig, normalizer: Normalizer, device: torch.device):
    if cfg.param == "pixels":
        return PixelImages(cfg.lr_g, normalizer, device)
    if cfg.param == "meta":
        return MetaGeneratorImages(cfg.nz, cfg.lr_g, cfg.lr_z, cfg.iterations, device)
    return GeneratorImages(cfg.nz, cfg.lr_g, cfg.lr_z, cfg.reset_generator, device)


class InversionSynthesizer(Synthesizer):
    def __init__(self, cfg: SynthConfig, teacher: nn.Module, student: nn.Module, head: nn.Module | None,
                 normalizer: Normalizer, num_classes: int, device: torch.device, precision: str = "fp32"):
        self.cfg = cfg.validate()
        self.precision = check_precision(precision)  # an unknown one fails here, not at the first step
        if student is teacher:
            # the reference code did this for GAN-style methods, silently zeroing the adversarial term
            raise IfheError("the student must be a different model from the teacher")
        if any(p.requires_grad for p in teacher.parameters()):
            raise IfheError("the teacher must be frozen (ifhe.zoo.freeze) before synthesis")
        self.teacher, self.student, self.head = teacher, student, head
        self.normalizer, self.num_classes, self.device = normalizer, num_classes, device
        self.param = make_parametrization(cfg, normalizer, device)
        self.round, self.iteration = -1, 0
        self.targets: torch.Tensor | None = None
        self.best_loss = self.best_x = self.best_targets = self.best_feats = None
        self._last_x: torch.Tensor | None = None
        self._last_bn: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.bn_momentum_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.cr_head = self.cr_opt = self.negatives = None
        if cfg.cr > 0:
            with BNStatHook(teacher, instance_means=True) as hook, torch.no_grad():
                teacher(torch.zeros(2, 3, 32, 32, device=device))
                dim = sum(s.instance_mean.shape[1] for s in hook.stats)
            self.cr_head = ProjectionHead(dim, cfg.cr_head_dim).to(device)
            self.cr_opt = torch.optim.Adam(self.cr_head.parameters(), lr=cfg.lr_g)
            self.negatives = FeatureCache(cfg.cr_negatives, 2 * dim, device)

    @property
    def generator(self) -> nn.Module | None:
        return self.param.generator

    def set_weights(self, **weights: float) -> None:
        """Change loss weights between steps (the app's sliders); the next step uses them."""
        unknown = set(weights) - set(LIVE_WEIGHTS)
        if unknown:
            raise ValueError(f"not a live loss weight: {sorted(unknown)}; live: {LIVE_WEIGHTS}")
        cfg = replace(self.cfg, **weights).validate()
        if (cfg.cr > 0) != (self.cfg.cr > 0) or (cfg.act > 0 and self.cfg.param == "pixels"):
            raise ValueError("the contrastive/activation terms cannot be switched on or off during a run")
        self.cfg = cfg

    # ---- round lifecycle ---------------------------------------------------------------------------------
    def start_round(self, round_index: int) -> None:
        self.round, self.iteration = round_index, 0
        b = self.cfg.batch_size
        self.targets = torch.randint(0, self.num_classes, (b,), device=self.device).sort().values
        self.best_loss = torch.full((), float("inf"), device=self.device)
        self.best_x = self.best_targets = self.best_feats = None
        self.student.train(self.cfg.student_train)
        self.param.start_round(b)

    def step(self) -> StepReport:
        cfg = self.cfg
        stages = list(cfg.h_stages) if cfg.alpha > 0 else []
        if cfg.act > 0 and "penultimate" not in stages:
            stages.append("penultimate")
        self.param.zero_grad()
        if self.cr_opt is not None:
            self.cr_opt.zero_grad(set_to_none=True)
        with no_param_grads(self.student, self.head), autocast(self.device, self.precision):
            x01 = self.param.render().float()  # the kept images are never rounded to bf16
            x = self.normalizer(random_crop_flip(x01)).contiguous(memory_format=torch.channels_last)
            with BNStatHook(self.teacher, instance_means=cfg.cr > 0) as bn, \
                    FeatureTap(self.teacher, stages) as tap:
                t_logits = self.teacher(x).float()
                global_stats = bn.stats
                bn.clear()
                targets = t_logits.argmax(1).detach() if cfg.targets == "argmax" else self.targets
                terms = self._terms(x, x01, t_logits, targets, global_stats, tap, bn)
            weights = {"H": cfg.alpha, "bns": cfg.beta, "adv": cfg.gamma, "oh": cfg.oh, "cr": cfg.cr,
                       "act": cfg.act, "balance": cfg.balance, "tv": cfg.tv}
            total = sum(weights[k] * v for k, v in terms.items())
            if not isinstance(total, torch.Tensor):  # every weight is zero: nothing to optimize this step
                total = x01.sum() * 0.0
            total.backward()
        self.param.after_backward()
        self.param.step()
        if self.cr_opt is not None:
            self.cr_opt.step()
        self._keep_if_best(total.detach(), x01.detach(), targets)
        self._last_bn = [(s.mean.detach(), s.var.detach()) for s in global_stats]
        self.iteration += 1
        report = {k: v.detach() for k, v in terms.items()}
        report["total"] = total.detach()
        return StepReport(self.round, self.iteration, report)

    def _terms(self, x, x01, t_logits, targets, stats, tap, bn) -> dict[str, torch.Tensor]:
        cfg, terms = self.cfg, {}
        if cfg.beta > 0:
            terms["bns"] = L.bn_stat_loss(stats, first_multiplier=cfg.bn_first_multiplier,
                                          momentum_stats=self.bn_momentum_stats, momentum=cfg.bn_momentum)
        if cfg.oh > 0:
            terms["oh"] = L.one_hot_ce(t_logits, targets)
        if cfg.alpha > 0:
            terms["H"] = L.heterogeneity_ce(self.head(tap.concat_of(cfg.h_stages)).float(), targets)
        if cfg.gamma > 0 and self.round >= cfg.adv_warmup_rounds:
            s_logits = self.student(x).float()
            if cfg.adv_kind == "js":
                terms["adv"] = -L.js_divergence(s_logits, t_logits, T=cfg.adv_T)
            else:
                terms["adv"] = L.masked_adversarial_kl(s_logits, t_logits, T=cfg.adv_T,
                                                       use_mask=cfg.adv_kind == "masked_kl")
        if cfg.act > 0:
            terms["act"] = L.dafl_activation_loss(tap.features["penultimate"])
        if cfg.balance > 0:
            terms["balance"] = L.dafl_balance_loss(t_logits)
        if cfg.tv > 0:
            terms["tv"] = L.total_variation(self.normalizer(x01))
        if cfg.cr > 0:
            terms["cr"] = self._contrastive(x01, stats, bn)
        return terms

    def _contrastive(self, x01, global_stats, bn) -> torch.Tensor:
        global_f = torch.cat([s.instance_mean for s in global_stats], dim=1)
        local_view = self.normalizer(random_resized_crop(x01)).contiguous(memory_format=torch.channels_last)
        self.teacher(local_view)
        local_f = torch.cat([s.instance_mean for s in bn.stats], dim=1)
        cached_local, cached_global = self.negatives.all().chunk(2, dim=1)
        proj = self.cr_head(torch.cat([local_f, cached_local, global_f, cached_global])).float()
        p_local, p_global = proj.chunk(2, dim=0)
        self._feats = torch.cat([local_f, global_f], dim=1).detach()
        return L.contrastive_loss(p_local, p_global, T=self.cfg.cr_T, n_current=local_f.shape[0])

    def _keep_if_best(self, total: torch.Tensor, x01: torch.Tensor, targets: torch.Tensor) -> None:
        # torch.where builds new tensors: the kept batch is a copy, and no host sync is needed to choose it.
        better = total < self.best_loss
        self.best_loss = torch.where(better, total, self.best_loss)
        if self.best_x is None:
            self.best_x, self.best_targets = x01.clone(), targets.clone()
            self.best_feats = getattr(self, "_feats", None)
        else:
            self.best_x = torch.where(better, x01, self.best_x)
            self.best_targets = torch.where(better, targets, self.best_targets)
            if self.negatives is not None:
                self.best_feats = torch.where(better, self._feats, self.best_feats)
        self._last_x = x01

    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._last_x is None:
            raise RuntimeError("no step has run yet")
        return to_uint8(self._last_x).cpu(), self.targets.cpu()

    def commit(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.best_x is None:
            raise RuntimeError("commit() before any step of the round")
        if not torch.isfinite(self.best_x).all():
            from ..errors import DivergenceError
            raise DivergenceError(f"round {self.round}: the synthesized images are not finite")
        self.param.end_round()
        if self.negatives is not None and self.best_feats is not None:
            self.negatives.add(self.best_feats)
        if self.cfg.bn_momentum > 0 and self._last_bn is not None:
            m = self.cfg.bn_momentum
            if self.bn_momentum_stats is None:
                self.bn_momentum_stats = self._last_bn
            else:
                self.bn_momentum_stats = [(m * a + (1 - m) * b, m * c + (1 - m) * d)
                                          for (a, c), (b, d) in zip(self.bn_momentum_stats, self._last_bn)]
        return to_uint8(self.best_x).cpu(), self.best_targets.cpu()

    def sample(self, n: int) -> torch.Tensor:
        if not hasattr(self.param, "sample"):
            return super().sample(n)
        return self.param.sample(n)

    # ---- persistence -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        s = {"param": self.param.state_dict(), "round": self.round,
             "bn_momentum_stats": [list(t) for t in self.bn_momentum_stats] if self.bn_momentum_stats else None}
        if self.cr_head is not None:
            s |= {"cr_head": self.cr_head.state_dict(), "cr_opt": self.cr_opt.state_dict(),
                  "negatives": self.negatives.state_dict()}
        return s

    def load_state_dict(self, state: dict) -> None:
        self.param.load_state_dict(state["param"])
        self.round = state["round"]
        bms = state.get("bn_momentum_stats")
        self.bn_momentum_stats = [(a.to(self.device), b.to(self.device)) for a, b in bms] if bms else None
        if self.cr_head is not None:
            self.cr_head.load_state_dict(state["cr_head"])
            self.cr_opt.load_state_dict(state["cr_opt"])
            self.negatives.load_state_dict(state["negatives"])
