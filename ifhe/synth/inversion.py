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

from ..config import SynthConfig
from ..data import Normalizer, random_crop_flip, roll_flip, to_uint8
from ..device import RunRNG, autocast, check_precision, maybe_compile
from ..errors import DivergenceError, IfheError
from ..hooks import ProbedFeatures, TeacherProbe
from ..schedules import cosine_lr
from ..terms import TERMS, StepTensors, compute_terms, tapped_stages
from .base import ImageParametrization, StepReport, Synthesizer, no_param_grads
from .generative import GeneratorImages, LabelGeneratorImages, MetaGeneratorImages, reset_first_layer
from .pixel import PixelImages
from .term_state import FeatureMemory, ProjectionHead, TermState, legacy_term_states  # noqa: F401 - the first two lived here

# synth.param -> factory(cfg, normalizer, device, rng, teacher=, num_classes=); the names are
# config.PARAMETRIZATIONS
PARAMETRIZATIONS: dict[str, Callable[..., ImageParametrization]] = {
    "pixels": PixelImages.from_config, "generator": GeneratorImages, "meta": MetaGeneratorImages,
    "label": LabelGeneratorImages}


def draw_targets(kind: str, n: int, num_classes: int, device: torch.device, rng: RunRNG) -> torch.Tensor:
    """A round's target classes. "random": uniform, sorted (for display); "balanced": NAYER's layout, every run
    of `num_classes` samples holds each class once, the remainder uniform at the end ("argmax" methods take the
    teacher's own predictions per step and use these only for display)."""
    if kind == "balanced":
        full, rest = divmod(n, num_classes)
        tail = torch.randint(0, num_classes, (rest,), device=device, generator=rng.dev)
        return torch.cat([torch.arange(num_classes, device=device).repeat(full), tail])
    return torch.randint(0, num_classes, (n,), device=device, generator=rng.dev).sort().values


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
        self.param = PARAMETRIZATIONS[cfg.param](cfg, normalizer, device, self.rng, teacher=teacher,
                                                 num_classes=num_classes)
        self.round, self.iteration = -1, 0
        self.adversarial_on = True        # off during a warm-up (Fast-Datafree)
        self.l0_reset_done = False
        self.targets: torch.Tensor | None = None
        self.best_loss = self.best_x = self.best_targets = None
        self._last_x: torch.Tensor | None = None
        self._probes: dict[tuple, tuple[TeacherProbe, Callable]] = {}
        # the terms' own state (CMI's projection head and memory, Fast's BN momentum): ifhe.synth.term_state
        self.term_states: dict[str, TermState] = {}
        for t in TERMS:
            st = t.make_state(self)
            if st is not None:
                self.term_states[t.key] = st

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
        self.targets = draw_targets(cfg.targets, b, self.num_classes, self.device, self.rng)
        self.best_loss = torch.full((), float("inf"), device=self.device)
        self.best_x = self.best_targets = None
        self.student.train(cfg.student_train)
        self.param.start_round(b, targets=self.targets)

    def step(self) -> StepReport:
        cfg, states = self.cfg, self.term_states.values()
        self.param.zero_grad()
        for st in states:
            st.before_step()
        with no_param_grads(self.student, self.head), autocast(self.device, self.precision):
            x01 = self.param.render().float()  # the kept images are never rounded to bf16
            x = self.normalizer(augment(x01, cfg.augment, self.rng)).contiguous(memory_format=torch.channels_last)
            b = x.shape[0]
            # terms may add views of the batch to the same teacher pass (CMI's local crops); statistics and taps
            # read the first b rows
            extra = [v for v in (st.extra_views(x01) for st in states) if v is not None]
            views = torch.cat([x, *(v.contiguous(memory_format=torch.channels_last) for v in extra)]) if extra else x
            stages = tuple(tapped_stages(cfg))
            probe, run = self._probe(stages, any(st.instance_means for st in states), b)
            logits, raw_stats, features = run(views)
            t_logits = logits[:b].float()
            stats = probe.bn_stats(raw_stats)
            targets = t_logits.argmax(1).detach() if cfg.targets == "argmax" else self.targets
            tensors = StepTensors(self, x, x01, t_logits, targets, stats, ProbedFeatures(stages, features),
                                  states=self.term_states)
            terms, total = compute_terms(cfg, tensors)
            for st in states:
                st.observe(tensors)
            if total is None:  # every weight is zero: nothing to optimize this step
                total = x01.sum() * 0.0
            total.backward()
        self.param.after_backward()
        self.param.step()
        better = self._keep_if_best(total.detach(), x01.detach(), targets)
        for st in states:
            st.after_step(better)
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

    def _keep_if_best(self, total: torch.Tensor, x01: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Keep this step's batch if its loss is the round's lowest so far; returns that flag (a 0-d tensor).
        torch.where builds new tensors: the kept batch is a copy, and no host sync is needed to choose it."""
        better = total < self.best_loss
        self.best_loss = torch.where(better, total, self.best_loss)
        if self.best_x is None:
            self.best_x, self.best_targets = x01.clone(), targets.clone()
        else:
            self.best_x = torch.where(better, x01, self.best_x)
            self.best_targets = torch.where(better, targets, self.best_targets)
        self._last_x = x01
        return better

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
        for st in self.term_states.values():
            st.commit()
        return to_uint8(self.best_x).cpu(), self.best_targets.cpu()

    def sample(self, n: int) -> torch.Tensor:
        if not hasattr(self.param, "sample"):
            return super().sample(n)
        return self.param.sample(n)

    # ---- persistence -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"param": self.param.state_dict(), "round": self.round, "l0_reset_done": self.l0_reset_done,
                "terms": {k: st.state_dict() for k, st in self.term_states.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.param.load_state_dict(state["param"])
        self.round = state["round"]
        self.l0_reset_done = bool(state.get("l0_reset_done", False))
        terms = dict(state.get("terms") or {}) | legacy_term_states(state)
        for key, st in self.term_states.items():
            if key in terms:
                st.load_state_dict(terms[key])
