"""Frozen run configuration, the method presets, validation and YAML/JSON io.

A method is a parametrization (pixels, generator + z, meta-generator, free-running generator) plus the weights
of the loss terms. The paper's alpha, beta, gamma are the weights of L_H, L_bns and L_adv; every preset can take
alpha > 0, so "DAFL + IFHE" is the DAFL preset with alpha set.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import IfheError

METHODS = ("deepinversion", "adi", "dafl", "zskt", "dfq", "cmi", "fast", "ifhe")
PARAMETRIZATIONS = ("pixels", "generator", "meta")
ADV_KINDS = ("masked_kl", "kl", "js")
DISTILL_SOURCES = ("bank", "generator", "round")
SCALES = ("reference", "cpu")
PRECISIONS = ("fp32", "bf16")  # of forward passes; see ifhe.device.autocast
SCHEDULES = ("one_cycle", "swa")  # learning-rate schedules of supervised training; see ifhe.train
SWA_BN = ("average", "recompute")  # BN statistics of an SWA model: averaged with the weights, or recomputed


@dataclass(frozen=True)
class SynthConfig:
    param: str = "generator"          # pixels | generator | meta
    iterations: int = 200             # optimizer steps per round
    batch_size: int = 256
    lr_g: float = 1e-3                # generator (or pixel) learning rate
    lr_z: float = 1e-3                # latent learning rate; 0 = z is resampled, not optimized (GAN-style)
    reset_generator: bool = True      # re-initialise the generator every round (CMI)
    nz: int = 256
    alpha: float = 0.0                # L_H: CE(h(f_T), t)
    beta: float = 1.0                 # L_bns
    gamma: float = 0.0                # adversarial term
    adv_kind: str = "masked_kl"       # masked_kl (CMI/Fast/IFHE) | kl (ZSKT/DFQ) | js (ADI)
    adv_T: float = 1.0
    adv_warmup_rounds: int = 0        # Fast: no adversarial term in the first rounds
    oh: float = 0.0                   # L_oh: CE(T(x), t)
    cr: float = 0.0                   # CMI contrastive weight
    cr_T: float = 0.1
    cr_negatives: int = 4096          # bounded cache of earlier rounds' features (CMI)
    cr_head_dim: int = 256
    act: float = 0.0                  # DAFL activation
    balance: float = 0.0              # DAFL information entropy
    tv: float = 0.0                   # total-variation image prior (DeepInversion)
    bn_momentum: float = 0.0          # Fast: blend batch statistics with earlier rounds'
    bn_first_multiplier: float = 1.0
    targets: str = "random"           # random (sorted, for display) | argmax (teacher's own, DAFL/ZSKT/DFQ)
    commit_every: int = 1             # rounds between batches kept in the bank (GAN-style rounds are tiny)
    h_stages: tuple[str, ...] = ("block1", "block2", "block3")
    h_hidden: int = 256
    # GAN-style methods score the generator against the student in training mode (batch statistics), the mode
    # the student learns in; bank methods use its running statistics (eval mode), as their reference code does
    student_train: bool = False

    def validate(self) -> "SynthConfig":
        _choice("synth.param", self.param, PARAMETRIZATIONS)
        _choice("synth.adv_kind", self.adv_kind, ADV_KINDS)
        _choice("synth.targets", self.targets, ("random", "argmax"))
        for name in ("iterations", "batch_size", "nz", "cr_negatives", "cr_head_dim", "commit_every"):
            _positive_int(f"synth.{name}", getattr(self, name))
        for name in ("alpha", "beta", "gamma", "oh", "cr", "act", "balance", "tv", "lr_z", "h_hidden",
                     "adv_warmup_rounds"):
            _non_negative(f"synth.{name}", getattr(self, name))
        for name in ("lr_g", "adv_T", "cr_T", "bn_first_multiplier"):
            _positive(f"synth.{name}", getattr(self, name))
        if not 0 <= self.bn_momentum < 1:
            raise IfheError(f"synth.bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.param == "pixels" and (self.cr or self.act):
            raise IfheError("synth.cr and synth.act need a generator; they do not apply to param=pixels")
        if self.batch_size < 2 and self.beta > 0:
            raise IfheError("synth.batch_size must be >= 2 when beta > 0 (batch statistics)")
        if not self.h_stages:
            raise IfheError("synth.h_stages must name at least one stage")
        return self


@dataclass(frozen=True)
class DistillConfig:
    steps_per_round: int = 400
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    T: float = 20.0                   # tau of KL(T/tau || S/tau)
    source: str = "bank"              # bank (memory of synthesized images) | generator (fresh samples every
                                      # step) | round (the round's generated batch for all its steps, ZSKT)
    augment: bool = True
    train_head: bool = True           # h learns KL(T/tau || h(f_T)/tau) on the same batches
    at: float = 0.0                   # attention transfer weight (ZSKT's beta): stages of equal size

    def validate(self) -> "DistillConfig":
        _choice("distill.source", self.source, DISTILL_SOURCES)
        _non_negative("distill.steps_per_round", self.steps_per_round)
        _positive_int("distill.batch_size", self.batch_size)
        for name in ("lr", "T"):
            _positive(f"distill.{name}", getattr(self, name))
        for name in ("momentum", "weight_decay", "at"):
            _non_negative(f"distill.{name}", getattr(self, name))
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
    clock: str = "wall"               # wall | cpu: what budgets and curves measure (cpu: immune to other load)
    eval_every: int = 250             # KD steps between evaluations on real data; 0 = only at the end
    checkpoint_seconds: float = 20.0  # at most one checkpoint per this many seconds (always at the end)
    eval_images: int | None = None    # a fixed random subset of the real test set, for speed; None = all
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    precision: str = "fp32"           # fp32 | bf16: forward passes of synthesis and KD (losses stay fp32)
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
        if self.budget_minutes is not None:
            _positive("budget_minutes", self.budget_minutes)
        if self.eval_images is not None:
            _positive_int("eval_images", self.eval_images)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise IfheError(f"seed must be an integer >= 0, got {self.seed!r}")
        from .models import ARCHITECTURES
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
        return self


def _choice(name: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise IfheError(f"{name}: unknown value {value!r}; choose one of {', '.join(options)}")


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
# Reference values: the public CMI / Fast-Datafree / DeepInversion scripts for WRN pairs on CIFAR-10, and the
# IFHE paper's alpha = 0.5 (CIFAR-10). IFHE is assumed to keep CMI's generator schedule (the paper builds on it).

_REFERENCE: dict[str, tuple[dict, dict]] = {
    "deepinversion": (dict(param="pixels", iterations=2000, batch_size=256, lr_g=0.1, oh=1.0, beta=10.0,
                           tv=1e-3), dict(batch_size=256)),
    "adi": (dict(param="pixels", iterations=2000, batch_size=256, lr_g=0.1, oh=1.0, beta=10.0, tv=1e-3,
                 gamma=1.0, adv_kind="js", adv_T=3.0), dict(batch_size=256)),
    "dafl": (dict(param="generator", iterations=1, batch_size=256, lr_z=0.0, reset_generator=False, nz=512,
                  beta=0.0, oh=1.0, act=0.1, balance=20.0, targets="argmax", commit_every=20),
             dict(steps_per_round=5, batch_size=256, source="generator")),
    # ZSKT as its own paper and code run it (the CMI scripts' ZSKT scored the teacher against itself): the
    # generator maximizes KL(T||S) at T=1 against the student in training mode, then the student takes 10 steps
    # on that one pseudo-batch with KL at T=1 plus attention transfer (beta 250)
    "zskt": (dict(param="generator", iterations=1, batch_size=128, lr_z=0.0, reset_generator=False, beta=0.0,
                  gamma=1.0, adv_kind="kl", targets="argmax", commit_every=20, student_train=True),
             dict(steps_per_round=10, batch_size=128, source="round", T=1.0, at=250.0)),
    "dfq": (dict(param="generator", iterations=1, batch_size=256, lr_z=0.0, reset_generator=False, beta=1.0,
                 oh=1.0, gamma=1.0, adv_kind="kl", balance=20.0, targets="argmax", commit_every=20),
            dict(steps_per_round=10, batch_size=256, source="generator")),
    "cmi": (dict(param="generator", iterations=200, batch_size=256, lr_g=1e-3, lr_z=1e-3, reset_generator=True,
                 beta=1.0, oh=1.0, gamma=0.5, cr=0.8, cr_T=0.1), dict(steps_per_round=400, batch_size=128)),
    "fast": (dict(param="meta", iterations=5, batch_size=256, lr_g=3e-3, lr_z=0.01, reset_generator=False,
                  beta=10.0, bn_momentum=0.9, oh=0.4, gamma=1.1, adv_warmup_rounds=20),
             dict(steps_per_round=400, batch_size=256, lr=0.2)),
    "ifhe": (dict(param="generator", iterations=200, batch_size=256, lr_g=1e-3, lr_z=1e-3, reset_generator=True,
                  alpha=0.5, beta=1.0, gamma=0.5), dict(steps_per_round=400, batch_size=128)),
}


def _cpu_scale(synth: dict, distill: dict) -> tuple[dict, dict]:
    """One rule for every method, so none is tuned more than another: smaller batches and rounds.

    Inversion batches of 64; pixel methods 200 iterations a round, generator+z methods 20 with the generator
    kept across rounds (a reset generator cannot learn anything in 20 steps); meta and GAN-style generators
    keep their few steps. KD: 50 steps of 64 images per round, or the reference ratio for GAN-style methods.
    """
    s, d = dict(synth), dict(distill)
    s["batch_size"] = 64
    if s["param"] == "pixels":
        s["iterations"] = 200
    elif s["param"] == "generator" and s.get("lr_z", 1e-3) > 0:
        s["iterations"], s["reset_generator"] = 20, False
    if s.get("adv_warmup_rounds"):
        s["adv_warmup_rounds"] = 2
    if s.get("cr"):
        s["cr_negatives"] = 1024
    d["batch_size"] = 64
    if d.get("source", "bank") == "bank":
        d["steps_per_round"] = 50
    return s, d


def preset(method: str, scale: str = "cpu") -> tuple[SynthConfig, DistillConfig]:
    _choice("method", method, METHODS)
    _choice("scale", scale, SCALES)
    synth, distill = _REFERENCE[method]
    if scale == "cpu":
        synth, distill = _cpu_scale(synth, distill)
    return SynthConfig(**synth), DistillConfig(**distill)


def make_config(method: str = "ifhe", scale: str = "cpu", synth: dict | None = None, distill: dict | None = None,
                **run: Any) -> RunConfig:
    """A validated RunConfig: the preset for `method`/`scale`, then the given overrides."""
    s, d = preset(method, scale)
    try:
        s = replace(s, **_coerce(SynthConfig, synth or {}, "synth"))
        d = replace(d, **_coerce(DistillConfig, distill or {}, "distill"))
        cfg = RunConfig(method=method, scale=scale, synth=s, distill=d, **_coerce(RunConfig, run, ""))
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
        if k == "h_stages" and isinstance(v, (list, str)):
            v = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        out[k] = v
    return out


# ---- io ----------------------------------------------------------------------------------------------------

def to_dict(cfg: RunConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["synth"]["h_stages"] = list(cfg.synth.h_stages)
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
