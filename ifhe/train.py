"""Supervised training of teachers and scratch students on real data, resumable after a kill."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import load_state, save_state
from .fileio import read_meta
from .config import PRECISIONS, SCHEDULES, SWA_BN, _choice
from .data import NUM_CLASSES, Normalizer, cutout, load_split, normalization, random_crop_flip, to_unit
from .device import autocast, fast_layout, pick_device
from .errors import IfheError
from .evaluation import evaluate
from .jsonl import JsonlLog
from .losses import kd_kl
from .models import check_architecture, create_model
from .zoo import resolve_teacher


MOMENTUM_KEPT = ("auto", "full", "bf16", "none")
# What the one-cycle recipe takes from the fast-training literature (written into a published model's manifest).
RECIPE_SOURCES = (
    "one-cycle learning rate (linear warm-up, cosine to ~0): Smith & Topin 2019, Super-Convergence, arXiv:1708.07120",
    "few epochs with one-cycle, label smoothing, large batches: Page 2018, How to train your ResNet (DAWNBench)",
    "learning rate scaled with the batch: Goyal et al. 2017, arXiv:1706.02677",
    "label smoothing 0.1: Szegedy et al. 2016, Rethinking the Inception Architecture",
    "cutout (when --cutout > 0): DeVries & Taylor 2017, arXiv:1708.04552; 8x8 in Page 2018",
    "bf16 forward passes and channels_last only where measured faster on the machine (ifhe.precision)",
    "no test-time augmentation: a plain network evaluated on plain test images",
)
# What --distill-from adds (written into the manifest only when it is used).
DISTILL_SOURCES = (
    "distillation from an ensemble of teachers, its averaged softened probabilities as targets: Hinton, Vinyals "
    "& Dean 2015, Distilling the Knowledge in a Neural Network, arXiv:1503.02531",
    "a network of the teachers' own architecture as the student (born-again networks): Furlanello et al. 2018, "
    "arXiv:1805.04770",
    "0.9 KD + 0.1 cross-entropy at temperature 4, the CIFAR setting of Tian, Krishnan & Isola 2020 (CRD), "
    "arXiv:1910.10699",
)
# a resumable checkpoint that may enter git stays under this size (weights + what is kept of the momentum)
CHECKPOINT_BUDGET = 40 * 2 ** 20


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "wrn16_2"
    dataset: str = "cifar10"
    epochs: int = 30
    batch_size: int = 128
    max_lr: float = 0.2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.25
    seed: int = 0
    checkpoint_every: int = 100  # steps
    init_from: str | None = None  # start from these weights (zoo name or .safetensors): a fine-tuning stage
    # one_cycle: warm-up then cosine to ~0. swa: constant max_lr, the weights at the end of every epoch averaged
    # (stochastic weight averaging, Izmailov et al. 2018), BN statistics recomputed for the average at the end.
    schedule: str = "one_cycle"
    # the averaged model's BN statistics: "average" them with the weights (as weight EMAs do), or "recompute"
    # them on the augmented training images (SWA's paper). On the shipped WRN-16-2 (4 epochs at lr 0.005)
    # average gave the lower training loss, 0.126 vs 0.131 on 10,000 training images (test 90.16% vs 89.39%).
    swa_bn: str = "average"
    # fp32 | bf16: the forward pass under autocast, the loss in fp32 (ifhe.device.autocast); auto: what a probe of
    # this training step measures faster here (ifhe.precision), decided once and kept by the checkpoint
    precision: str = "auto"
    # what the checkpoint keeps of SGD's momentum (README "Resumable from git"): full (exact resume), bf16 (half
    # the bytes), none (weights only; the momentum is rebuilt on resume from `rebuild_steps` gradients), or auto:
    # the most that keeps the checkpoint under CHECKPOINT_BUDGET bytes
    momentum: str = "auto"
    rebuild_steps: int = 20
    # cutout patch side in pixels (0: off): one square of each training image set to the mean, as in Page's fast
    # CIFAR-10 recipe (8); regularizes short schedules that otherwise fit the training set (VGG11-BN, 40 epochs:
    # 98.8% train, 88.6% test)
    cutout: int = 0
    # comma-separated zoo names or .safetensors files of the same dataset: the loss becomes
    # distill_weight * KD(ensemble of them || model) + (1 - distill_weight) * cross-entropy, the targets being the
    # average of their softened probabilities on the same augmented batch (DISTILL_SOURCES)
    distill_from: str | None = None
    distill_temperature: float = 4.0
    distill_weight: float = 0.9

    def validate(self) -> "TrainConfig":
        check_architecture(self.arch)  # before any data is looked for (or downloaded)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("swa_bn", self.swa_bn, SWA_BN)
        _choice("precision", self.precision, PRECISIONS)
        _choice("momentum", self.momentum, MOMENTUM_KEPT)
        if not isinstance(self.cutout, int) or not 0 <= self.cutout <= 32:
            raise IfheError(f"cutout must be a patch side in pixels, 0-32, got {self.cutout!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "rebuild_steps"):
            if getattr(self, name) < 1:
                raise IfheError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_lr > 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise IfheError("max_lr must be > 0, weight_decay >= 0, 0 <= label_smoothing < 1")
        if not self.distill_temperature > 0 or not 0 <= self.distill_weight <= 1:
            raise IfheError("distill_temperature must be > 0 and 0 <= distill_weight <= 1")
        if self.distill_from is not None and not distill_sources(self):
            raise IfheError("distill_from names no teacher")
        return self


def distill_sources(cfg: TrainConfig) -> list[str]:
    return [s.strip() for s in (cfg.distill_from or "").split(",") if s.strip()]


def ensemble_logits(logits: Sequence[torch.Tensor], T: float) -> torch.Tensor:
    """Logits whose softmax at temperature T is the mean of the members' softmax at T (T * log of the mean
    probability), so an ensemble is a teacher for `kd_kl` like any other."""
    probs = torch.stack([F.softmax(z.float() / T, dim=1) for z in logits]).mean(0)
    return T * probs.clamp_min(1e-12).log()


def supervised_loss(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                    teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Label-smoothed cross-entropy, or with `teacher_logits` its mix with Hinton's KD (cfg.distill_weight)."""
    ce = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    if teacher_logits is None:
        return ce
    kd = kd_kl(logits.float(), teacher_logits, T=cfg.distill_temperature)
    return cfg.distill_weight * kd + (1 - cfg.distill_weight) * ce


def one_cycle_lr(step: int, total: int, max_lr: float, warmup: float) -> float:
    """Linear warm-up from max_lr/25 then cosine down to ~0, as torch's OneCycleLR (but stateless)."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return max_lr / 25 + (max_lr - max_lr / 25) * step / warm
    t = (step - warm) / max(1, total - warm)
    return max_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    return cfg.max_lr if cfg.schedule == "swa" else one_cycle_lr(step, total, cfg.max_lr, cfg.warmup)


def add_to_average(average: dict[str, torch.Tensor], model: torch.nn.Module, count: int) -> None:
    """average <- average + (w - average) / (count + 1) for every floating-point tensor of the model."""
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            average[k].add_(v.detach() - average[k], alpha=1.0 / (count + 1))


@torch.no_grad()
def recompute_bn_statistics(model: torch.nn.Module, images: torch.Tensor, norm: Normalizer, dev: torch.device,
                            batch_size: int = 500, seed: int = 0) -> None:
    """Running BN statistics as the exact average over `images` (uint8), augmented as in training: averaged
    weights need their own. (Without the augmentation the shipped WRN-16-2 falls from 89.99% to 86.49%: its
    weights are fitted to statistics of padded crops.)"""
    aug = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for i in range(0, len(images), batch_size):
        xb = random_crop_flip(images[i:i + batch_size], generator=aug).to(dev)
        model(norm(to_unit(xb)).contiguous(memory_format=torch.channels_last))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()


def initial_weights(source: str, arch: str, dataset: str):
    """A zoo model or a .safetensors file to start training from (checked against arch and dataset)."""
    model = resolve_teacher(source, arch, dataset=dataset)
    if model.arch != arch or model.dataset != dataset:
        raise IfheError(f"init_from {source}: a {model.dataset} {model.arch}, not {dataset}/{arch}")
    return model


def momentum_kept(cfg: TrainConfig, model: torch.nn.Module) -> str:
    """What the checkpoint keeps of the momentum: as configured, or for `auto` the most that keeps the file under
    CHECKPOINT_BUDGET (WRN-16-2, WRN-40-2: full, exact resume; VGG11-BN's 37 MB of weights: none)."""
    if cfg.momentum != "auto":
        return cfg.momentum
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values() if v.is_floating_point())
    weights *= 2 if cfg.schedule == "swa" else 1   # the running average is a second copy
    params = sum(p.numel() for p in model.parameters())
    for mode, per_param in (("full", 4), ("bf16", 2)):
        if weights + per_param * params <= CHECKPOINT_BUDGET:
            return mode
    return "none"


def _stored_optimizer(opt: torch.optim.Optimizer, mode: str) -> dict:
    state = opt.state_dict()
    if mode == "full":
        return state
    if mode == "none":
        return {"state": {}, "param_groups": state["param_groups"]}
    return {"state": {k: {n: v.to(torch.bfloat16) if n == "momentum_buffer" else v for n, v in st.items()}
                      for k, st in state["state"].items()}, "param_groups": state["param_groups"]}


def rebuild_momentum(t: "_Training", cfg: TrainConfig, train_set, norm: Normalizer, dev: torch.device) -> None:
    """SGD's momentum buffers from `cfg.rebuild_steps` gradients at the restored weights (learning rate 0: the
    weights do not move; BN running statistics are put back): with momentum 0.9 the buffer is a decaying sum of
    recent gradients, and 20 of them carry 88% of its weight. The batches come from their own stream, so the
    resumed run's data order is the one it would have had."""
    bn = {k: v.clone() for k, v in t.model.state_dict().items() if not v.is_floating_point() or "running" in k}
    lrs = [g["lr"] for g in t.opt.param_groups]
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + t.step)
    t.model.train()
    for g in t.opt.param_groups:
        g["lr"] = 0.0
    for _ in range(cfg.rebuild_steps):
        idx = torch.randint(len(train_set), (cfg.batch_size,), generator=gen).to(train_set.x.device)
        xb = random_crop_flip(train_set.x[idx], generator=gen).to(dev)
        xb = norm(to_unit(xb)).contiguous(memory_format=torch.channels_last)
        with autocast(xb.device, cfg.precision):
            logits = t.model(xb)
        loss = supervised_loss(logits, train_set.y[idx].to(dev), cfg, _teacher_logits(t, cfg, xb))
        t.opt.zero_grad(set_to_none=True)
        loss.backward()
        t.opt.step()
    for g, lr in zip(t.opt.param_groups, lrs):
        g["lr"] = lr
    t.model.load_state_dict({**t.model.state_dict(), **bn})
    t.needs_momentum = False


@dataclass
class _Training:
    """What a training carries from step to step (and what its checkpoint holds)."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    aug_gen: torch.Generator
    average: dict[str, torch.Tensor]     # SWA: the running average of the epoch-end weights
    step: int = 0
    needs_momentum: bool = False         # resumed from a checkpoint that kept no momentum
    teachers: list = field(default_factory=list)   # frozen models distilled from (cfg.distill_from)


@torch.no_grad()
def _teacher_logits(t: _Training, cfg: TrainConfig, xb: torch.Tensor) -> torch.Tensor | None:
    if not t.teachers:
        return None
    with autocast(xb.device, cfg.precision):
        return ensemble_logits([m(xb) for m in t.teachers], cfg.distill_temperature)


def _start(cfg: TrainConfig, ckpt_path: Path, nc: int, dev: torch.device, resume: bool) -> _Training:
    """A fresh training, or the one in `ckpt_path` continued (refused when its config differs)."""
    torch.manual_seed(cfg.seed)
    model = fast_layout(create_model(cfg.arch, nc).to(dev))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.max_lr, momentum=0.9, nesterov=True,
                          weight_decay=cfg.weight_decay)
    average = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if v.is_floating_point()}
    t = _Training(model, opt, torch.Generator().manual_seed(cfg.seed), average)
    if resume and ckpt_path.exists():
        state, meta = load_state(ckpt_path)
        # a setting added after the checkpoint was written takes its default, which is what that run used;
        # the precision is the machine's arithmetic, not the recipe: a run resumed on a machine where the other is
        # faster may switch with an explicit --precision (each epoch's record says which it ran in)
        stored = {**asdict(TrainConfig()), **(meta.get("config") or {})}
        if {**stored, "precision": cfg.precision} != asdict(cfg):
            raise IfheError(f"{ckpt_path}: was started with a different config {meta.get('config')}; "
                            f"resume with the same arguments")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])   # bf16 buffers come back as the parameters' float32
        t.aug_gen.set_state(state["aug_rng"])
        t.step = state["step"]
        t.needs_momentum = t.step > 0 and not state["optimizer"]["state"]
        if cfg.schedule == "swa":
            t.average = state["swa"]
    elif cfg.init_from:
        model.load_state_dict(initial_weights(cfg.init_from, cfg.arch, cfg.dataset).state_dict())
    for src in distill_sources(cfg):
        teacher = resolve_teacher(src, device=dev, dataset=cfg.dataset)
        if teacher.num_classes != nc:
            raise IfheError(f"distill_from {src}: {teacher.num_classes} classes, the training has {nc}")
        t.teachers.append(teacher)
    return t


def _save(t: _Training, cfg: TrainConfig, path: Path) -> None:
    swa = {"swa": t.average} if cfg.schedule == "swa" else {}
    mode = momentum_kept(cfg, t.model)
    save_state(path, {"model": t.model.state_dict(), "optimizer": _stored_optimizer(t.opt, mode),
                      "aug_rng": t.aug_gen.get_state(), "step": t.step, **swa},
               {"config": asdict(cfg), "arch": cfg.arch, "dataset": cfg.dataset, "momentum_kept": mode,
                "precision_used": cfg.precision})


def _batch(train_set, cfg: TrainConfig, t: _Training, steps_per_epoch: int, norm, dev):
    epoch, i = divmod(t.step, steps_per_epoch)
    # The epoch's order depends only on (seed, epoch), so a resumed run sees the same batches.
    perm = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
    idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size].to(train_set.x.device)
    xb = random_crop_flip(train_set.x[idx], generator=t.aug_gen).to(dev, non_blocking=True)
    yb = train_set.y[idx].to(dev, non_blocking=True)
    x = cutout(norm(to_unit(xb)), cfg.cutout, generator=t.aug_gen)
    return x.contiguous(memory_format=torch.channels_last), yb


def _train_step(t: _Training, cfg: TrainConfig, xb, yb, lr: float):
    for g in t.opt.param_groups:
        g["lr"] = lr
    with autocast(xb.device, cfg.precision):
        logits = t.model(xb)
    loss = supervised_loss(logits, yb, cfg, _teacher_logits(t, cfg, xb))
    t.opt.zero_grad(set_to_none=True)
    loss.backward()
    t.opt.step()
    t.step += 1
    return loss.detach(), (logits.argmax(1) == yb).sum()


def _precision_used(ckpt_path: Path | None) -> str | None:
    """The precision the run in `ckpt_path` last ran in, if it has a checkpoint that says."""
    if ckpt_path is None or not ckpt_path.exists():
        return None
    return read_meta(ckpt_path).get("meta", {}).get("precision_used")


def _arithmetic(cfg: TrainConfig, resumed_precision: str | None, nc: int, dev: torch.device) -> str:
    """The precision this training runs in: as asked, the one its checkpoint last ran in (`resumed_precision`), or
    for `auto` what a probe of its own step (forward + backward at its batch size) measures faster on this machine."""
    if cfg.precision != "auto":
        return cfg.precision
    if resumed_precision:
        return resumed_precision
    from .precision import choose_precision

    model = fast_layout(create_model(cfg.arch, nc).to(dev)).train()

    def step(precision: str) -> float:
        x = torch.randn(cfg.batch_size, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        for _ in range(3):
            with autocast(dev, precision):
                out = model(x)
            out.float().logsumexp(1).mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return (time.perf_counter() - t0) / 3

    return choose_precision("auto", dev, step, f"train-{cfg.arch}-{cfg.batch_size}")[0]


def _data(cfg: TrainConfig, data: str | None, subset: int | None, dev: torch.device):
    train_set = load_split(cfg.dataset, "train", data)
    test_set = load_split(cfg.dataset, "test", data)
    if subset:
        train_set, test_set = train_set.subset(subset, cfg.seed), test_set.subset(max(100, subset // 5), cfg.seed)
    nc = NUM_CLASSES[cfg.dataset]
    if int(train_set.y.max()) >= nc:
        raise IfheError(f"data has labels up to {int(train_set.y.max())} but {cfg.dataset} has {nc} classes")
    if dev.type == "cuda":  # the uint8 images live on the GPU: batches are gathered and augmented there
        train_set.x, train_set.y = train_set.x.to(dev), train_set.y.to(dev)
    return train_set, test_set, nc


class _EpochMeter:
    """Loss and accuracy summed on the device (no host sync per step), wall and CPU seconds of the epoch."""

    def __init__(self, dev: torch.device):
        self.loss, self.correct = torch.zeros((), device=dev), torch.zeros((), device=dev)
        self.seen, self.t0, self.cpu0 = 0, time.time(), time.process_time()

    def add(self, loss: torch.Tensor, right: torch.Tensor, n: int) -> None:
        self.loss += loss * n
        self.correct += right
        self.seen += n

    def record(self) -> dict:
        return {"train_loss": (self.loss / max(1, self.seen)).item(),
                "train_acc": 100 * (self.correct / max(1, self.seen)).item(),
                "seconds": time.time() - self.t0, "cpu_seconds": time.process_time() - self.cpu0}


def train_classifier(cfg: TrainConfig, out: str | Path, data: str | None = None, resume: bool = False,
                     device: str | None = None, progress: bool = True, max_steps: int | None = None,
                     subset: int | None = None) -> dict:
    """Train `cfg.arch` on real `cfg.dataset`; returns the final summary. `max_steps` stops early (tests)."""
    cfg.validate()
    out = Path(out)
    ckpt_path, log = out / "checkpoint.safetensors", JsonlLog(out / "metrics.jsonl")
    if ckpt_path.exists() and not resume:
        raise IfheError(f"{out} already holds a training run; pass --resume to continue it or pick another --out")
    dev = pick_device(device)
    train_set, test_set, nc = _data(cfg, data, subset, dev)
    norm = Normalizer(*normalization(cfg.dataset)).to(dev)
    # also the precision of epochs logged before each epoch's record named its own
    resumed_precision = _precision_used(ckpt_path if resume else None)
    cfg = replace(cfg, precision=_arithmetic(cfg, resumed_precision, nc, dev))
    t = _start(cfg, ckpt_path, nc, dev, resume)
    if t.needs_momentum:
        rebuild_momentum(t, cfg, train_set, norm, dev)
    out.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = len(train_set) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    log.keep(lambda r: r.get("epoch", 0) <= t.step // steps_per_epoch)
    bar = tqdm(total=total, initial=t.step, disable=not progress, unit="step", dynamic_ncols=True)
    meter = _EpochMeter(dev)
    first_step = t.step
    t.model.train()
    while t.step < min(total, max_steps if max_steps is not None else total):
        xb, yb = _batch(train_set, cfg, t, steps_per_epoch, norm, dev)
        meter.add(*_train_step(t, cfg, xb, yb, learning_rate(cfg, t.step, total)), len(yb))
        bar.update(1)
        if t.step % 20 == 0:
            bar.set_postfix(loss=f"{(meter.loss / max(meter.seen, 1)).item():.3f}", epoch=t.step // steps_per_epoch + 1)
        if t.step % steps_per_epoch == 0:
            epoch = t.step // steps_per_epoch
            if cfg.schedule == "swa":
                add_to_average(t.average, t.model, count=epoch - 1)
            acc = evaluate(t.model, test_set, norm, dev)
            log.append({"epoch": epoch, "step": t.step, "test_acc": acc, "lr": t.opt.param_groups[0]["lr"],
                        "precision": cfg.precision, **meter.record()})
            bar.write(f"epoch {epoch}/{cfg.epochs}: test accuracy {acc:.2f}%")
            meter = _EpochMeter(dev)
            _save(t, cfg, ckpt_path)
        elif t.step % cfg.checkpoint_every == 0:
            _save(t, cfg, ckpt_path)
    if t.step != first_step:
        # resuming a finished run rewrites nothing: its checkpoint may be a committed snapshot (README)
        _save(t, cfg, ckpt_path)
    bar.close()
    return _finish(t, cfg, train_set, test_set, norm, dev, total, steps_per_epoch, log,
                   resumed_precision or cfg.precision)


def _finish(t: _Training, cfg: TrainConfig, train_set, test_set, norm, dev, total: int, steps_per_epoch: int,
            log: JsonlLog, unrecorded_precision: str) -> dict:
    if cfg.schedule == "swa" and t.step >= total:
        # the checkpoint keeps the last iterate, so the average is rebuilt the same way after any resume
        t.model.load_state_dict({**t.model.state_dict(), **t.average})
        if cfg.swa_bn == "recompute":
            recompute_bn_statistics(t.model, train_set.x, norm, dev, seed=cfg.seed)
    acc = evaluate(t.model, test_set, norm, dev)
    records = [r for r in log.read() if "epoch" in r]
    return {"model": t.model, "test_acc": acc, "step": t.step, "total_steps": total,
            "epochs_done": t.step / steps_per_epoch, "finished": t.step >= total,
            "precision": "+".join(dict.fromkeys(r.get("precision", unrecorded_precision) for r in records))
                         or cfg.precision,
            "wall_minutes": sum(r.get("seconds", 0.0) for r in records) / 60,
            "cpu_minutes": sum(r.get("cpu_seconds", 0.0) for r in records) / 60}
