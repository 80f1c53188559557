"""Background runs for the app: a process-wide registry of jobs, each a daemon thread iterating `Run` events.

Streamlit reruns a page script on every click, so a run never lives in a script thread. A `Job` owns its
thread, a lock, pause/step/stop controls and a *snapshot* (counters, loss and accuracy history, the latest
image grid as PNG bytes). Pages read `job.snapshot()` in a fragment that polls a few times a second; nothing
a page does can end a run except the Stop button (and stopping the server, which stops every run cleanly).

The job thread does as little as it can next to the run: it keeps the latest preview batch as the engine hands
it over and composes the image grid only when a page has drawn the previous one (`Job.drawn`), so a run nobody
watches pays for no pictures, and a watched one for no more than the page shows.

Rules kept here, not in the pages:
- at most `max_jobs` jobs are active at once (`JobLimitError` beyond that, raised under the registry lock, so
  concurrent sessions cannot overshoot); each job thread caps torch at `threads`, the cores shared by the slots;
- job ids are unguessable (`secrets.token_urlsafe`) and never written to disk, and nothing lists them: a
  session only sees a job whose id it holds (its own, or one pasted into the URL);
- run folders are named independently of job ids, under one base directory (`IFHE_APP_RUNS`).
"""
from __future__ import annotations

import atexit
import json
import os
import secrets
import threading
import weakref
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ifhe.catalog import sha256_of, teacher_info
from ifhe.config import dump_yaml
from ifhe.errors import IfheError

from .files import data_status, new_run_name, safe_path
from .grids import compose_bank_by_class, compose_grid, spread_indices
from .snapshot import ACTIVE_STATES, Snapshot, class_names, thin, weights_of
from .warmup import join_warm_up, stop_warm_up, warm_up_running

# torch and the engine's modules that import it are imported inside the job thread's functions: the first page
# reads this module before it draws, and torch takes seconds to import

GRID_INTERVAL_S = 0.25        # at most this often the job thread composes a new image grid (when one was drawn)
BANK_INTERVAL_S = 2.0         # ... and a new bank-by-class picture
GRID_MAX_IMAGES = 32          # the grid shows an evenly spaced subset of larger batches
RATE_WINDOW = 8               # iterations per second shown: wall time of the last few steps of the round
STOP_WAIT_S = 8.0             # at exit, how long each run gets to reach a step boundary and save


class JobLimitError(Exception):
    """Every job slot is busy: the user is told, nothing is started."""


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_base_dir() -> Path:
    return Path(os.environ.get("IFHE_APP_RUNS") or repo_root() / "runs" / "app")


def default_max_jobs() -> int:
    env = os.environ.get("IFHE_APP_MAX_JOBS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) - 1)


def default_threads(max_jobs: int) -> int:
    env = os.environ.get("IFHE_APP_THREADS")
    if env:
        return max(1, int(env))
    # every core goes to the job slots: between reruns the server needs little. Measured on 2 cores with Chromium
    # on the same cores (bench_app.py, README "The demo app"): IFHE's live view 5.35 it/s with 2 threads, 4.20
    # with 1; health 2 ms median either way.
    return max(1, (os.cpu_count() or 2) // max(1, max_jobs))


def job_threads() -> int:
    """The torch threads of this server's jobs (IFHE_APP_THREADS, else cores / job slots)."""
    return default_threads(default_max_jobs())


class Job:
    def __init__(self, job_id: str, cfg, out_dir: Path, kind: str, threads: int, test_set_loader=None,
                 teacher=None, on_exit=None):
        self.id = job_id
        self.cfg = cfg
        self.out = Path(out_dir)
        self.kind = kind
        self.threads = threads
        self._threads_now = threads
        self._test_set_loader = test_set_loader
        self._teacher = teacher
        self._on_exit = on_exit
        self.run = None
        self._cond = threading.Condition()
        self._paused = False
        self._stepping = False
        self._holding = False         # the job thread waits in _gate: no step is in flight (what "paused" shows)
        self._step_budget = 0
        self._stop_requested = False
        self._export_requested = False
        self._pending_weights: dict[str, float] = {}
        self._preview = None          # (images, labels, teacher probs or None, caption, serial): the latest batch
        self._preview_serial = 0
        self._grid_serial = 0         # the preview the current grid shows
        self._drawn = 0               # the grid version a page last drew
        self._last_grid = 0.0
        self._last_bank = 0.0
        self._step_times: list[float] = []  # wall times of this round's synthesis steps (for it_per_s)
        self._submitted = time.perf_counter()
        self._teacher_sha = None      # the checksum of the teacher the run loaded (status.json records it)
        self._snap = Snapshot(kind=kind, method=cfg.method, out_dir=str(self.out), run_name=self.out.name,
                              rounds=cfg.rounds, iterations=cfg.synth.iterations,
                              kd_steps_per_round=cfg.distill.steps_per_round,
                              weights=weights_of(cfg), started_at=time.time())
        self.thread = threading.Thread(target=self._main, name=f"ifhe-job-{self.out.name}", daemon=True)

    # ---- control (any thread) ------------------------------------------------------------------------------
    def start(self) -> "Job":
        self.thread.start()
        return self

    def snapshot(self) -> Snapshot:
        with self._cond:
            s = self._snap
            out = replace(s, weights=dict(s.weights), synth_losses=list(s.synth_losses),
                          kd_losses=list(s.kd_losses), accuracy=list(s.accuracy), class_counts=list(s.class_counts))
            if s.active:
                out.elapsed_s = time.time() - s.started_at
                if self._holding and s.state == "running":
                    out.state = "paused"
            return out

    def drawn(self, grid_version: int) -> None:
        """A page has shown this grid: the job thread may compose the next one (until then it does not)."""
        with self._cond:
            self._drawn = max(self._drawn, grid_version)

    @property
    def active(self) -> bool:
        return self.thread.is_alive() or self._snap.state in ACTIVE_STATES

    def pause(self) -> None:
        with self._cond:
            if self._snap.state in ACTIVE_STATES:
                self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._step_budget = 0
            self._cond.notify_all()

    def step(self, n: int = 1) -> None:
        """While paused: let exactly n more optimizer steps (synthesis or KD) happen, then pause again."""
        with self._cond:
            self._paused = True
            self._step_budget += n
            self._cond.notify_all()

    def stop(self) -> None:
        """Ask the run to end at the next step; it still writes its checkpoint and exports the student."""
        with self._cond:
            self._stop_requested = True
            if self._snap.state in ("starting", "running", "paused"):
                self._snap.state = "stopping"
            run = self.run
            self._cond.notify_all()
        if run is not None:
            run.request_stop()

    def request_export(self) -> None:
        """Write the current student to student_snapshot.safetensors (done by the job thread, between steps)."""
        with self._cond:
            self._export_requested = True
            self._cond.notify_all()

    def set_weights(self, **weights: float) -> None:
        """Live loss weights: checked at once by the engine's one validator (`SynthConfig.with_weights`, an
        IfheError names what is wrong), applied before the next synthesis step."""
        with self._cond:
            run = self.run
            if run is None:  # not built yet: check against the config, apply when it is
                self.cfg.synth.with_weights(**{**self._pending_weights, **weights})
                self._pending_weights.update({k: float(v) for k, v in weights.items()})
            else:
                run.set_weights(**weights)
            self._snap.weights.update({k: float(v) for k, v in weights.items()})

    def config_yaml(self) -> str:
        run = self.run
        cfg = replace(self.cfg, synth=run.synth.cfg) if run is not None else self.cfg
        return dump_yaml(cfg)

    def wait(self, timeout: float | None = None) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    # ---- the job thread ------------------------------------------------------------------------------------
    def _update(self, **fields: Any) -> None:
        with self._cond:
            for k, v in fields.items():
                setattr(self._snap, k, v)

    def _main(self) -> None:
        import torch
        default_threads = torch.get_num_threads()  # the process default, for threads started later
        try:
            self._set_threads(torch)
            from ifhe.experiment import Run
            self._mark("thread started")
            test_set, note = self._test_set_loader(self.cfg) if self._test_set_loader else (None, "")
            self._mark("test set")
            run = Run(self.cfg, self.out, teacher=self._teacher, test_set=test_set)
            self._mark("run built")
            self._teacher_sha = sha256_of(run.teacher)
            self._update(note=note, head_training=run.head_training())
            with self._cond:
                self.run = run
                pending, self._pending_weights = self._pending_weights, {}
                if self._snap.state == "starting":
                    self._snap.state = "running"
                stop = self._stop_requested
            if pending:
                run.set_weights(**pending)
            if stop:
                run.request_stop()
            nc = run.teacher.num_classes
            self._update(classes=class_names(run.dataset, nc, run.bank.classes), class_counts=[0] * nc)
            for ev in self._events(run):
                self._handle(run, ev)
                if self._threads_now != self.threads:
                    self._set_threads(torch)
        except IfheError as e:
            self._update(state="failed", message=str(e))
        except Exception as e:  # a bug: keep the server alive, show the message, log the traceback
            traceback.print_exc()
            self._update(state="failed", message=f"{type(e).__name__}: {e}")
        finally:
            with self._cond:
                if self._snap.state in ACTIVE_STATES:
                    self._snap.state = "stopped" if self._stop_requested else "failed"
                self._snap.elapsed_s = time.time() - self._snap.started_at
                self.run = None  # free the models and the in-memory bank; the run folder keeps everything
            torch.set_num_threads(default_threads)
            self._write_status()
            if self._on_exit:
                self._on_exit(self)

    def _set_threads(self, torch) -> None:
        """The job's threads, but one while the warm-up still runs: a team of two threads waits at every barrier
        on the core the warm-up holds (the server's first Start, read 1 s after the page: 2.1-2.5 s to the first
        grid with two threads from the start, 1.5 s with one; bench_app --first-start)."""
        self._threads_now = 1 if warm_up_running() else self.threads
        torch.set_num_threads(self._threads_now)

    def _mark(self, what: str) -> None:
        if os.environ.get("IFHE_APP_DEBUG"):
            print(f"[job {self.out.name}] {what} at {time.perf_counter() - self._submitted:.3f}s", flush=True)

    def _events(self, run):
        events = run.events()
        try:
            while True:
                self._gate(run)
                try:
                    ev = next(events)
                except StopIteration:
                    return
                yield ev
        finally:
            events.close()

    def _gate(self, run) -> None:
        """Block while paused (unless stepping or stopping); serve export requests in between. The job counts
        as paused only from here on: a step already in flight when Pause came finishes and is counted first."""
        with self._cond:
            try:
                self._hold(run)
            finally:
                self._holding = False

    def _hold(self, run) -> None:
        """The body of _gate (called with the lock held)."""
        while True:
            if self._export_requested:
                self._export_requested = False
                self._unlocked(self._export, run)
                continue
            if not self._paused or self._stop_requested or self._stepping:
                return
            if self._step_budget > 0:
                self._step_budget -= 1
                self._stepping = True
                return
            self._holding = True
            if self._preview_serial > self._grid_serial:  # paused: show the batch as it stands now
                self._unlocked(self._compose, run)
                continue
            self._cond.wait(timeout=1.0)

    def _unlocked(self, work, run) -> None:
        """Run `work(run)` with the lock released (pages may read snapshots meanwhile), then take it back."""
        self._cond.release()
        try:
            work(run)
        finally:
            self._cond.acquire()

    def _export(self, run) -> None:
        from ifhe.zoo import save_model
        path = self.out / "student_snapshot.safetensors"
        try:
            save_model(path, run.student, run.dataset, {"method": self.cfg.method,
                                                        "kd_steps": run.progress.kd_steps, "snapshot": True})
        except OSError as e:  # a full disk must not end the run; the page says so
            self._update(message=f"could not export the student: {e}")
            return
        with self._cond:
            self._snap.student_file = str(path)
            self._snap.exports += 1

    def _handle(self, run, ev) -> None:
        with self._cond:
            self._snap.events += 1
            if ev.kind in ("synth", "kd"):
                self._stepping = False
        handler = getattr(self, f"_on_{ev.kind}", None)
        if handler is not None:  # checkpointed and other events change nothing a page shows
            handler(run, ev)

    def _on_started(self, run, ev) -> None:
        self._update(bank_size=ev.bank_size, kd_steps=ev.kd_steps, round=ev.round)

    def _on_synth(self, run, ev) -> None:
        now = time.perf_counter()
        times = self._step_times
        if ev.iteration == 1:
            times.clear()
        times.append(now)
        del times[:-RATE_WINDOW - 1]
        with self._cond:
            s = self._snap
            s.steps += 1
            s.round, s.iteration = ev.round, ev.iteration
            if len(times) > 1:
                s.it_per_s = (len(times) - 1) / (times[-1] - times[0])
            if ev.losses:
                s.synth_losses.append({"step": s.steps, "round": ev.round, **ev.losses})
                thin(s.synth_losses)
            if ev.metrics and "h_agree" in ev.metrics:
                s.h_agree = ev.metrics["h_agree"]
            if ev.images is not None:
                self._preview_serial += 1
                self._preview = (ev.images, ev.labels, getattr(ev, "teacher_probs", None),
                                 f"round {ev.round}, iteration {ev.iteration} (step {s.steps})",
                                 self._preview_serial)
            wanted = s.grid_png is None or (self._drawn >= s.grid_version
                                            and now - self._last_grid >= GRID_INTERVAL_S)
        if wanted and ev.images is not None:
            self._compose(run)

    def _on_batch(self, run, ev) -> None:
        now = time.perf_counter()
        counts = run.bank.class_counts(run.teacher.num_classes)
        bank = None
        if now - self._last_bank >= BANK_INTERVAL_S or self._snap.bank_png is None:
            bank = self._bank_picture(run)
            self._last_bank = time.perf_counter()
        with self._cond:
            self._snap.bank_size, self._snap.class_counts = ev.bank_size, counts
            if bank is not None:
                self._snap.bank_png = bank

    def _on_kd(self, run, ev) -> None:
        with self._cond:
            s = self._snap
            s.kd_steps, s.round, s.images_per_s, s.lr = ev.step, ev.round, ev.images_per_s, ev.lr
            s.kd_losses.append({"kd_steps": ev.step, "round": ev.round, **ev.losses})
            thin(s.kd_losses)

    def _on_eval(self, run, ev) -> None:
        with self._cond:
            s = self._snap
            s.student_acc, s.head_acc = ev.student_acc, ev.head_acc
            s.accuracy.append({"kd_steps": ev.kd_steps, "round": ev.round, "elapsed_s": round(ev.elapsed_s, 2),
                               "student_acc": ev.student_acc, "head_acc": ev.head_acc})

    def _on_finished(self, run, ev) -> None:
        bank = self._bank_picture(run) if len(run.bank) else None
        if self._preview_serial > self._grid_serial:
            self._compose(run)  # the last batch, whether or not a page drew the one before
        with self._cond:
            s = self._snap
            s.state = "stopped" if ev.reason == "stopped" else "finished"
            s.message = {"rounds": f"finished all {ev.round} rounds", "budget": "time budget used up",
                         "stopped": f"stopped after {ev.round} complete rounds"}.get(ev.reason, ev.reason)
            s.student_acc, s.head_acc, s.bank_size = ev.student_acc, ev.head_acc, ev.bank_size
            s.round = ev.round
            s.student_file = str(self.out / "student.safetensors")
            if bank is not None:
                s.bank_png = bank
                s.class_counts = run.bank.class_counts(run.teacher.num_classes)

    def _compose(self, run) -> None:
        """The image grid of the latest preview batch, captioned with the teacher's view of each image."""
        with self._cond:
            preview = self._preview
        if preview is None:
            return
        images, labels, probs, caption, serial = preview
        png = self._grid(run, images, labels, probs)
        with self._cond:
            s = self._snap
            s.grid_png, s.grid_caption = png, caption
            s.grid_version += 1
            self._grid_serial = serial
            self._last_grid = time.perf_counter()
            if s.first_grid_s is None:
                s.first_grid_s = self._last_grid - self._submitted
                self._mark("first grid")

    def _grid(self, run, images, labels, probs=None) -> bytes:
        import torch
        idx = spread_indices(len(images), GRID_MAX_IMAGES)
        images, labels = images[idx], labels[idx]
        if probs is None:  # the engine did not hand over the teacher's view of the batch: one more pass
            from ifhe.data import to_unit
            t = run.teacher
            with torch.inference_mode():
                x = t.normalizer(to_unit(images.to(run.device))).contiguous(memory_format=torch.channels_last)
                probs = torch.softmax(t(x).float(), dim=1).cpu()
        else:
            probs = probs[idx]
        conf = probs[torch.arange(len(labels)), labels.long()]
        pred = probs.argmax(1)
        return compose_grid(images, labels, conf, pred, self._snap.classes)

    def _bank_picture(self, run) -> bytes:
        return compose_bank_by_class(run.bank.images, run.bank.labels, self._snap.classes)

    def _write_status(self) -> None:
        """A small summary next to the run's files (no job id: run folders may be listed by others)."""
        s = self._snap
        try:
            status = {"state": s.state, "message": s.message, "kind": s.kind, "method": s.method,
                      "student_acc": s.student_acc, "head_acc": s.head_acc, "bank_size": s.bank_size,
                      "kd_steps": s.kd_steps, "rounds_done": s.round, "elapsed_s": round(s.elapsed_s, 2),
                      "started_at": s.started_at, "teacher_sha256": self._teacher_sha}
            if self.out.is_dir():
                (self.out / "status.json").write_text(json.dumps(status, indent=1))
        except OSError:
            pass


CHAIN_POLL_S = 0.5            # how often a chain looks at its running job (and at Stop)


@dataclass
class ChainStatus:
    """What a page draws of a chain: a copy, safe to read without its lock."""

    state: str                    # waiting (for a job slot) | running | finishing (its last step) | done | failed | stopped
    labels: list                  # what each job makes, in order
    index: int = 0                # the job running now (len(labels) once every job has ended)
    job_id: str | None = None     # ... its id
    runs: list = field(default_factory=list)   # run folders made so far
    message: str = ""
    result: Any = None            # what the last step returned

    @property
    def active(self) -> bool:
        return self.state in ("waiting", "running", "finishing")


class Chain:
    """Jobs run one after another (each starts when the one before has ended), then a last step `then(jobs)` (e.g.
    the map of the banks they made), all in a thread of the server: the queue goes on whether or not a page is
    open, and no page rerun moves it. A job that fails ends the chain; a busy job slot is waited for."""

    def __init__(self, registry: "JobRegistry", chain_id: str, configs: list, labels: list, kind: str = "synth",
                 then=None):
        self.id, self._registry, self._configs, self._kind, self._then = chain_id, registry, list(configs), kind, then
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._status = ChainStatus("waiting", list(labels))
        self.jobs: list[Job] = []
        self.thread = threading.Thread(target=self._main, name=f"ifhe-chain-{chain_id[:6]}", daemon=True)

    def start(self) -> "Chain":
        self.thread.start()
        return self

    def status(self) -> ChainStatus:
        with self._lock:
            return replace(self._status, labels=list(self._status.labels), runs=list(self._status.runs))

    def stop(self) -> None:
        """Stop the running job (it keeps its checkpoint and bank) and start no other."""
        self._stop.set()
        with self._lock:
            job = self.jobs[-1] if self.jobs else None
        if job is not None:
            job.resume()
            job.stop()

    def wait(self, timeout: float | None = None) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _set(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self._status, k, v)

    def _submit(self, cfg) -> Job | None:
        """Start one job, waiting for a free slot (None: stopped, or the server is closing)."""
        while not self._stop.is_set():
            try:
                return self._registry.submit(cfg, kind=self._kind)
            except JobLimitError as e:
                if self._registry.closing:
                    self._set(state="stopped", message=str(e))
                    return None
                self._set(state="waiting", message=str(e))
                self._stop.wait(1.0)
        return None

    def _main(self) -> None:
        try:
            for i, cfg in enumerate(self._configs):
                job = self._submit(cfg)
                if job is None:
                    break
                with self._lock:
                    self.jobs.append(job)
                    self._status.runs.append(str(job.out))
                self._set(state="running", index=i, job_id=job.id, message="")
                while not job.wait(CHAIN_POLL_S):
                    pass
                if job.snapshot().state == "failed":
                    self._set(state="failed", message=f"{self._status.labels[i]}: {job.snapshot().message}")
                    return
                if self._stop.is_set():
                    break
            if self._stop.is_set():
                self._set(state="stopped", index=len(self.jobs), message=self._status.message or "stopped")
                return
            self._set(index=len(self._configs), job_id=None, state="finishing" if self._then else "done")
            if self._then is not None:
                self._set(result=self._then(list(self.jobs)), state="done")
        except IfheError as e:
            self._set(state="failed", message=str(e))
        except Exception as e:  # a bug: keep the server alive, show the message, log the traceback
            traceback.print_exc()
            self._set(state="failed", message=f"{type(e).__name__}: {e}")


class JobRegistry:
    """All jobs of this server process. Thread-safe; one instance per process (see `registry()`)."""

    def __init__(self, base_dir: str | os.PathLike | None = None, max_jobs: int | None = None,
                 threads: int | None = None, keep: int = 64):
        self.base_dir = Path(base_dir or default_base_dir())
        self.max_jobs = max_jobs or default_max_jobs()
        self.threads = threads or default_threads(self.max_jobs)
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._chains: dict[str, Chain] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._test_sets: dict[tuple, Any] = {}
        self._test_lock = threading.Lock()
        _REGISTRIES.add(self)

    def active_jobs(self) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.active]

    def active_count(self) -> int:
        return len(self.active_jobs())

    def get(self, job_id: str | None) -> Job | None:
        if not job_id or not isinstance(job_id, str) or len(job_id) > 64:
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def submit(self, cfg, kind: str = "synth", run_name: str | None = None, evaluate: bool = True,
               teacher=None) -> Job:
        """Start a run in a background thread; raises JobLimitError when every slot is busy."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._closing:
                raise JobLimitError("the server is shutting down; start the run again once it is back")
            active = sum(1 for j in self._jobs.values() if j.active)
            if active >= self.max_jobs:
                raise JobLimitError(
                    f"all {self.max_jobs} job slot{'s' if self.max_jobs != 1 else ''} of this server are busy; "
                    f"wait for a run to finish (or stop yours) and press Start again")
            name = run_name or new_run_name(cfg.method)
            out = safe_path(self.base_dir, name)
            if out.exists() and any(out.iterdir()):
                raise IfheError(f"run folder {name!r} already exists under {self.base_dir}; pick another name")
            stop_warm_up()  # a run is starting: it warms up by itself, the warm-up would only slow it
            job_id = secrets.token_urlsafe(16)
            evaluate = evaluate and cfg.distill.steps_per_round > 0  # nothing to evaluate without KD
            job = Job(job_id, cfg, out, kind, self.threads, self._load_test_set if evaluate else None,
                      teacher=teacher)
            self._jobs[job_id] = job
            self._evict()
            job.start()  # inside the lock: the slot count already includes it
        return job

    def submit_chain(self, configs: list, labels: list, kind: str = "synth", then=None) -> Chain:
        """Run `configs` one after another in the background, then `then(jobs)` (see `Chain`)."""
        with self._lock:
            if self._closing:
                raise JobLimitError("the server is shutting down; try again once it is back")
            chain = Chain(self, secrets.token_urlsafe(16), configs, labels, kind, then)
            self._chains[chain.id] = chain
            for k in [k for k, c in self._chains.items() if not c.thread.is_alive()][:-self.keep]:
                del self._chains[k]
        return chain.start()

    def get_chain(self, chain_id: str | None) -> Chain | None:
        if not chain_id or not isinstance(chain_id, str) or len(chain_id) > 64:
            return None
        with self._lock:
            return self._chains.get(chain_id)

    @property
    def closing(self) -> bool:
        return self._closing

    def _evict(self) -> None:
        done = [k for k, j in self._jobs.items() if not j.active]
        for k in done[:max(0, len(self._jobs) - self.keep)]:
            del self._jobs[k]

    def _load_test_set(self, cfg):
        """Real test images for evaluation, loaded once per (dataset, source, size) and shared read-only."""
        from ifhe.experiment import load_test_set
        dataset = _teacher_dataset(cfg)
        key = (dataset, cfg.data, os.environ.get("IFHE_DATA"), cfg.eval_images)
        with self._test_lock:
            if key not in self._test_sets:
                ok, msg = data_status(dataset) if not cfg.data else (True, "")
                # checking first avoids importing torchvision just to learn that nothing is there
                self._test_sets[key] = load_test_set(dataset, cfg.data, cfg.eval_images) if ok else (None, msg)
            return self._test_sets[key]

    def stop_all(self, wait: float | None = 30.0) -> None:
        """Stop every chain and run (each ends at its next step and saves its checkpoint and student) and wait for
        them."""
        with self._lock:
            chains = list(self._chains.values())
        for c in chains:
            c.stop()
        for c in chains:
            c.wait(wait)
        with self._lock:
            jobs = list(self._jobs.values())
        for j in jobs:
            j.resume()
            j.stop()
        for j in jobs:
            j.wait(wait)

    def close(self, wait: float = STOP_WAIT_S) -> None:
        """The server is stopping: refuse new runs, stop the running ones, wait for them to save."""
        with self._lock:
            self._closing = True
        self.stop_all(wait)

    def clear(self) -> None:
        self.stop_all()
        with self._lock:
            self._jobs.clear()
            self._chains.clear()


def _teacher_dataset(cfg) -> str:
    return teacher_info(cfg.teacher).get("dataset") or "cifar10"


def registry() -> JobRegistry:
    """The one registry of this process (Streamlit's cache_resource keeps it across reruns and sessions)."""
    return _cached_registry()


# ---- a clean exit ------------------------------------------------------------------------------------------

_REGISTRIES: "weakref.WeakSet[JobRegistry]" = weakref.WeakSet()


def shutdown(wait: float = STOP_WAIT_S) -> None:
    """At interpreter exit (Ctrl-C, SIGTERM, `docker stop` end the server's loop, then this runs): stop every
    run so that it saves its checkpoint and student, and let the warm-up finish, before Python tears itself
    down. A thread still inside torch at that point aborts the interpreter ("terminate called without an
    active exception", exit code 134)."""
    stop_warm_up()
    for reg in list(_REGISTRIES):
        reg.close(wait)
    join_warm_up(60.0)


atexit.register(shutdown)


def _make_registry() -> JobRegistry:
    return JobRegistry()


try:
    import streamlit as _st
    _cached_registry = _st.cache_resource(show_spinner=False)(_make_registry)
except Exception:  # pragma: no cover - streamlit is a dependency; keep the module importable without it
    import functools
    _cached_registry = functools.lru_cache(maxsize=1)(_make_registry)
