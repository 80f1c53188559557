"""The loss terms of model inversion, one row each: the weight that scales it, how it is computed from one
synthesis step, and how it is written. This table drives the weighted sum in `ifhe.synth.inversion`, the weight
fields of `SynthConfig` and their validation, the live weights (the app's sliders) and the app's charts.

Adding a term is one function of `losses.py` plus one row here (its weight becomes `synth.<weight>`); a term
that carries state from step to step adds a `TermState` (ifhe/synth/term_state.py) and its `make_state`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .hooks import BNStats, FeatureTap, ProbedFeatures

# The table is read without torch (the app's first page, configs); the term functions import the losses when
# they first run.


def _L():
    from . import losses
    return losses


@dataclass
class StepTensors:
    """What one synthesis step has computed, for the terms to read. The student's logits are computed on first
    use only (a term that needs them pays for the pass)."""

    synth: Any                    # the InversionSynthesizer: cfg, head, student, normalizer, round, ...
    x: torch.Tensor               # the teacher's input: augmented, normalized
    x01: torch.Tensor             # the rendered images in [0, 1] (before augmentation)
    t_logits: torch.Tensor
    targets: torch.Tensor
    stats: list["BNStats"]        # BN statistics of the teacher's pass on x
    tap: "FeatureTap | ProbedFeatures"  # the teacher's pooled stage outputs on x
    head_logits: torch.Tensor | None = None   # h(f_T), set by L_H (the app shows h's agreement with the teacher)
    states: dict[str, Any] = field(default_factory=dict)   # the terms' states (Term.make_state), by term key
    _student_logits: torch.Tensor | None = field(default=None, repr=False)

    @property
    def cfg(self):
        return self.synth.cfg

    def state(self, key: str):
        """The state term `key` built at the start (None when it keeps none in this run)."""
        return self.states.get(key)

    def student_logits(self) -> torch.Tensor:
        if self._student_logits is None:
            self._student_logits = self.synth.student(self.x).float()
        return self._student_logits


def _heterogeneity(s: StepTensors) -> torch.Tensor:
    s.head_logits = s.synth.head(s.tap.concat_of(s.cfg.h_stages)).float()
    return _L().heterogeneity_ce(s.head_logits, s.targets)


def _bn_statistics(s: StepTensors) -> torch.Tensor:
    mom = s.state("bns")
    return _L().bn_stat_loss(s.stats, first_multiplier=s.cfg.bn_first_multiplier,
                             momentum_stats=mom.stats if mom is not None else None, momentum=s.cfg.bn_momentum)


def _bn_momentum_state(synth):
    if synth.cfg.bn_momentum <= 0:
        return None
    from .synth.term_state import BNMomentumState
    return BNMomentumState(synth)


def _adversarial(s: StepTensors) -> torch.Tensor | None:
    cfg = s.cfg
    if not s.synth.adversarial_on:  # Fast-Datafree's warm-up
        return None
    if cfg.adv_kind == "js":
        return -_L().js_divergence(s.student_logits(), s.t_logits, T=cfg.adv_T)
    reduction = "elementmean" if cfg.adv_reduction == "elementmean" else "mean"
    return _L().masked_adversarial_kl(s.student_logits(), s.t_logits, T=cfg.adv_T, use_mask=cfg.adv_kind == "masked_kl",
                                   reduction=reduction)


def _one_hot(s: StepTensors) -> torch.Tensor:
    return _L().one_hot_ce(s.t_logits, s.targets)


def _contrastive(s: StepTensors) -> torch.Tensor:
    return s.state("cr").loss(s)


def _contrastive_state(synth):
    if synth.cfg.cr <= 0:
        return None
    from .synth.term_state import ContrastiveState
    return ContrastiveState(synth)


def _activation(s: StepTensors) -> torch.Tensor:
    return _L().dafl_activation_loss(s.tap.features["penultimate"])


def _balance(s: StepTensors) -> torch.Tensor:
    return _L().dafl_balance_loss(s.t_logits, log_base=s.cfg.balance_log_base)


def _total_variation(s: StepTensors) -> torch.Tensor:
    # on the images in the teacher's input space, as DeepInversion optimizes them
    return _L().total_variation(s.synth.normalizer(s.x01), form=s.cfg.tv_form)


def _needs_generator(cfg) -> str | None:
    return "needs a generator; it does not apply to param=pixels" if cfg.param == "pixels" else None


@dataclass(frozen=True)
class Term:
    key: str                      # its name in step reports, charts and metrics
    weight: str                   # the SynthConfig field that scales it
    default: float                # the weight when no preset sets it
    label: str                    # the app's slider label
    latex: str
    explain: str
    compute: Callable[[StepTensors], torch.Tensor | None]   # None: not active at this step (e.g. a warm-up)
    stages: Callable[[Any], tuple[str, ...]] = lambda cfg: ()  # the teacher stages it reads (feature taps)
    requires: Callable[[Any], str | None] = lambda cfg: None  # why it cannot be used with this config, or None
    switchable: bool = True       # can it be switched on/off during a run (some need state built at start)
    # the state it carries (ifhe.synth.term_state.TermState), built when a synthesizer starts; None: none needed
    make_state: Callable[[Any], Any] = lambda synth: None
    primary: bool = False         # one of the paper's alpha, beta, gamma
    slider_max: float = 3.0


TERMS: tuple[Term, ...] = (
    Term("H", "alpha", 0.0, "α — heterogeneity L_H",
         r"\small \mathcal{L}_H = \mathrm{CE}\big(h(f_T(\hat x)),\, t\big)",
         "h must recognise the target class t from the teacher's pooled intermediate features "
         "f_T = [f̄₁, f̄₂, f̄₃]: the features of different classes have to differ (IFHE's term).",
         _heterogeneity, stages=lambda cfg: tuple(cfg.h_stages), primary=True),
    Term("bns", "beta", 1.0, "β — BN statistics L_bns",
         r"\small \mathcal{L}_{bns} = \sum_{l} \lVert \tilde\mu_l - \mu_l \rVert_2 + "
         r"\lVert \tilde\sigma^2_l - \sigma^2_l \rVert_2",
         "the batch mean and variance at every BatchNorm input match the teacher's running statistics "
         "(DeepInversion's prior for realistic images).",
         _bn_statistics, primary=True, slider_max=20.0, make_state=_bn_momentum_state),
    Term("adv", "gamma", 0.0, "γ — adversarial L_adv",
         r"\small \mathcal{L}_{adv} = -\tfrac{1}{N}\sum_i m_i\,\mathrm{KL}\big(T(\hat x_i)\,\Vert\, S(\hat x_i)\big)",
         "m_i = 1 where student and teacher agree on x̂_i: those images are pushed to where they disagree, so "
         "the bank keeps teaching the student something new.",
         _adversarial, primary=True),
    Term("oh", "oh", 0.0, "one-hot CE L_oh",
         r"\small \mathcal{L}_{oh} = \mathrm{CE}\big(T(\hat x),\, t\big)",
         "the teacher must classify x̂ as its target class t (the usual inversion term; IFHE drops it).",
         _one_hot),
    Term("cr", "cr", 0.0, "contrastive L_cr (CMI)",
         r"\small \mathcal{L}_{cr} = -\tfrac{1}{N}\sum_i \log \frac{e^{\langle v_i, v_i^+\rangle/\tau}}"
         r"{\sum_j e^{\langle v_i, v_j\rangle/\tau}}",
         "each image's local crop must pick its own global view among the current batch and a memory of "
         "earlier images: the images of a bank must differ from one another (CMI).",
         _contrastive, requires=_needs_generator, switchable=False, make_state=_contrastive_state),
    Term("act", "act", 0.0, "activation L_act (DAFL)",
         r"\small \mathcal{L}_{act} = -\tfrac{1}{N}\lVert f_T^{pen}(\hat x)\rVert_1",
         "strong activations of the teacher's penultimate features (DAFL).",
         _activation, stages=lambda cfg: ("penultimate",), requires=_needs_generator),
    Term("balance", "balance", 0.0, "class balance L_ie (DAFL)",
         r"\small \mathcal{L}_{ie} = \sum_c \bar p_c \log \bar p_c,\ \ \bar p = \tfrac{1}{N}\sum_i T(\hat x_i)",
         "the teacher's mean prediction over the batch is pushed towards uniform: every class appears (DAFL).",
         _balance, slider_max=20.0),
    Term("tv", "tv", 0.0, "total variation L_tv",
         r"\small \mathcal{L}_{tv} = \sum_{d} \mathrm{mean}\,\lvert \hat x - \mathrm{shift}_d(\hat x) \rvert",
         "neighbouring pixels should be alike: an image prior against noise (DeepInversion).",
         _total_variation, slider_max=0.01),
)

BY_KEY: dict[str, Term] = {t.key: t for t in TERMS}
BY_WEIGHT: dict[str, Term] = {t.weight: t for t in TERMS}
WEIGHTS: tuple[str, ...] = tuple(BY_WEIGHT)   # every live loss weight, by its config name
PRIMARY: tuple[str, ...] = tuple(t.weight for t in TERMS if t.primary)


def active_terms(cfg) -> list[Term]:
    return [t for t in TERMS if getattr(cfg, t.weight) > 0]


def tapped_stages(cfg) -> list[str]:
    """The teacher stages the active terms read, each once, in order."""
    return list(dict.fromkeys(s for t in active_terms(cfg) for s in t.stages(cfg)))


def compute_terms(cfg, tensors: StepTensors) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Every active term's value and their weighted sum (None when nothing is active at this step)."""
    values, total = {}, None
    for t in active_terms(cfg):
        v = t.compute(tensors)
        if v is None:
            continue
        values[t.key] = v
        w = getattr(cfg, t.weight)
        total = w * v if total is None else total + w * v
    return values, total
