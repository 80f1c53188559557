"""`Run`: rounds of synthesize -> bank -> distill, as a stream of small events.

The CLI prints the events with a progress bar; the app's job thread turns them into snapshots. Nothing else
drives the loop. A full checkpoint (student, h, generator, z, optimizers, bank cursor, RNG, clock) is written
at round boundaries; `resume=True` continues a killed run from the last one, dropping the bank shards and
metric lines written after it, so nothing is missing or repeated.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch

from .bank import ImageBank, open_bank
from .checkpoint import atomic_write_text, load_state, save_state
from .config import RunConfig, dump_yaml, from_dict, to_dict
from .data import DATA_ENV, ImageSet, load_split
from .device import fast_layout, pick_device, set_cpu_threads
from .distributed import any_rank, barrier, gather_batches, init_from_env
from .distill import attention_pairs, cosine_lr, evaluate, evaluate_head, kd_step, make_kd_optimizer, prepare_batch
from .errors import DataError, DivergenceError, IfheError
from .heads import head_for
from .jsonl import JsonlLog
from .models import create_model
from .synth import InversionSynthesizer, LIVE_WEIGHTS
from .zoo import attach_dataset, load_model, load_teacher, save_model

CHECKPOINT = "checkpoint.safetensors"


# ---- events ------------------------------------------------------------------------------------------------
@dataclass
class Event:
    round: int


@dataclass
class Started(Event):
    resumed: bool
    bank_size: int
    kd_steps: int
    note: str = ""
    kind: str = "started"


@dataclass
class SynthStep(Event):
    iteration: int
    losses: dict[str, float] | None       # None on preview-only events (no host sync for losses)
    it_per_s: float
    images: torch.Tensor | None = None    # uint8 (N, 3, H, W) on preview events
    labels: torch.Tensor | None = None
    kind: str = "synth"


@dataclass
class BatchSaved(Event):
    n_images: int
    bank_size: int
    shard: str
    kind: str = "batch"


@dataclass
class KDStep(Event):
    step: int
    losses: dict[str, float]
    lr: float
    images_per_s: float
    kind: str = "kd"


@dataclass
class Evaluated(Event):
    kd_steps: int
    student_acc: float
    head_acc: float | None
    elapsed_s: float
    kind: str = "eval"


@dataclass
class Checkpointed(Event):
    path: str
    kind: str = "checkpoint"


@dataclass
class Finished(Event):
    reason: str                   # rounds | budget | stopped
    student_acc: float | None
    head_acc: float | None
    elapsed_s: float
    bank_size: int
    kind: str = "finished"


def cpu_seconds() -> float:
    """This process's CPU time divided by its torch threads: wall-clock seconds on an otherwise idle machine,
    but unaffected by other processes competing for the cores."""
    return time.process_time() / max(1, torch.get_num_threads())


class _Clock:
    """Run time that excludes what is not training: the consumer's pauses between events and evaluations.

    `kind="wall"` counts wall-clock time; `kind="cpu"` counts `cpu_seconds()`, so that budgets stay equal for
    runs that share a machine with other work (the sweeps of `ifhe reproduce` use it)."""

    def __init__(self, elapsed: float = 0.0, kind: str = "wall"):
        self.now = cpu_seconds if kind == "cpu" else time.perf_counter
        self.start = self.now() - elapsed

    def elapsed(self) -> float:
        return self.now() - self.start

    @contextmanager
    def excluded(self):
        t = self.now()
        try:
            yield
        finally:
            self.start += self.now() - t


@dataclass
class _Progress:
    round: int = 0                # rounds completed
    kd_steps: int = 0
    elapsed_s: float = 0.0
    last_eval_kd: int = 0
    student_acc: float | None = None
    head_acc: float | None = None


def load_run_teacher(cfg: RunConfig, device: torch.device):
    if cfg.teacher.endswith(".safetensors"):
        model, meta = load_model(cfg.teacher, cfg.teacher_arch, device=device)
        from .zoo import freeze
        if not meta.get("dataset"):
            raise IfheError(f"teacher: {cfg.teacher} does not record its dataset")
        return attach_dataset(freeze(fast_layout(model)), meta["dataset"], meta)
    return load_teacher(cfg.teacher, device)


def load_test_set(dataset: str, data: str | None, n: int | None) -> tuple[ImageSet | None, str]:
    """Real test images when configured ($IFHE_DATA / --data, or torchvision's cache); never downloads."""
    import os
    try:
        if data or os.environ.get(DATA_ENV):
            test = load_split(dataset, "test", data)
        else:
            test = load_split(dataset, "test", None, download=False)
    except DataError as e:
        if data:
            raise
        return None, f"no real test data ({e}); running purely data-free, without evaluation"
    return (test.subset(n, seed=0) if n and n < len(test) else test), ""


def checkpoint_name(rank: int) -> str:
    return CHECKPOINT if rank == 0 else f"checkpoint_r{rank}.safetensors"


class Run:
    """One synthesis + distillation run. Under `torchrun` every rank synthesizes its share of each batch
    (its own generator, its own bank shards) and the student and h are trained with DistributedDataParallel."""

    def __init__(self, cfg: RunConfig, out: str | Path, resume: bool = False, teacher: torch.nn.Module | None = None,
                 test_set: ImageSet | None | bool = True):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise IfheError(f"out: {self.out} exists and is not a folder")
        self.dist = init_from_env(pick_device(cfg.device).type)
        ckpt = self.out / checkpoint_name(self.dist.rank)
        if resume and ckpt.exists():
            state, meta = load_state(ckpt)
            stored = from_dict(meta["config"])
            cfg = replace(stored, rounds=cfg.rounds, budget_minutes=cfg.budget_minutes,
                          preview_every=cfg.preview_every, device=cfg.device, threads=cfg.threads,
                          data=cfg.data or stored.data)
        else:
            state = None
            if ckpt.exists():
                raise IfheError(f"{self.out} already holds a run; pass --resume to continue it or pick another --out")
        self.cfg = cfg.validate()
        self.device = pick_device(cfg.device, self.dist.local_rank)
        share = self._per_rank(cfg)
        if cfg.threads:
            set_cpu_threads(cfg.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._pending_weights: dict[str, float] = {}
        self._lock = threading.Lock()

        torch.manual_seed(cfg.seed)
        self.teacher = teacher if teacher is not None else load_run_teacher(cfg, self.device)
        self.dataset = self.teacher.dataset
        nc = self.teacher.num_classes
        self.student = fast_layout(create_model(cfg.student, nc).to(self.device))
        self.head = head_for(self.teacher, cfg.synth.h_stages, cfg.synth.h_hidden).to(self.device)
        if self.dist.rank:  # same student init everywhere, different synthesized images per rank
            torch.manual_seed(cfg.seed + 1_000_003 * self.dist.rank)
        self.synth = InversionSynthesizer(replace(cfg.synth, batch_size=share[0]), self.teacher, self.student,
                                          self.head, self.teacher.normalizer, nc, self.device, cfg.precision)
        self.kd_batch = share[1]
        self.at_pairs = attention_pairs(self.student, self.teacher, self.device) if cfg.distill.at > 0 else ()
        d = cfg.distill
        self.opt = make_kd_optimizer(self.student, self.head if d.train_head else None, d.lr, d.momentum,
                                     d.weight_decay)
        self.kd_student, self.kd_head = self.student, (self.head if d.train_head else None)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.kd_student = DDP(self.student, device_ids=ids)
            self.kd_head = DDP(self.head, device_ids=ids) if d.train_head else None
        classes = None
        self.note = ""
        if not self.dist.is_main:
            test_set = None  # rank 0 evaluates; the students are identical
        if test_set is True:
            self.test_set, self.note = load_test_set(self.dataset, cfg.data, cfg.eval_images)
        else:
            self.test_set = test_set or None
        if self.test_set is not None:
            classes = self.test_set.classes
        self.bank = open_bank(cfg.bank) if cfg.bank else ImageBank(self.out / "bank", self.dist.rank, classes)
        self.metrics = JsonlLog(self.out / "metrics.jsonl")
        self.progress = _Progress()
        self.resumed = state is not None
        if state is not None:
            self._restore(state)
        else:
            if not cfg.bank:
                self.bank.truncate(0)
            if self.dist.is_main:
                self.metrics.keep(lambda r: False)
                atomic_write_text(self.out / "config.yaml", dump_yaml(cfg))
        if self.dist.enabled and not cfg.bank:
            barrier(self.dist)  # every rank has dropped its own uncovered shards: now read everyone's
            self.bank.reload()

    def _per_rank(self, cfg: RunConfig) -> tuple[int, int]:
        """Synthesis and KD batch sizes of this rank."""
        w = self.dist.world
        for name, size in (("synth.batch_size", cfg.synth.batch_size), ("distill.batch_size", cfg.distill.batch_size)):
            if size % w:
                raise IfheError(f"{name}={size} does not split evenly over {w} processes")
        return cfg.synth.batch_size // w, cfg.distill.batch_size // w

    # ---- control from other threads -------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def set_weights(self, **weights: float) -> None:
        """Live loss weights (alpha, beta, gamma, ...): applied before the next synthesis step."""
        unknown = set(weights) - set(LIVE_WEIGHTS)
        if unknown:
            raise IfheError(f"not a live loss weight: {sorted(unknown)}")
        with self._lock:
            self._pending_weights.update(weights)

    def _apply_weights(self) -> None:
        if self._pending_weights:
            with self._lock:
                w, self._pending_weights = self._pending_weights, {}
            self.synth.set_weights(**w)

    # ---- persistence -------------------------------------------------------------------------------------
    def _state(self) -> dict:
        s = {"student": self.student.state_dict(), "head": self.head.state_dict(), "opt": self.opt.state_dict(),
             "synth": self.synth.state_dict(), "rng": torch.get_rng_state(),
             "progress": asdict(self.progress), "bank_shards": self.bank.n_shards}
        if self.device.type == "cuda":
            s["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return s

    def _restore(self, s: dict) -> None:
        self.student.load_state_dict(s["student"])
        self.head.load_state_dict(s["head"])
        self.opt.load_state_dict(s["opt"])
        self.synth.load_state_dict(s["synth"])
        torch.set_rng_state(s["rng"])
        if "cuda_rng" in s and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["cuda_rng"], self.device)
        self.progress = _Progress(**s["progress"])
        if not self.cfg.bank:
            self.bank.truncate(s["bank_shards"])
        done = self.progress.round
        if self.dist.is_main:
            self.metrics.keep(lambda r: r.get("round", -1) < done)

    def save_checkpoint(self) -> Path:
        # live weight changes are part of the run's history; the batch size is the run's, not this rank's share
        cfg = replace(self.cfg, synth=replace(self.synth.cfg, batch_size=self.cfg.synth.batch_size))
        path = self.out / checkpoint_name(self.dist.rank)
        save_state(path, self._state(), {"config": to_dict(cfg), "rank": self.dist.rank, "world": self.dist.world})
        return path

    # ---- the loop ----------------------------------------------------------------------------------------
    def _emit(self, event: Event):
        with self.clock.excluded():  # time the consumer holds the event (a paused app) is not run time
            yield event

    def events(self) -> Iterator[Event]:
        cfg, p = self.cfg, self.progress
        self.clock = clock = _Clock(p.elapsed_s, cfg.clock)
        yield from self._emit(Started(p.round, self.resumed, len(self.bank), p.kd_steps, self.note))
        last_ckpt = time.perf_counter()
        reason = "rounds"
        while p.round < cfg.rounds:
            p.elapsed_s = clock.elapsed()
            if any_rank(self.dist, cfg.budget_minutes is not None and p.elapsed_s >= 60 * cfg.budget_minutes):
                reason = "budget"
                break
            if any_rank(self.dist, self._stop.is_set()):
                reason = "stopped"
                break
            record = {"round": p.round}
            completed = True if cfg.bank else (yield from self._synthesis_round(record))
            if not completed:
                reason = "stopped"
                break
            completed = yield from self._kd_round(record)
            if not completed:
                reason = "stopped"
                break
            p.round += 1
            p.elapsed_s = clock.elapsed()
            if cfg.eval_every and p.kd_steps - p.last_eval_kd >= cfg.eval_every and self.test_set is not None:
                yield from self._emit(self._evaluate())
                record |= {"student_acc": p.student_acc, "head_acc": p.head_acc}
            record |= {"kd_steps": p.kd_steps, "bank_size": len(self.bank), "elapsed_s": round(p.elapsed_s, 2)}
            if self.dist.is_main:
                self.metrics.append(record)
            if time.perf_counter() - last_ckpt >= cfg.checkpoint_seconds:
                with clock.excluded():
                    path = self.save_checkpoint()
                yield from self._emit(Checkpointed(p.round, str(path)))
                last_ckpt = time.perf_counter()
        p.elapsed_s = clock.elapsed()
        if self.test_set is not None and p.last_eval_kd != p.kd_steps and p.kd_steps > 0:
            yield from self._emit(self._evaluate())
        with clock.excluded():
            path = self.save_checkpoint()
            if self.dist.is_main:
                self._export_models()
        yield from self._emit(Checkpointed(p.round, str(path)))
        yield from self._emit(Finished(p.round, reason, p.student_acc, p.head_acc, p.elapsed_s, len(self.bank)))

    def _synthesis_round(self, record: dict):
        cfg, p, synth = self.cfg, self.progress, self.synth
        self._apply_weights()
        synth.start_round(p.round)
        bad: dict[str, torch.Tensor] = {}
        t0 = self.clock.elapsed()
        n_iter = synth.cfg.iterations
        for it in range(1, n_iter + 1):
            if self._stop.is_set() and not self.dist.enabled:
                return False
            self._apply_weights()
            rep = synth.step()
            for k, v in rep.losses.items():
                flag = ~torch.isfinite(v)
                bad[k] = bad[k] | flag if k in bad else flag
            rate = it / max(self.clock.elapsed() - t0, 1e-9)
            if it % cfg.log_every == 0 or it == n_iter:
                self._check_finite(bad, f"synthesis round {p.round}, iteration {it}")
                losses = {k: float(v) for k, v in rep.losses.items()}
                event = SynthStep(p.round, it, losses, rate)
                if cfg.preview_every:
                    event.images, event.labels = synth.images()
                record["synth"] = losses
                yield from self._emit(event)
            elif cfg.preview_every and it % cfg.preview_every == 0:
                images, labels = synth.images()
                yield from self._emit(SynthStep(p.round, it, None, rate, images, labels))
        images, labels = synth.commit()
        self._round_batch = images
        if cfg.distill.source == "bank" or (p.round + 1) % synth.cfg.commit_every == 0:
            shard = ""
            for rank, (x, y) in enumerate(gather_batches(self.dist, images, labels)):
                if rank == self.dist.rank:
                    shard = self.bank.add(x, y)
                else:
                    self.bank.remember(x, y)
            yield from self._emit(BatchSaved(p.round, len(images) * self.dist.world, len(self.bank), shard))
        return True

    def _kd_round(self, record: dict):
        cfg, p, d = self.cfg, self.progress, self.cfg.distill
        bad: dict[str, torch.Tensor] = {}
        t0, n0 = self.clock.elapsed(), 0
        for k in range(1, d.steps_per_round + 1):
            if self._stop.is_set() and not self.dist.enabled:
                return False
            progress = p.round / cfg.rounds
            if cfg.budget_minutes:
                progress = max(progress, self.clock.elapsed() / (60 * cfg.budget_minutes))
            lr = cosine_lr(d.lr, progress)
            for g in self.opt.param_groups:
                g["lr"] = lr
            if d.source == "generator":
                x = self.teacher.normalizer(self.synth.sample(self.kd_batch)).contiguous(
                    memory_format=torch.channels_last)
            else:
                xb = self.bank.sample(self.kd_batch)[0] if d.source == "bank" else self._from_round_batch()
                x = prepare_batch(xb, self.teacher.normalizer, self.device, d.augment)
            losses = kd_step(self.kd_student, self.kd_head, self.teacher, x, self.opt, d.T, self.cfg.synth.h_stages,
                             cfg.precision, d.at, self.at_pairs)
            p.kd_steps += 1
            n0 += d.batch_size
            for name, v in losses.items():
                flag = ~torch.isfinite(v)
                bad[name] = bad[name] | flag if name in bad else flag
            if k % cfg.log_every == 0 or k == d.steps_per_round:
                self._check_finite(bad, f"distillation round {p.round}, step {k}")
                vals = {n: float(v) for n, v in losses.items()}
                record["kd"] = vals
                rate = n0 / max(self.clock.elapsed() - t0, 1e-9)
                yield from self._emit(KDStep(p.round, p.kd_steps, vals, lr, rate))
        return True

    def _from_round_batch(self) -> torch.Tensor:
        n = len(self._round_batch)
        idx = torch.randperm(n)[:self.kd_batch] if self.kd_batch <= n else torch.randint(0, n, (self.kd_batch,))
        return self._round_batch[idx]

    def _check_finite(self, bad: dict[str, torch.Tensor], where: str) -> None:
        if not bad:
            return
        flags = torch.stack(list(bad.values())).cpu()
        if flags.any():
            names = [k for k, f in zip(bad, flags.tolist()) if f]
            raise DivergenceError(
                f"loss term {', '.join(repr(n) for n in names)} became non-finite in {where}; the run stopped, "
                f"and its last good checkpoint (round {self.progress.round if (self.out / CHECKPOINT).exists() else 'none'}) "
                f"is kept in {self.out}: lower the learning rates or weights and resume")

    def _evaluate(self) -> Evaluated:
        with self.clock.excluded():
            return self._evaluate_now()

    def _evaluate_now(self) -> Evaluated:
        p = self.progress
        p.student_acc = evaluate(self.student, self.test_set, self.teacher.normalizer, self.device)
        p.head_acc = (evaluate_head(self.head, self.teacher, self.test_set, self.teacher.normalizer, self.device,
                                    self.cfg.synth.h_stages) if self.cfg.distill.train_head else None)
        p.last_eval_kd = p.kd_steps
        return Evaluated(p.round, p.kd_steps, p.student_acc, p.head_acc, p.elapsed_s)

    def _export_models(self) -> None:
        meta = {"method": self.cfg.method, "teacher": self.cfg.teacher, "rounds": self.progress.round,
                "kd_steps": self.progress.kd_steps,
                "test_accuracy": self.progress.student_acc}
        save_model(self.out / "student.safetensors", self.student, self.dataset, meta)
        from .checkpoint import save_tensors
        save_tensors(self.out / "head.safetensors", self.head.state_dict(),
                     {"in_features": self.head.in_features, "num_classes": self.head.num_classes,
                      "hidden": self.head.hidden, "stages": list(self.cfg.synth.h_stages)})


def run_to_end(run: Run, on_event=None) -> Finished:
    """Drive a run; returns its Finished event."""
    last = None
    for ev in run.events():
        if on_event is not None:
            on_event(ev)
        last = ev
    return last
