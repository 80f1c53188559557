"""One inversion mechanism for every method: a parametrization renders images, the frozen teacher (and the
student, the head h) score them with the weighted loss terms of `ifhe.terms.TERMS`, and the lowest-loss batch of
each round is kept.

    L_inv = alpha * L_H + beta * L_bns + gamma * L_adv  (+ oh * L_oh + cr * L_cr + act * L_act + balance * L_bal
                                                          + tv * L_tv for the baselines)
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses as L
from ..config import SynthConfig
from ..data import Normalizer, random_crop_flip, random_resized_crop, roll_flip, to_uint8
from ..device import RunRNG, autocast, check_precision, maybe_compile
from ..errors import DivergenceError, IfheError
from ..hooks import BNStatHook, ProbedFeatures, TeacherProbe
from ..schedules import cosine_lr
from ..terms import StepTensors, compute_terms, tapped_stages
from .base import ImageParametrization, StepReport, Synthesizer, no_param_grads
from .generative import GeneratorImages, MetaGeneratorImages, reset_first_layer
from .pixel import PixelImages

# synth.param -> factory(cfg, normalizer, device, rng); the names are config.PARAMETRIZATIONS
PARAMETRIZATIONS: dict[str, Callable[..., ImageParametrization]] = {
    "pixels": PixelImages.from_config, "generator": GeneratorImages, "meta": MetaGeneratorImages}


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


def augment(x01: torch.Tensor, kind: str, rng: RunRNG) -> torch.Tensor:
    """What each reference code does to the rendered batch before the teacher sees it."""
    if kind == "crop_flip":
        return random_crop_flip(x01, generator=rng.cpu)
    if kind == "roll_flip":
        return roll_flip(x01, generator=rng.cpu)
    return x01


class InversionSynthesizer(Synthesizer):
    def __init__(self, cfg: SynthConfig, teacher: nn.Module, student: nn.Module, head: nn.Module | None,
                 normalizer: Normalizer, num_classes: int, device: torch.device, precision: str = "fp32",
                 rng: RunRNG | None = None):
        self.cfg = cfg.validate()
        self.precision = check_precision(precision)  # an unknown one fails here, not at the first step
        if student is teacher:
            # the reference code did this for GAN-style methods, silently zeroing the adversarial term
            raise IfheError("the student must be a different model from the teacher")
        if any(p.requires_grad for p in teacher.parameters()):
            raise IfheError("the teacher must be frozen (ifhe.zoo.freeze) before synthesis")
        self.teacher, self.student, self.head = teacher, student, head
        self.normalizer, self.num_classes, self.device = normalizer, num_classes, device
        self.rng = rng or RunRNG.from_global(device)
        self.param = PARAMETRIZATIONS[cfg.param](cfg, normalizer, device, self.rng)
        self.round, self.iteration = -1, 0
        self.adversarial_on = True        # off during a warm-up (Fast-Datafree)
        self.l0_reset_done = False
        self.targets: torch.Tensor | None = None
        self.best_loss = self.best_x = self.best_targets = self.best_feats = None
        self._feats: torch.Tensor | None = None
        self._last_x: torch.Tensor | None = None
        self._last_bn: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.bn_momentum_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._probes: dict[tuple, tuple[TeacherProbe, Callable]] = {}
        self.cr_head = self.cr_opt = self.negatives = None
        if cfg.cr > 0:
            with BNStatHook(teacher, instance_means=True) as hook, torch.no_grad():
                teacher(torch.zeros(2, 3, 32, 32, device=device))
                dim = sum(s.instance_mean.shape[1] for s in hook.stats)
            self.cr_head = ProjectionHead(dim, cfg.cr_head_dim).to(device)
            self.cr_opt = torch.optim.Adam(self.cr_head.parameters(), lr=cfg.lr_g)
            self.negatives = FeatureMemory(cfg.cr_bank, 2 * dim, device)

    @property
    def generator(self) -> nn.Module | None:
        return self.param.generator

    def set_weights(self, **weights: float) -> None:
        """Change loss weights between steps (the app's sliders); validated by SynthConfig.with_weights."""
        self.cfg = self.cfg.with_weights(**weights)

    # ---- round lifecycle ---------------------------------------------------------------------------------
    def start_round(self, round_index: int, progress: float = 0.0, warmup: bool = False) -> None:
        """`progress`: the run's fraction done (Fast's late layer reset); `warmup`: no adversarial term."""
        self.round, self.iteration = round_index, 0
        self.adversarial_on = not warmup
        cfg, b = self.cfg, self.cfg.batch_size
        if cfg.reset_l0_at is not None and not self.l0_reset_done and progress >= cfg.reset_l0_at:
            reset_first_layer(self.param.generator, self.rng.dev)
            self.l0_reset_done = True
        if cfg.lr_g_schedule == "cosine":  # ZSKT anneals its generator too
            self.param.set_lr(cosine_lr(cfg.lr_g, progress))
        self.targets = torch.randint(0, self.num_classes, (b,), device=self.device, generator=self.rng.dev).sort().values
        self.best_loss = torch.full((), float("inf"), device=self.device)
        self.best_x = self.best_targets = self.best_feats = None
        self.student.train(cfg.student_train)
        self.param.start_round(b)

    def step(self) -> StepReport:
        cfg = self.cfg
        self.param.zero_grad()
        if self.cr_opt is not None:
            self.cr_opt.zero_grad(set_to_none=True)
        with no_param_grads(self.student, self.head), autocast(self.device, self.precision):
            x01 = self.param.render().float()  # the kept images are never rounded to bf16
            x = self.normalizer(augment(x01, cfg.augment, self.rng)).contiguous(memory_format=torch.channels_last)
            b = x.shape[0]
            views = x
            contrastive = self.cr_head is not None and cfg.cr > 0
            if contrastive:
                # CMI's local view goes through the same teacher pass as the global one (the teacher is in eval
                # mode, so each image's outputs do not depend on the others'); its random crop is drawn right
                # after the global view's augmentation, as before. Statistics and taps read the first b rows.
                local = self.normalizer(random_resized_crop(x01, generator=self.rng.cpu))
                views = torch.cat([x, local.contiguous(memory_format=torch.channels_last)])
            stages = tuple(tapped_stages(cfg))
            probe, run = self._probe(stages, contrastive, b)
            logits, raw_stats, features = run(views)
            t_logits = logits[:b].float()
            stats = probe.bn_stats(raw_stats)
            targets = t_logits.argmax(1).detach() if cfg.targets == "argmax" else self.targets
            tensors = StepTensors(self, x, x01, t_logits, targets, stats, ProbedFeatures(stages, features))
            terms, total = compute_terms(cfg, tensors)
            if total is None:  # every weight is zero: nothing to optimize this step
                total = x01.sum() * 0.0
            total.backward()
        self.param.after_backward()
        self.param.step()
        if self.cr_opt is not None:
            self.cr_opt.step()
        self._keep_if_best(total.detach(), x01.detach(), targets)
        self._last_bn = [(s.mean.detach(), s.var.detach()) for s in stats]
        self.iteration += 1
        report = {k: v.detach() for k, v in terms.items()}
        report["total"] = total.detach()
        metrics = {}
        if tensors.head_logits is not None:  # is h learning? its agreement with the teacher on this batch
            metrics["h_agree"] = (tensors.head_logits.argmax(1) == t_logits.argmax(1)).float().mean().detach()
        # forward + input-gradient passes (images), and image-steps of the generator or pixels
        passes = {"teacher": views.shape[0], "student": b if tensors._student_logits is not None else 0,
                  "render": b}
        return StepReport(self.round, self.iteration, report, metrics, passes)

    def _probe(self, stages: tuple[str, ...], instance_means: bool, rows: int) -> tuple[TeacherProbe, Callable]:
        """The teacher pass of a step (a `TeacherProbe`, compiled where `ifhe.device.compile_enabled()`), one per
        set of recorded stages, instance means and statistics rows (a weight switched on mid-run adds one)."""
        key = (stages, instance_means, rows)
        if key not in self._probes:
            probe = TeacherProbe(self.teacher, stages, instance_means, rows)
            self._probes[key] = (probe, maybe_compile(probe, "teacher pass"))
        return self._probes[key]

    def contrastive(self, s: StepTensors) -> torch.Tensor:
        """CMI's term: the teacher's features of a random-resized crop (the local view, rows b.. of the step's
        teacher pass) must identify their own global view among the batch and `cr_negatives` rows drawn from the
        memory of earlier rounds.

        Only the local projections carry a gradient (the global ones enter the loss detached, as in CMI), so the
        global half is projected without autograd and the cached rows skip the first layer's input gradient:
        the same loss and gradients as projecting all rows at once, with about 40% fewer FLOPs."""
        b = s.x.shape[0]
        inst = torch.cat([st.instance_mean for st in s.stats], dim=1)
        global_f, local_f = inst[:b], inst[b:]
        cached_local, cached_global = self.negatives.draw(self.cfg.cr_negatives, self.rng.dev).chunk(2, dim=1)
        p_local = self.cr_head(local_f, cached_local).float()
        with torch.no_grad():
            p_global = self.cr_head(torch.cat([global_f, cached_global])).float()
        self._feats = torch.cat([local_f, global_f], dim=1).detach()
        return L.contrastive_loss(p_local, p_global, T=self.cfg.cr_T, n_current=b)

    def _keep_if_best(self, total: torch.Tensor, x01: torch.Tensor, targets: torch.Tensor) -> None:
        # torch.where builds new tensors: the kept batch is a copy, and no host sync is needed to choose it.
        better = total < self.best_loss
        self.best_loss = torch.where(better, total, self.best_loss)
        if self.best_x is None:
            self.best_x, self.best_targets, self.best_feats = x01.clone(), targets.clone(), self._feats
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

    def regenerated_batch(self) -> torch.Tensor:
        """The round's last z through the updated generator, float in [0, 1] (ZSKT's KD batch)."""
        if not hasattr(self.param, "rerender"):
            raise IfheError(f"synth.param={self.cfg.param} cannot re-render its batch; distill.source=regenerate "
                            f"needs param=generator")
        return self.param.rerender()

    def kept_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The round's kept batch as float images in [0, 1] on the device (not rounded to uint8): what ZSKT's and
        DAFL's students learn from."""
        if self.best_x is None:
            raise RuntimeError("no step of this round has run yet")
        return self.best_x, self.best_targets

    def commit(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.best_x is None:
            raise RuntimeError("commit() before any step of the round")
        if not torch.isfinite(self.best_x).all():
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
        s = {"param": self.param.state_dict(), "round": self.round, "l0_reset_done": self.l0_reset_done,
             "bn_momentum_stats": [list(t) for t in self.bn_momentum_stats] if self.bn_momentum_stats else None}
        if self.cr_head is not None:
            s |= {"cr_head": self.cr_head.state_dict(), "cr_opt": self.cr_opt.state_dict(),
                  "negatives": self.negatives.state_dict()}
        return s

    def load_state_dict(self, state: dict) -> None:
        self.param.load_state_dict(state["param"])
        self.round = state["round"]
        self.l0_reset_done = bool(state.get("l0_reset_done", False))
        bms = state.get("bn_momentum_stats")
        self.bn_momentum_stats = [(a.to(self.device), b.to(self.device)) for a, b in bms] if bms else None
        if self.cr_head is not None:
            self.cr_head.load_state_dict(state["cr_head"])
            self.cr_opt.load_state_dict(state["cr_opt"])
            self.negatives.load_state_dict(state["negatives"])
