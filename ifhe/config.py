"""Frozen run configuration, the method presets, validation and YAML/JSON io.

A method is a parametrization (pixels, generator + z, meta-generator, free-running generator) plus the weights
of the loss terms. The paper's alpha, beta, gamma are the weights of L_H, L_bns and L_adv; every preset can take
alpha > 0, so "DAFL + IFHE" is the DAFL preset with alpha set.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any

from .catalog import ARCHITECTURES
from .errors import IfheError
from .methods import METHOD_SPECS, METHODS
from .terms import BY_WEIGHT, TERMS, WEIGHTS

PARAMETRIZATIONS = ("pixels", "generator", "meta", "label")
GENERATORS = ("cmi", "large", "dafl", "zskt")   # see ifhe.models.generator
EMBEDDINGS = ("classifier", "onehot", "gaussian")   # class embeddings of param=label (NAYER)
ADV_KINDS = ("masked_kl", "kl", "js")
AUGMENTS = ("crop_flip", "roll_flip", "none")   # before the teacher during synthesis
DISTILL_SOURCES = ("bank", "generator", "round", "regenerate")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("cosine", "multistep")
KL_REDUCTIONS = ("batchmean", "elementmean")  # elementmean: over N x C, F.kl_div's default (ZSKT)
SCALES = ("reference", "cpu")
PRECISIONS = ("auto", "fp32", "bf16")  # of forward passes: auto = what measures faster here (ifhe.precision)
SCHEDULES = ("one_cycle", "swa")  # learning-rate schedules of supervised training; see ifhe.train
SWA_BN = ("average", "recompute")  # BN statistics of an SWA model: averaged with the weights, or recomputed


@dataclass(frozen=True)
class _SynthSettings:
    """Everything about synthesis except the weights of the loss terms (those come from ifhe.terms.TERMS)."""

    param: str = "generator"          # pixels | generator | meta | label (NAYER: images from class embeddings)
    generator: str = "cmi"            # which generator network (GENERATORS)
    iterations: int = 200             # optimizer steps per round
    batch_size: int = 256
    lr_g: float = 1e-3                # generator (or pixel) learning rate
    lr_z: float = 1e-3                # latent learning rate; 0 = z is resampled, not optimized (GAN-style)
    betas: tuple[float, ...] | None = None   # Adam's betas; None: (0.5, 0.999) for generators, (0.5, 0.99) pixels
    lr_g_schedule: str = "constant"   # constant | cosine over the run (ZSKT)
    reset_generator: bool = True      # re-initialise the generator every round (CMI)
    reset_l0_at: float | None = None  # Fast: re-initialise the generator's first layer once, at this fraction of the run
    grad_clip: float = 0.0            # clip the generator's gradient norm (ZSKT); 0 = no clipping
    nz: int = 256
    augment: str = "crop_flip"        # before the teacher: crop_flip (CMI) | roll_flip (DeepInversion) | none
    adv_kind: str = "masked_kl"       # masked_kl (CMI/Fast/IFHE) | kl (ZSKT/DFQ) | js (ADI)
    adv_T: float = 1.0
    adv_reduction: str = "batchmean"  # of the adversarial KL: batchmean | elementmean (ZSKT's F.kl_div default)
    cr_T: float = 0.1
    cr_bank: int = 40960              # CMI's memory of earlier images' (local, global) features, rows
    cr_negatives: int = 4096          # rows drawn from it at random each iteration
    cr_head_dim: int = 256
    balance_log_base: float = math.e  # DAFL's own code takes log10, CMI's natural log
    tv_form: str = "l1"               # l1 (CMI) | l2 (NVlabs): see ifhe.losses.total_variation
    bn_momentum: float = 0.0          # Fast: blend batch statistics with earlier rounds'
    bn_first_multiplier: float = 1.0
    targets: str = "random"           # random (sorted, for display) | balanced (NAYER) | argmax (teacher's own,
                                      # DAFL/ZSKT/DFQ)
    # param=label (NAYER): where the class embedding comes from (classifier: the teacher's last layer's rows;
    # onehot; gaussian: a fixed draw; see ifhe.models.generator.class_embedding), and the rounds a generator
    # lives before it is created anew (0 = never); nz is the noisy layers' output size
    embedding: str = "classifier"
    g_life: int = 0
    commit_every: int = 1             # rounds between batches kept in the bank (GAN-style rounds are tiny)
    h_stages: tuple[str, ...] = ("block1", "block2", "block3")
    h_hidden: int = 256
    h_init: str = ""                  # h before the first round: "" random (the paper), "pretrained" (the h shipped
                                      # with the teacher) or an earlier run's head.safetensors
    # GAN-style methods score the generator against the student in training mode (batch statistics), the mode
    # the student learns in; bank methods use its running statistics (eval mode), as their reference code does
    student_train: bool = False

    def validate(self) -> "SynthConfig":
        _choice("synth.param", self.param, PARAMETRIZATIONS)
        _choice("synth.generator", self.generator, GENERATORS)
        _choice("synth.adv_kind", self.adv_kind, ADV_KINDS)
        _choice("synth.augment", self.augment, AUGMENTS)
        _choice("synth.targets", self.targets, ("random", "balanced", "argmax"))
        _choice("synth.embedding", self.embedding, EMBEDDINGS)
        _choice("synth.tv_form", self.tv_form, ("l1", "l2"))
        _choice("synth.lr_g_schedule", self.lr_g_schedule, ("constant", "cosine"))
        _choice("synth.adv_reduction", self.adv_reduction, KL_REDUCTIONS)
        if self.betas is not None and (len(self.betas) != 2 or not all(_is_number(b) and 0 <= b < 1
                                                                          for b in self.betas)):
            raise IfheError(f"synth.betas must be two numbers in [0, 1) or null, got {self.betas!r}")
        for name in ("iterations", "batch_size", "nz", "cr_bank", "cr_negatives", "cr_head_dim", "commit_every"):
            _positive_int(f"synth.{name}", getattr(self, name))
        for name in ("lr_z", "h_hidden", "grad_clip", "g_life"):
            _non_negative(f"synth.{name}", getattr(self, name))
        for name in ("lr_g", "adv_T", "cr_T", "bn_first_multiplier"):
            _positive(f"synth.{name}", getattr(self, name))
        if not _is_number(self.balance_log_base) or self.balance_log_base <= 1:
            raise IfheError(f"synth.balance_log_base must be a number > 1, got {self.balance_log_base!r}")
        if not 0 <= self.bn_momentum < 1:
            raise IfheError(f"synth.bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.reset_l0_at is not None and not (_is_number(self.reset_l0_at) and 0 <= self.reset_l0_at <= 1):
            raise IfheError(f"synth.reset_l0_at must be a fraction of the run in [0, 1] or null, got {self.reset_l0_at!r}")
        if self.lr_g_schedule != "constant" and self.param != "generator":
            raise IfheError("synth.lr_g_schedule: a schedule of the generator's learning rate needs param=generator")
        if self.reset_l0_at is not None and self.param not in ("generator", "meta"):
            raise IfheError(f"synth.reset_l0_at: re-initialising a generator's first layer needs param=generator "
                            f"or meta, not {self.param}")
        if self.cr_negatives > self.cr_bank:
            raise IfheError(f"synth.cr_negatives ({self.cr_negatives}) cannot exceed synth.cr_bank ({self.cr_bank})")
        for t in TERMS:
            _non_negative(f"synth.{t.weight}", getattr(self, t.weight))
            why = t.requires(self) if getattr(self, t.weight) > 0 else None
            if why:
                raise IfheError(f"synth.{t.weight} ({t.label}) {why}")
        if self.batch_size < 2 and self.beta > 0:
            raise IfheError("synth.batch_size must be >= 2 when beta > 0 (batch statistics)")
        if not self.h_stages:
            raise IfheError("synth.h_stages must name at least one stage")
        if not isinstance(self.h_init, str):
            raise IfheError(f"synth.h_init must be '', 'pretrained' or a head.safetensors path, got {self.h_init!r}")
        return self

    def with_weights(self, **weights: Any) -> "SynthConfig":
        """This config with some loss weights changed during a run (the app's sliders). The one validator of live
        weights: an unknown name, a value that is not a number >= 0, or a term that cannot be switched on or
        off mid-run is refused here, when the value arrives."""
        unknown = sorted(set(weights) - set(WEIGHTS))
        if unknown:
            raise IfheError(f"not a loss weight: {', '.join(unknown)}; the weights are {', '.join(WEIGHTS)}")
        for name, value in weights.items():
            _non_negative(name, value)
            term = BY_WEIGHT[name]
            if not term.switchable and (value > 0) != (getattr(self, name) > 0):
                raise IfheError(f"{name} ({term.label}) cannot be switched {'on' if value > 0 else 'off'} during a "
                                f"run: it needs state built when the run starts")
        return replace(self, **{k: float(v) for k, v in weights.items()}).validate()


# The weights of the loss terms are fields too (synth.alpha, synth.beta, ...), one per row of ifhe.terms.TERMS.
SynthConfig = make_dataclass(
    "SynthConfig", [(t.weight, float, field(default=t.default)) for t in TERMS], bases=(_SynthSettings,),
    frozen=True, namespace={"__doc__": "Synthesis settings; the loss weights are the rows of ifhe.terms.TERMS.",
                            "__module__": __name__})


@dataclass(frozen=True)
class DistillConfig:
    steps_per_round: int = 400
    batch_size: int = 128
    optimizer: str = "sgd"            # sgd (momentum) | adam (ZSKT)
    lr: float = 0.1
    lr_min: float = 0.0               # the schedule's floor (Fast: 2e-4)
    lr_schedule: str = "cosine"       # cosine over the run | multistep (x0.1 at each of lr_milestones)
    lr_milestones: tuple[float, ...] = ()   # fractions of the run (DAFL: 0.4, 0.8)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 0.0            # clip the student's gradient norm (ZSKT: 5); 0 = no clipping
    T: float = 20.0                   # tau of KL(T/tau || S/tau)
    kl_reduction: str = "batchmean"   # of the KD loss: batchmean | elementmean (ZSKT's F.kl_div default: / N x C)
    # bank: the memory of synthesized images | generator: fresh samples every step (DFQ) | round: the round's
    # batch as it was scored, float (DAFL) | regenerate: the round's z through the updated generator (ZSKT)
    source: str = "bank"
    augment: bool = True
    train_head: bool = True           # h learns KL(T/tau || h(f_T)/tau) on the same batches
    # h-only KD steps a round when the student is not distilled (steps_per_round = 0) but L_H is on: h must learn
    # for L_H to mean anything (a synthesis-only run of IFHE)
    head_steps: int = 20
    at: float = 0.0                   # attention transfer weight (ZSKT's beta): stages of equal size
    # the budget rule (README "Budgets"): > 0 gives KD this share of the run's time, as a number of KD steps a
    # round measured in the first KD round (KD seconds = share / (1 - share) x that round's synthesis seconds)
    # and fixed from then on; 0 = steps_per_round as set
    kd_share: float = 0.0

    def validate(self) -> "DistillConfig":
        _choice("distill.source", self.source, DISTILL_SOURCES)
        _choice("distill.optimizer", self.optimizer, OPTIMIZERS)
        _choice("distill.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("distill.kl_reduction", self.kl_reduction, KL_REDUCTIONS)
        _non_negative("distill.steps_per_round", self.steps_per_round)
        _non_negative("distill.head_steps", self.head_steps)
        _positive_int("distill.batch_size", self.batch_size)
        for name in ("lr", "T"):
            _positive(f"distill.{name}", getattr(self, name))
        for name in ("momentum", "weight_decay", "at", "lr_min", "grad_clip"):
            _non_negative(f"distill.{name}", getattr(self, name))
        if not (_is_number(self.kd_share) and 0 <= self.kd_share < 1):
            raise IfheError(f"distill.kd_share must be a fraction in [0, 1), got {self.kd_share!r}")
        if self.kd_share > 0 and self.source != "bank":
            raise IfheError("distill.kd_share sizes KD from a bank; a method that distills from fresh generator "
                            "samples keeps its own KD steps per generator step")
        if self.lr_min > self.lr:
            raise IfheError(f"distill.lr_min ({self.lr_min}) is above distill.lr ({self.lr})")
        if any(not (_is_number(m) and 0 < m < 1) for m in self.lr_milestones):
            raise IfheError(f"distill.lr_milestones must be fractions of the run in (0, 1), got {self.lr_milestones}")
        return self


@dataclass(frozen=True)
class RunConfig:
    teacher: str = "cifar10_wrn16_2"  # zoo name, or a .safetensors file (then teacher_arch if not recorded)
    teacher_arch: str | None = None
    student: str = "wrn16_1"
    method: str = "ifhe"
    scale: str = "cpu"
    synth: SynthConfig = field(default_factory=SynthConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rounds: int = 200                 # upper bound on synthesis+KD rounds
    budget_minutes: float | None = None
    # Fast-Datafree's warm-up, as a fraction of the run (rounds, or time when there is a budget): the generator
    # learns alone (no adversarial term, no KD, the KD schedule waits). 20/220 in Fast's scripts.
    warmup: float = 0.0
    clock: str = "wall"               # wall | cpu: what budgets and curves measure (cpu: immune to other load)
    eval_every: int = 250             # KD steps between evaluations on real data; 0 = only at the end
    checkpoint_seconds: float = 20.0  # at most one checkpoint per this many seconds (always at the end)
    eval_images: int | None = None    # a fixed random subset of the real test set, for speed; None = all
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    precision: str = "auto"           # auto | fp32 | bf16: forward passes of synthesis and KD (losses stay fp32)
    log_every: int = 10               # host syncs (loss read-out, NaN check) every k steps
    preview_every: int = 0            # 0 = no image previews in events (CLI); the app sets it
    data: str | None = None
    bank: str | None = None           # distill from this existing bank instead of synthesizing (`ifhe distill`)

    def validate(self) -> "RunConfig":
        _choice("method", self.method, METHODS)
        _choice("scale", self.scale, SCALES)
        _choice("clock", self.clock, ("wall", "cpu"))
        _choice("precision", self.precision, PRECISIONS)
        _positive_int("rounds", self.rounds)
        _positive_int("log_every", self.log_every)
        _non_negative("eval_every", self.eval_every)
        _non_negative("preview_every", self.preview_every)
        _non_negative("checkpoint_seconds", self.checkpoint_seconds)
        if not (_is_number(self.warmup) and 0 <= self.warmup < 1):
            raise IfheError(f"warmup must be a fraction of the run in [0, 1), got {self.warmup!r}")
        if self.budget_minutes is not None:
            _positive("budget_minutes", self.budget_minutes)
        if self.eval_images is not None:
            _positive_int("eval_images", self.eval_images)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise IfheError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.student not in ARCHITECTURES:
            raise IfheError(f"student: unknown architecture {self.student!r}; known: {', '.join(ARCHITECTURES)}")
        if self.teacher_arch is not None and self.teacher_arch not in ARCHITECTURES:
            raise IfheError(f"teacher_arch: unknown architecture {self.teacher_arch!r}; known: "
                            f"{', '.join(ARCHITECTURES)}")
        if not self.teacher:
            raise IfheError("teacher: a zoo name or a .safetensors file is required")
        self.synth.validate()
        self.distill.validate()
        if self.bank and self.distill.source != "bank":
            raise IfheError("bank: distilling from an existing bank needs distill.source=bank")
        if self.distill.source != "bank" and self.synth.param == "pixels":
            raise IfheError(f"distill.source={self.distill.source} needs a generator; param=pixels has none")
        if self.distill.source == "regenerate" and self.synth.param != "generator":
            raise IfheError("distill.source=regenerate re-renders the round's z: it needs param=generator")
        return self


def _choice(name: str, value: Any, options: tuple) -> Any:
    if value not in options:
        raise IfheError(f"{name}: unknown value {value!r}; choose one of {', '.join(options)}")
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _positive(name: str, v: Any) -> None:
    if not _is_number(v) or v <= 0:
        raise IfheError(f"{name} must be a number > 0, got {v!r}")


def _non_negative(name: str, v: Any) -> None:
    if not _is_number(v) or v < 0:
        raise IfheError(f"{name} must be a number >= 0, got {v!r}")


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise IfheError(f"{name} must be an integer >= 1, got {v!r}")


# ---- presets -------------------------------------------------------------------------------------------------
# The reference settings of every method live in ifhe.methods (with their sources; docs/FIDELITY.md has them
# setting by setting). Here: the one rule that sizes them for a CPU.

CPU_BATCH = 64


def _cpu_scale(synth: dict, distill: dict) -> tuple[dict, dict]:
    """One rule for every method, so none is tuned more than another: smaller batches and rounds.

    Inversion batches of 64; pixel methods 200 iterations a round, generator+z methods 20 with the generator
    kept across rounds (a reset generator cannot learn anything in 20 steps); meta and GAN-style generators
    keep their few steps. CMI's feature memory keeps its proportions to the batch (160 rounds' batches, 16
    negatives per image). KD: 50 steps of 64 images per round from a bank, or the reference ratio for
    GAN-style methods. Fractions of the run (warm-up, Fast's layer reset, learning-rate milestones) need no
    scaling: they apply to rounds or to a time budget alike.
    """
    s, d = dict(synth), dict(distill)
    ratio = CPU_BATCH / s.get("batch_size", 256)
    s["batch_size"] = CPU_BATCH
    if s["param"] == "pixels":
        s["iterations"] = 200
    elif s["param"] == "generator" and s.get("lr_z", 1e-3) > 0:
        s["iterations"], s["reset_generator"] = 20, False
    elif s["param"] == "label":   # a kept generator, as generator + z: at most 20 steps a round
        s["iterations"] = min(s.get("iterations", 200), 20)
    if s.get("cr"):
        s["cr_bank"] = max(1, round(s.get("cr_bank", 40960) * ratio))
        s["cr_negatives"] = max(1, round(s.get("cr_negatives", 4096) * ratio))
    d["batch_size"] = CPU_BATCH
    if d.get("source", "bank") == "bank":
        d["steps_per_round"] = 50
    return s, d


def preset(method: str, scale: str = "cpu") -> tuple[SynthConfig, DistillConfig]:
    _choice("method", method, METHODS)
    _choice("scale", scale, SCALES)
    spec = METHOD_SPECS[method]
    synth, distill = dict(spec.synth), dict(spec.distill)
    if scale == "cpu":
        synth, distill = _cpu_scale(synth, distill)
        synth.update(spec.cpu_synth)
        distill.update(spec.cpu_distill)
    return SynthConfig(**synth), DistillConfig(**distill)


def preset_run(method: str, scale: str = "cpu") -> dict:
    """The method's run-level settings (warm-up; the reference scale also its number of rounds)."""
    spec = METHOD_SPECS[_choice("method", method, METHODS) or method]
    run = dict(spec.run)
    if scale == "cpu":
        run.pop("rounds", None)
        run.update(spec.cpu_run)
    return run


def reference_kd_passes(method: str) -> int | None:
    """Student forward+backward passes (images) of the method's reference run: rounds after the warm-up x KD
    steps a round x KD batch, from its `--scale reference` preset (the denominator of a run's "share of the
    reference run's KD sample-passes")."""
    if method not in METHOD_SPECS:
        return None
    cfg = make_config(method, "reference")
    return int(round(cfg.rounds * (1 - cfg.warmup))) * cfg.distill.steps_per_round * cfg.distill.batch_size


def make_config(method: str = "ifhe", scale: str = "cpu", synth: dict | None = None, distill: dict | None = None,
                **run: Any) -> RunConfig:
    """A validated RunConfig: the preset for `method`/`scale`, then the given overrides."""
    s, d = preset(method, scale)
    try:
        s = replace(s, **_coerce(SynthConfig, synth or {}, "synth"))
        d = replace(d, **_coerce(DistillConfig, distill or {}, "distill"))
        run = {**preset_run(method, scale), **_coerce(RunConfig, run, "")}
        cfg = RunConfig(method=method, scale=scale, synth=s, distill=d, **run)
    except TypeError as e:
        raise IfheError(str(e)) from None
    return cfg.validate()


def _coerce(cls, values: dict, prefix: str) -> dict:
    known = {f.name: f for f in fields(cls)}
    out = {}
    for k, v in values.items():
        name = f"{prefix}.{k}" if prefix else k
        if k not in known or k in ("synth", "distill", "method", "scale"):
            raise IfheError(f"{name}: unknown setting; known: {', '.join(n for n in known if n not in ('synth', 'distill'))}")
        if k in ("h_stages", "lr_milestones", "betas") and isinstance(v, (list, str)):
            v = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
            if k != "h_stages":
                try:
                    v = tuple(float(x) for x in v)
                except (TypeError, ValueError):
                    raise IfheError(f"{name}: expected numbers, got {values[k]!r}") from None
        out[k] = v
    return out


# ---- io ----------------------------------------------------------------------------------------------------

def to_dict(cfg: RunConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["synth"]["h_stages"] = list(cfg.synth.h_stages)
    d["distill"]["lr_milestones"] = list(cfg.distill.lr_milestones)
    d["synth"]["betas"] = list(cfg.synth.betas) if cfg.synth.betas is not None else None
    return d


def from_dict(d: dict) -> RunConfig:
    if not isinstance(d, dict):
        raise IfheError("config must be a mapping of settings")
    d = dict(d)
    method, scale = d.pop("method", "ifhe"), d.pop("scale", "cpu")
    synth, distill = d.pop("synth", None) or {}, d.pop("distill", None) or {}
    if not isinstance(synth, dict) or not isinstance(distill, dict):
        raise IfheError("synth and distill must be mappings of settings")
    for key in ("method", "scale"):
        value = locals()[key]
        if not isinstance(value, str):
            raise IfheError(f"{key}: expected a name, got {value!r}")
    return make_config(method, scale, synth, distill, **d)


def read_config_file(path: str | Path) -> dict:
    """The raw settings of a YAML/JSON config file (sparse: unspecified settings come from the preset)."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise IfheError(f"config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IfheError(f"config {path}: cannot parse ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise IfheError(f"config {path}: expected a mapping of settings at the top level")
    return data


def load_config(path: str | Path) -> RunConfig:
    return from_dict(read_config_file(path))


def dump_yaml(cfg: RunConfig) -> str:
    import yaml
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
