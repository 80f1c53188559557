"""`Run`: rounds of synthesize -> bank -> distill, as a stream of small events.

Everything that runs the loop iterates `Run.events()`: the CLI prints them with a progress bar, the app's job
thread turns them into snapshots, and `run_to_end` drives them for `ifhe reproduce` and the benchmarks; so no
two of them can disagree about what a run does. A full checkpoint (student, h, generator, z, optimizers, bank
cursor, the run's own random streams, clock) is written at round boundaries; `resume=True` continues a killed
run from the last one, dropping the bank shards and metric lines written after it, so nothing is missing or
repeated. At the end the final evaluation is written as a record of metrics.jsonl and as result.json.
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import torch

from . import catalog
from .bank import ImageBank, open_bank
from .checkpoint import atomic_write_text, load_state, save_state
from .config import RunConfig, dump_yaml, from_dict, reference_kd_passes, to_dict
from .data import DATA_ENV, ImageSet, load_split
from .device import RunRNG, fast_layout, pick_device, seeded_init, set_cpu_threads, tune_cpu_allocator
from .distributed import any_rank, barrier, gather_batches, init_from_env
from .distill import (attention_pairs, evaluate, evaluate_head, kd_step, make_kd_optimizer, prepare_batch)
from .errors import DataError, DivergenceError, IfheError
from .heads import head_for, head_meta, load_head_init
from .jsonl import JsonlLog
from .models import create_model
from .precision import choose_precision, step_probe
from .schedules import after_warmup, cosine_lr, multistep_lr
from .synth import InversionSynthesizer
from .zoo import resolve_teacher, save_model

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
    metrics: dict[str, float] | None = None   # read-outs, e.g. h_agree: h's agreement with the teacher
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
    head_updates: int = 0         # optimizer steps h has taken (KD steps that train it, and h-only steps)
    elapsed_s: float = 0.0
    last_eval_kd: int = 0
    student_acc: float | None = None
    head_acc: float | None = None
    # compute accounting: seconds on the run's clock (evaluation on its own, outside the budget) and
    # sample-passes in images (see `COMPUTE_FIELDS`)
    synth_s: float = 0.0
    kd_s: float = 0.0
    eval_s: float = 0.0
    synth_teacher: int = 0        # teacher forward + input-gradient passes during synthesis
    synth_student: int = 0        # student forward + input-gradient passes during synthesis (adversarial terms)
    synth_render: int = 0         # image-steps of the generator or the pixels
    kd_teacher: int = 0           # teacher forward passes during KD
    kd_student: int = 0           # student forward + backward passes (KD)
    kd_step_cap: int | None = None  # KD steps a round fixed by distill.kd_share in the first KD round
    precision: str | None = None  # the arithmetic this run uses (precision=auto decides it once, at the start)


# What a run reports of its compute (result.json, metrics.jsonl, the sweep tables).
COMPUTE_FIELDS = ("synth_s", "kd_s", "eval_s", "synth_teacher", "synth_student", "synth_render", "kd_teacher",
                  "kd_student")


def compute_record(p: _Progress) -> dict:
    return {k: round(getattr(p, k), 2) if isinstance(getattr(p, k), float) else getattr(p, k)
            for k in COMPUTE_FIELDS}


def load_run_teacher(cfg: RunConfig, device: torch.device):
    """The run's teacher: a zoo name or a .safetensors file (see `zoo.resolve_teacher`)."""
    return resolve_teacher(cfg.teacher, cfg.teacher_arch, device=device)


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
    (its own generator, its own bank shards) and the student and h are trained with DistributedDataParallel.

    Every random draw of a run comes from its own streams (`self.rng`), never torch's global generator, so runs
    that share a process (the app's jobs) give the same images as alone."""

    def __init__(self, cfg: RunConfig, out: str | Path, resume: bool = False, teacher: torch.nn.Module | None = None,
                 test_set: ImageSet | None | bool = True, synthesizer_factory=InversionSynthesizer):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise IfheError(f"out: {self.out} exists and is not a folder")
        self.dist = init_from_env(pick_device(cfg.device).type)
        state, cfg = self._resumed_state(cfg, resume)
        self.cfg = cfg.validate()
        self.device = pick_device(cfg.device, self.dist.local_rank)
        if cfg.threads:
            set_cpu_threads(cfg.threads)
        elif self.device.type == "cpu":
            tune_cpu_allocator()   # set_cpu_threads does it too: every run on a CPU keeps its big blocks
        self.out.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._pending_weights: dict[str, float] = {}
        self._lock = threading.Lock()
        # ranks share the student's initialisation and differ in what they synthesize and sample
        self.rng = RunRNG(cfg.seed + 1_000_003 * self.dist.rank, self.device)
        self._resumed_precision = ((state or {}).get("progress") or {}).get("precision")
        self._build_models(teacher, synthesizer_factory)
        self._build_data(test_set)
        self.progress = _Progress(precision=self.precision)
        self.saved_round: int | None = None     # the round of the checkpoint on disk
        self._kd_order: torch.Tensor | None = None
        self._kd_pos = 0
        self.resumed = state is not None
        if state is not None:
            self._restore(state)
        else:
            if not cfg.bank:
                self.bank.truncate(0)
            if self.dist.is_main:
                self.metrics.keep(lambda r: False)
                (self.out / "result.json").unlink(missing_ok=True)
                atomic_write_text(self.out / "config.yaml", dump_yaml(cfg))
        if not cfg.bank:
            self.bank.set_meta(head_training=self.head_training())
        if self.dist.enabled and not cfg.bank:
            barrier(self.dist)  # every rank has dropped its own uncovered shards: now read everyone's
            self.bank.reload()

    def _resumed_state(self, cfg: RunConfig, resume: bool) -> tuple[dict | None, RunConfig]:
        """The checkpoint to continue from and the config it was written with (the settings a user may change
        on resume: rounds, budget, previews, device, threads, data)."""
        ckpt = self.out / checkpoint_name(self.dist.rank)
        if not ckpt.exists():
            return None, cfg
        if not resume:
            raise IfheError(f"{self.out} already holds a run; pass --resume to continue it or pick another --out")
        state, meta = load_state(ckpt)
        stored = from_dict(meta["config"])
        return state, replace(stored, rounds=cfg.rounds, budget_minutes=cfg.budget_minutes,
                              preview_every=cfg.preview_every, device=cfg.device, threads=cfg.threads,
                              data=cfg.data or stored.data)

    def _build_models(self, teacher, synthesizer_factory) -> None:
        cfg, share = self.cfg, self._per_rank(self.cfg)
        self.teacher = teacher if teacher is not None else load_run_teacher(cfg, self.device)
        self.dataset = self.teacher.dataset
        nc = self.teacher.num_classes
        with seeded_init(cfg.seed, self.device):
            self.student = fast_layout(create_model(cfg.student, nc).to(self.device))
            self.head = head_for(self.teacher, cfg.synth.h_stages, cfg.synth.h_hidden).to(self.device)
        self.head_origin = (load_head_init(self.head, cfg.synth.h_init, cfg.synth.h_stages, self.teacher,
                                           str(cfg.teacher)) if cfg.synth.h_init else "")
        self.precision, self.precision_choice = self._precision(share)
        with seeded_init(cfg.seed + 1_000_003 * self.dist.rank, self.device):
            self.synth = synthesizer_factory(replace(cfg.synth, batch_size=share[0]), self.teacher, self.student,
                                             self.head, self.teacher.normalizer, nc, self.device, self.precision,
                                             rng=self.rng)
        self.kd_batch = share[1]
        d = cfg.distill
        self.at_pairs = attention_pairs(self.student, self.teacher, self.device) if d.at > 0 else ()
        self.opt = make_kd_optimizer(self.student, self.head if d.train_head else None, d.lr, d.momentum,
                                     d.weight_decay, d.optimizer)
        self.kd_student, self.kd_head = self.student, (self.head if d.train_head else None)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.kd_student = DDP(self.student, device_ids=ids)
            self.kd_head = DDP(self.head, device_ids=ids) if d.train_head else None

    def _precision(self, share: tuple[int, int]) -> tuple[str, dict]:
        """fp32/bf16 as asked, or for `auto` what a probe of this run's passes measures faster here (a resumed
        run keeps what it started with)."""
        if self._resumed_precision:
            return self._resumed_precision, {"how": "resumed"}
        built: list = []

        def probe(precision: str) -> float:  # built on first use: fp32/bf16 asked for, or a cached answer, need none
            if not built:
                built.append(step_probe(self.teacher, self.student, share[0], share[1], self.device))
            return built[0](precision)

        name = f"{self.cfg.teacher_arch or getattr(self.teacher, 'arch', '?')}-{self.cfg.student}-{share[0]}-{share[1]}"
        return choose_precision(self.cfg.precision, self.device, probe, name)

    def _build_data(self, test_set) -> None:
        cfg, self.note = self.cfg, ""
        if not self.dist.is_main:
            test_set = None  # rank 0 evaluates; the students are identical
        if test_set is True:
            self.test_set, self.note = load_test_set(self.dataset, cfg.data, cfg.eval_images)
        else:
            self.test_set = test_set or None
        classes = self.test_set.classes if self.test_set is not None else None
        self.bank = open_bank(cfg.bank) if cfg.bank else ImageBank(self.out / "bank", self.dist.rank, classes)
        self.metrics = JsonlLog(self.out / "metrics.jsonl")

    def head_training(self) -> str:
        """How this run trains h, in words (kept with the bank: an IFHE bank is only IFHE's if h learned)."""
        start = f"h started from {self.head_origin}; " if self.head_origin else ""
        return start + self._head_learning()

    def _head_learning(self) -> str:
        d, tau = self.cfg.distill, f"τ={self.cfg.distill.T:g}"
        if not d.train_head:
            return "h was not trained (distill.train_head=false): L_H pushed towards a random classifier"
        if d.steps_per_round > 0:
            return (f"h learned KL(T/τ‖h(f_T)/τ) ({tau}) on the student's KD batches, {d.steps_per_round} steps "
                    f"a round")
        if self.cfg.synth.alpha > 0 and d.head_steps > 0:
            return (f"h learned KL(T/τ‖h(f_T)/τ) ({tau}) alone, {d.head_steps} steps a round on the bank (no "
                    f"student KD)")
        return "h was not trained (no KD steps): L_H is off in this run"

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
        """Live loss weights (alpha, beta, gamma, ...): checked now (an IfheError names what is wrong), applied
        before the next synthesis step."""
        with self._lock:
            self.synth.cfg.with_weights(**{**self._pending_weights, **weights})
            self._pending_weights.update({k: float(v) for k, v in weights.items()})

    def _apply_weights(self) -> None:
        if self._pending_weights:
            with self._lock:
                w, self._pending_weights = self._pending_weights, {}
            self.synth.set_weights(**w)

    # ---- persistence -------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"student": self.student.state_dict(), "head": self.head.state_dict(), "opt": self.opt.state_dict(),
                "synth": self.synth.state_dict(), "run_rng": self.rng.state_dict(),
                "progress": asdict(self.progress), "bank_shards": self.bank.n_shards}

    def _restore(self, s: dict) -> None:
        self.student.load_state_dict(s["student"])
        self.head.load_state_dict(s["head"])
        self.opt.load_state_dict(s["opt"])
        self.synth.load_state_dict(s["synth"])
        if "run_rng" in s:
            self.rng.load_state_dict(s["run_rng"])
        else:  # a checkpoint from before runs had their own streams: restart them from the seed and round
            self.rng.reseed(self.cfg.seed + 1_000_003 * self.dist.rank + s["progress"]["round"])
        self.progress = _Progress(**{**asdict(_Progress()), **s["progress"]})
        self.saved_round = self.progress.round
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
        self.saved_round = self.progress.round
        return path

    # ---- the loop ----------------------------------------------------------------------------------------
    def _emit(self, event: Event):
        with self.clock.excluded():  # time the consumer holds the event (a paused app) is not run time
            yield event

    def run_progress(self) -> float:
        """The fraction of the run done: of its rounds, or of its time budget when that is further along."""
        p = self.progress.round / self.cfg.rounds
        if self.cfg.budget_minutes:
            p = max(p, self.clock.elapsed() / (60 * self.cfg.budget_minutes))
        return min(1.0, p)

    def in_warmup(self) -> bool:
        return self.cfg.warmup > 0 and self.run_progress() < self.cfg.warmup

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
            if completed:
                completed = yield from self._kd_round(record)
            if not completed:
                reason = "stopped"
                break
            p.round += 1
            p.elapsed_s = clock.elapsed()
            if cfg.eval_every and p.kd_steps - p.last_eval_kd >= cfg.eval_every and self.test_set is not None:
                yield from self._emit(self._evaluate())
                record |= {"student_acc": p.student_acc, "head_acc": p.head_acc}
            record |= {"kd_steps": p.kd_steps, "bank_size": len(self.bank), "elapsed_s": round(p.elapsed_s, 2),
                       **compute_record(p)}
            if self.dist.is_main:
                self.metrics.append(record)
            if time.perf_counter() - last_ckpt >= cfg.checkpoint_seconds:
                with clock.excluded():
                    path = self.save_checkpoint()
                yield from self._emit(Checkpointed(p.round, str(path)))
                last_ckpt = time.perf_counter()
        yield from self._finish(reason)

    def _finish(self, reason: str):
        p, clock = self.progress, self.clock
        p.elapsed_s = clock.elapsed()
        if reason == "rounds" and self._budget_spent():
            reason = "budget"   # the budget ran out inside the last round
        if self.test_set is not None and p.last_eval_kd != p.kd_steps and p.kd_steps > 0:
            yield from self._emit(self._evaluate())
        with clock.excluded():
            path = self.save_checkpoint()
            if self.dist.is_main:
                self._export_models()
                self._write_result(reason)
        yield from self._emit(Checkpointed(p.round, str(path)))
        yield from self._emit(Finished(p.round, reason, p.student_acc, p.head_acc, p.elapsed_s, len(self.bank)))

    def _budget_spent(self) -> bool:
        """Whether the time budget is used up: checked before every synthesis and KD step once the first round is
        done (a run always has one whole round, so a student to evaluate), so that a run overshoots its budget by
        at most one step (under torchrun only at round boundaries, where the ranks agree)."""
        budget = self.cfg.budget_minutes
        return budget is not None and not self.dist.enabled and self.progress.round > 0 \
            and self.clock.elapsed() >= 60 * budget

    def _synthesis_round(self, record: dict):
        cfg, p, synth = self.cfg, self.progress, self.synth
        self._apply_weights()
        synth.start_round(p.round, progress=self.run_progress(), warmup=self.in_warmup())
        head_updates = p.head_updates  # h as it was while this round's batch was synthesized
        bad: dict[str, torch.Tensor] = {}
        t0 = self.clock.elapsed()
        n_iter = synth.cfg.iterations
        for it in range(1, n_iter + 1):
            if self._stop.is_set() and not self.dist.enabled:
                return False
            if it > 1 and self._budget_spent():
                break   # the round keeps the best batch of the steps it made
            self._apply_weights()
            rep = synth.step()
            self._count(rep.passes, "synth_")
            for k, v in rep.losses.items():
                flag = ~torch.isfinite(v)
                bad[k] = bad[k] | flag if k in bad else flag
            rate = it / max(self.clock.elapsed() - t0, 1e-9)
            if it % cfg.log_every == 0 or it == n_iter:
                self._check_finite(bad, f"synthesis round {p.round}, iteration {it}")
                losses = {k: float(v) for k, v in rep.losses.items()}
                event = SynthStep(p.round, it, losses, rate, metrics={k: float(v) for k, v in rep.metrics.items()})
                if cfg.preview_every:
                    event.images, event.labels = synth.images()
                record["synth"] = losses
                yield from self._emit(event)
            elif cfg.preview_every and it % cfg.preview_every == 0:
                images, labels = synth.images()
                yield from self._emit(SynthStep(p.round, it, None, rate, images, labels))
        self._check_finite(bad, f"synthesis round {p.round}")
        images, labels = synth.commit()
        self._round_images = self._round_kd_images()
        self._last_synth_s = self.clock.elapsed() - t0
        p.synth_s += self._last_synth_s
        if cfg.distill.source == "bank" or (p.round + 1) % synth.cfg.commit_every == 0:
            shard = ""
            info = {"round": p.round, "h_updates": head_updates}
            for rank, (x, y) in enumerate(gather_batches(self.dist, images, labels)):
                if rank == self.dist.rank:
                    shard = self.bank.add(x, y, info)
                else:
                    self.bank.remember(x, y)
            yield from self._emit(BatchSaved(p.round, len(images) * self.dist.world, len(self.bank), shard))
        return True

    def _count(self, passes: dict[str, int], prefix: str) -> None:
        p = self.progress
        for k, n in passes.items():
            setattr(p, prefix + k, getattr(p, prefix + k) + n)

    def _round_kd_images(self) -> torch.Tensor | None:
        """The float batch GAN-style students learn from this round: as scored (DAFL) or re-rendered by the
        updated generator (ZSKT)."""
        source = self.cfg.distill.source
        if source == "round":
            return self.synth.kept_batch()[0].detach()
        if source == "regenerate":
            return self.synth.regenerated_batch()
        return None

    def _kd_plan(self, head_only: bool) -> tuple[int, float | None]:
        """KD steps of this round, and the seconds the first KD round of a `distill.kd_share` run is given
        (its step count then fixes every later round's: the budget rule, README "Budgets")."""
        d, p = self.cfg.distill, self.progress
        if head_only:
            return d.head_steps, None
        if d.kd_share <= 0:
            return d.steps_per_round, None
        if p.kd_step_cap is not None:
            return p.kd_step_cap, None
        synth_s = getattr(self, "_last_synth_s", None) or (p.synth_s / max(1, p.round + 1))
        return 1_000_000, d.kd_share / (1 - d.kd_share) * synth_s

    def _kd_round(self, record: dict):
        cfg, p, d = self.cfg, self.progress, self.cfg.distill
        if self.in_warmup():  # Fast-Datafree: the generator learns alone first
            return True
        head_only = d.steps_per_round == 0 and d.kd_share <= 0 and cfg.synth.alpha > 0 and d.train_head \
            and not cfg.bank   # L_H needs a trained h even when no student is distilled
        steps, seconds = self._kd_plan(head_only)
        bad: dict[str, torch.Tensor] = {}
        t0, n0, k = self.clock.elapsed(), 0, 0
        self._kd_order = None  # a fresh pass over the bank each round, as a DataLoader rebuilt per round
        while k < steps:
            if self._stop.is_set() and not self.dist.enabled:
                return False
            if self._budget_spent() or (seconds is not None and k > 0 and self.clock.elapsed() - t0 >= seconds):
                break
            k += 1
            losses = self._kd_step(head_only)
            if head_only:
                continue
            n0 += d.batch_size
            for name, v in losses.items():
                flag = ~torch.isfinite(v)
                bad[name] = bad[name] | flag if name in bad else flag
            if k % cfg.log_every == 0 or k == steps:
                yield from self._emit_kd(record, bad, losses, k, n0, t0)
        if bad and k % cfg.log_every and k != steps:
            yield from self._emit_kd(record, bad, losses, k, n0, t0)
        if seconds is not None and not self._budget_spent():
            p.kd_step_cap = max(1, k)
        p.kd_s += self.clock.elapsed() - t0
        return True

    def _kd_step(self, head_only: bool) -> dict[str, torch.Tensor]:
        p, d, cfg = self.progress, self.cfg.distill, self.cfg
        lr = self._kd_lr()
        for g in self.opt.param_groups:
            g["lr"] = lr
        x = self._kd_batch()
        losses = kd_step(None if head_only else self.kd_student, self.kd_head, self.teacher, x, self.opt, d.T,
                         cfg.synth.h_stages, self.precision, d.at, self.at_pairs, d.kl_reduction, d.grad_clip)
        p.head_updates += self.kd_head is not None
        p.kd_teacher += len(x)
        if not head_only:
            p.kd_steps += 1
            p.kd_student += len(x)
        return losses

    def _emit_kd(self, record: dict, bad: dict, losses: dict, k: int, n0: int, t0: float):
        p = self.progress
        self._check_finite(bad, f"distillation round {p.round}, step {k}")
        vals = {n: float(v) for n, v in losses.items()}
        record["kd"] = vals
        rate = n0 / max(self.clock.elapsed() - t0, 1e-9)
        yield from self._emit(KDStep(p.round, p.kd_steps, vals, self.opt.param_groups[0]["lr"], rate))

    def _kd_lr(self) -> float:
        d = self.cfg.distill
        progress = after_warmup(self.run_progress(), self.cfg.warmup)
        if d.lr_schedule == "multistep":
            return multistep_lr(d.lr, progress, d.lr_milestones)
        return cosine_lr(d.lr, progress, d.lr_min)

    def _kd_batch(self) -> torch.Tensor:
        """The next KD batch, normalized, on the device."""
        d, normalizer = self.cfg.distill, self.teacher.normalizer
        if d.source == "generator":
            return normalizer(self.synth.sample(self.kd_batch)).contiguous(memory_format=torch.channels_last)
        if d.source in ("round", "regenerate"):
            return normalizer(self._from_round_batch()).contiguous(memory_format=torch.channels_last)
        return prepare_batch(self.bank.images[self._next_bank_indices()], normalizer, self.device, d.augment,
                             self.rng.cpu)

    def _next_bank_indices(self) -> torch.Tensor:
        """Batches drawn without replacement from a shuffled pass over the whole bank, a new pass each round
        (and whenever one runs out), as the reference code's DataLoader over its image pool."""
        n = len(self.bank)
        if n == 0:
            raise IfheError(f"bank {self.bank.root} is empty: nothing to distill from")
        out = []
        need = self.kd_batch
        while need > 0:
            if self._kd_order is None or self._kd_pos >= len(self._kd_order):
                self._kd_order, self._kd_pos = torch.randperm(n, generator=self.rng.cpu), 0
            take = self._kd_order[self._kd_pos:self._kd_pos + need]
            self._kd_pos += len(take)
            need -= len(take)
            out.append(take)
        return torch.cat(out)

    def _from_round_batch(self) -> torch.Tensor:
        """KD images of GAN-style rounds: the round's float batch itself when the KD batch is its size (ZSKT,
        DAFL), else a random draw from it."""
        x = self._round_images
        n = len(x)
        if self.kd_batch == n:
            return x
        gen = self.rng.dev
        idx = (torch.randperm(n, device=x.device, generator=gen)[:self.kd_batch] if self.kd_batch <= n else
               torch.randint(0, n, (self.kd_batch,), device=x.device, generator=gen))
        return x[idx]

    def _check_finite(self, bad: dict[str, torch.Tensor], where: str) -> None:
        if not bad:
            return
        flags = torch.stack(list(bad.values())).cpu()
        if flags.any():
            names = [k for k, f in zip(bad, flags.tolist()) if f]
            kept = (f"its last good checkpoint (after round {self.saved_round}) is kept in "
                    f"{self.out / checkpoint_name(self.dist.rank)}" if self.saved_round is not None else
                    f"no checkpoint had been written yet in {self.out}")
            raise DivergenceError(
                f"loss term {', '.join(repr(n) for n in names)} became non-finite in {where}; the run stopped, "
                f"and {kept}: lower the learning rates or weights and resume")

    def _evaluate(self) -> Evaluated:
        with self.clock.excluded():
            t = self.clock.now()
            try:
                return self._evaluate_now()
            finally:
                self.progress.eval_s += self.clock.now() - t

    def _evaluate_now(self) -> Evaluated:
        p = self.progress
        p.student_acc = evaluate(self.student, self.test_set, self.teacher.normalizer, self.device)
        p.head_acc = (evaluate_head(self.head, self.teacher, self.test_set, self.teacher.normalizer, self.device,
                                    self.cfg.synth.h_stages) if self.cfg.distill.train_head else None)
        p.last_eval_kd = p.kd_steps
        return Evaluated(p.round, p.kd_steps, p.student_acc, p.head_acc, p.elapsed_s)

    def _write_result(self, reason: str) -> None:
        """The run's final figures for scripts: a `final` record in metrics.jsonl and result.json."""
        p = self.progress
        result = {"final": True, "reason": reason, "round": p.round, "kd_steps": p.kd_steps,
                  "bank_size": len(self.bank), "elapsed_s": round(p.elapsed_s, 2), "student_acc": p.student_acc,
                  "head_acc": p.head_acc,
                  "test_images": len(self.test_set) if self.test_set is not None else None,
                  "method": self.cfg.method, "teacher": self.cfg.teacher,
                  "teacher_sha256": catalog.sha256_of(self.teacher),
                  "student": self.cfg.student, "seed": self.cfg.seed, "head_training": self.head_training(),
                  "precision": self.precision,
                  "precision_requested": self.cfg.precision, "precision_choice": self.precision_choice,
                  "clock": self.cfg.clock,
                  "budget_minutes": self.cfg.budget_minutes, "threads": torch.get_num_threads(),
                  "compute": compute_record(p) | {"reference_kd_student": reference_kd_passes(self.cfg.method),
                                                   "kd_steps_per_round": p.kd_step_cap}}
        ref = result["compute"]["reference_kd_student"]
        result["compute"]["share_of_reference_kd"] = round(p.kd_student / ref, 6) if ref else None
        self.metrics.append(result)
        atomic_write_text(self.out / "result.json", json.dumps(result, indent=1))

    def _export_models(self) -> None:
        meta = {"method": self.cfg.method, "teacher": self.cfg.teacher, "rounds": self.progress.round,
                "kd_steps": self.progress.kd_steps,
                "test_accuracy": self.progress.student_acc}
        save_model(self.out / "student.safetensors", self.student, self.dataset, meta)
        from .checkpoint import save_tensors
        save_tensors(self.out / "head.safetensors", self.head.state_dict(),
                     head_meta(self.head, self.cfg.synth.h_stages) |
                     {"teacher": str(self.cfg.teacher), "head_acc": self.progress.head_acc,
                      "head_training": self.head_training(), "head_updates": self.progress.head_updates})


def run_to_end(run: Run, on_event=None) -> Finished:
    """Drive a run to its end (sweeps, benchmarks); returns its Finished event."""
    last = None
    for ev in run.events():
        if on_event is not None:
            on_event(ev)
        last = ev
    return last
