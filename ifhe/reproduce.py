"""Sweeps of runs under equal budgets, resumable cell by cell, on one machine, summarised with intervals.

A cell is (teacher-student pair, method variant, seed); its run lives in <out>/runs/<pair>/<variant>/seed<k>.
Run time excludes evaluations and counts CPU time per thread (see experiment._Clock), so every method gets the
same training time even when other work shares the machine.

What a sweep folder holds, and what of it must be kept (committed) to resume it elsewhere:

- `sweep.json` (keep): the settings, and one record per invocation of `ifhe reproduce` on the folder: the
  command, the machine (`machine.machine_info`) and a calibration measured at its start (`machine.calibrate`).
  A later invocation with other settings is refused; one on a machine whose calibration differs from the
  first invocation's by more than 20% too, unless `--allow-mixed-machines`.
- `cells/<pair>/<variant>/seed<k>.json` (keep): the summary of each finished cell: accuracies, rounds, KD
  steps, curve, config, the machine and calibration of the invocation that finished it and every calibration
  it ran under. A cell with this file is never run again.
- `runs/` (not kept; gitignored): the run folders (checkpoint, bank, metrics, `summary.json`, the same summary)
  and one lock file per cell; an unfinished cell whose run folder survives resumes from its checkpoint, one
  whose folder is lost starts again.
- `table.md`, `results.json`, `curves.png`, `curves.html`: written from the finished cells.

Two processes never run the same cell: each takes the cell's lock (`CellLock`) first. `run_cells` runs N cells
at a time as separate processes (`ifhe reproduce ... --only-cell ID`).

This module runs the cells; `ifhe.locks` has the locks, `ifhe.sweep_stats` the statistics over the finished
cells and `ifhe.sweep_report` the tables and curves. Tables never mix machines: cells whose calibrations differ
from the first cell's by more than 20% are refused (`sweep_stats.check_machines`) unless allowed, and then each
cell names its machine and paired differences use only seeds whose two cells ran on the same one.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import catalog
from .config import make_config, reference_kd_passes, to_dict
from .errors import IfheError
from .evaluation import evaluate
from .experiment import CHECKPOINT, Run, compute_record, run_to_end
from .fileio import atomic_write_text, json_safe
from .jsonl import JsonlLog
from .locks import CellLock, describe_holder, lock_holder
from .cpu import machine_label
from .machine import DEFAULT_TOLERANCE, calibration_seconds, relative_difference, same_machine
from .methods import variants

# name -> (method preset, synth overrides): every method and its variants, from the method spec
VARIANTS: dict[str, tuple[str, dict]] = variants()

SWEEP_FILE = "sweep.json"
LOCKED_RC = 3          # exit status of `--only-cell` when another process holds the cell
# settings that must be equal for every invocation on one sweep folder (methods and seeds may grow)
SWEEP_SETTINGS = ("table", "budget_minutes", "threads", "precision", "eval_every", "eval_images", "set")


@dataclass(frozen=True)
class Cell:
    teacher: str
    student: str
    variant: str
    seed: int

    @property
    def pair(self) -> str:
        return f"{self.teacher}-{self.student}"

    @property
    def id(self) -> str:
        return f"{self.pair}/{self.variant}/seed{self.seed}"

    def folder(self, out: Path) -> Path:
        return Path(out) / "runs" / self.pair / self.variant / f"seed{self.seed}"

    def record_path(self, out: Path) -> Path:
        """The finished cell's summary where it is kept with the sweep (outside the gitignored runs/)."""
        return Path(out) / "cells" / self.pair / self.variant / f"seed{self.seed}.json"

    def lock_path(self, out: Path) -> Path:
        return Path(out) / "runs" / self.pair / self.variant / f"seed{self.seed}.lock"


def plan(table: str, variants: list[str], seeds: int, available: list[str]) -> list[Cell]:
    """The cells of a sweep, seed by seed (every variant's seed 0 first), so that a sweep stopped half-way
    has complete seeds to pair."""
    if table not in catalog.TABLES:
        raise IfheError(f"--table {table!r}: known tables: {', '.join(catalog.TABLES)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise IfheError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if len(set(variants)) != len(variants):
        raise IfheError(f"--methods lists a variant twice: {variants}")
    if seeds < 1:
        raise IfheError(f"--seeds must be >= 1, got {seeds}")
    pairs = [(t, s) for t, s in catalog.TABLES[table] if t in available]
    if not pairs:
        raise IfheError(f"no teacher of table {table} is in the zoo; train one with `ifhe train-teacher --publish`")
    return [Cell(t, s, v, seed) for t, s in pairs for seed in range(seeds) for v in variants]


def parse_comparisons(items: list[str] | None, variants: list[str]) -> list[tuple[str, str]]:
    """Pairs (A, B) whose paired difference A - B is reported: every variant against the first one listed,
    then each `A:B` of `items` (both must be variants of the sweep)."""
    pairs = [(v, variants[0]) for v in variants[1:]]
    for item in items or []:
        a, sep, b = item.partition(":")
        if not sep or not a or not b or a == b:
            raise IfheError(f"--compare {item!r}: expected A:B with two different variants, e.g. ifhe:cmi")
        missing = [x for x in (a, b) if x not in variants]
        if missing:
            raise IfheError(f"--compare {item!r}: {', '.join(missing)} is not in --methods {' '.join(variants)}")
        if (a, b) not in pairs:
            pairs.append((a, b))
    return pairs


def read_sweep(out: str | os.PathLike) -> dict | None:
    path = Path(out) / SWEEP_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise IfheError(f"{path}: not valid JSON ({e}); restore it from git") from None


def _check_settings(stored: dict, settings: dict, path: Path) -> None:
    for key in SWEEP_SETTINGS:
        if key in stored and stored.get(key) != settings.get(key):
            raise IfheError(f"{path}: this sweep was started with {key}={stored.get(key)!r}, this command has "
                            f"{settings.get(key)!r}; rerun with the sweep's settings or use another --out")


def start_invocation(out: str | os.PathLike, settings: dict, argv: list[str], machine: dict, calibration: dict,
                     allow_mixed: bool = False, tolerance: float = DEFAULT_TOLERANCE, jobs: int = 1) -> dict:
    """Record a new invocation (this machine, its calibration) in `<out>/sweep.json`, creating the file on the
    first; returns the invocation record ({"index", "machine", "calibration", ...}).

    Refused: settings other than the sweep's, and a machine whose calibration differs from the first
    invocation's by more than `tolerance` (unless `allow_mixed`): its cells would not go into one table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SWEEP_FILE
    with _SweepLock(out):
        sweep = read_sweep(out)
        if sweep is not None:
            _check_settings(sweep.get("settings") or {}, settings, path)
            first = sweep.get("calibration")
            if first is not None and not same_machine(first, calibration, tolerance) and not allow_mixed:
                raise IfheError(
                    f"this machine ({machine_label(machine, settings.get('threads'))}) takes "
                    f"{calibration['step_s']:.3f} s per calibration step, the sweep in {out} was started on "
                    f"{machine_label(sweep.get('machine'), settings.get('threads'))} at "
                    f"{calibration_seconds(first):.3f} s ({100 * relative_difference(first, calibration):.0f}% "
                    f"apart, more than {100 * tolerance:.0f}%): its cells would not go into one table. Run it on "
                    f"a machine of the same kind, use another --out, or pass --allow-mixed-machines")
        else:
            sweep = {"format": 1, "settings": settings, "command": _command_line(argv), "machine": machine,
                     "calibration": calibration, "invocations": []}
        inv = {"index": len(sweep["invocations"]), "command": _command_line(argv), "jobs": jobs,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "pid": os.getpid(),
               "machine": machine, "calibration": calibration}
        sweep["invocations"].append(inv)
        atomic_write_text(path, json.dumps(json_safe(sweep), indent=1))
    return inv


def join_invocation(out: str | os.PathLike, index: int, settings: dict) -> dict:
    """The record of invocation `index` (a child process of that invocation runs a cell under it)."""
    sweep = read_sweep(out)
    if sweep is None or not 0 <= index < len(sweep.get("invocations", [])):
        raise IfheError(f"--invocation {index}: {Path(out) / SWEEP_FILE} has no such invocation")
    _check_settings(sweep.get("settings") or {}, settings, Path(out) / SWEEP_FILE)
    return sweep["invocations"][index]


class _SweepLock(CellLock):
    def __init__(self, out: Path):
        super().__init__(Path(out) / "runs" / "sweep.lock")

    def __enter__(self):
        if not self.acquire(timeout=120):
            raise IfheError(f"{self.path}: held by {describe_holder(lock_holder(self.path))} for two minutes")
        return self


def _command_line(argv: list[str]) -> str:
    return "ifhe reproduce " + " ".join(shlex.quote(x) for x in argv)


# ---- running cells ------------------------------------------------------------------------------------------

def finished_summary(cell: Cell, out: Path) -> dict | None:
    """The summary of a finished cell: the kept record, else the run folder's summary.json (then kept too)."""
    record, in_run = cell.record_path(out), cell.folder(out) / "summary.json"
    for path in (record, in_run):
        if path.exists():
            try:
                summary = json.loads(path.read_text())
            except ValueError:
                continue  # cut short by a kill (atomic writes make this rare): the other copy, or run again
            if path == in_run and not record.exists():
                record.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(record, json.dumps(json_safe(summary), indent=1))
            return summary
    return None


def _brief_invocation(inv: dict) -> dict:
    return {"invocation": inv.get("index"), "cpu_model": (inv.get("machine") or {}).get("cpu_model"),
            "calibration": inv.get("calibration")}


def run_cell(cell: Cell, out: Path, budget_minutes: float, data: str | None, overrides: dict | None = None,
             teacher=None, test_set=True, final_test_set=None, on_event=None, invocation: dict | None = None) -> dict:
    """Run (or resume, or skip) one cell; returns its summary. The caller holds the cell's lock.

    `invocation` (from `start_invocation`): the machine and calibration this process runs under, recorded in
    the summary, with every earlier invocation the cell ran under when it is resumed from a checkpoint."""
    out = Path(out)
    done = finished_summary(cell, out)
    if done is not None:
        return done
    folder = cell.folder(out)
    method, synth = VARIANTS[cell.variant]
    o = dict(overrides or {})
    cfg = make_config(method, "cpu", synth={**synth, **o.pop("synth", {})}, distill=o.pop("distill", {}),
                      teacher=cell.teacher, student=cell.student, seed=cell.seed, budget_minutes=budget_minutes,
                      rounds=o.pop("rounds", 10 ** 6), data=data, **{"clock": "cpu", **o})
    resume = (folder / CHECKPOINT).exists()
    history_path = folder / "invocations.json"
    history = []
    if resume and history_path.exists():
        try:
            history = json.loads(history_path.read_text())
        except ValueError:
            history = []
    if invocation is not None:
        if not history or history[-1].get("invocation") != invocation.get("index"):
            history.append(_brief_invocation(invocation))
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(history_path, json.dumps(json_safe(history), indent=1))
    run = Run(cfg, folder, resume=resume, teacher=teacher, test_set=test_set)
    fin = run_to_end(run, on_event)
    final_acc = fin.student_acc
    if final_test_set is not None:
        final_acc = evaluate(run.student, final_test_set, run.teacher.normalizer, run.device)
    curve = [{"elapsed_s": r["elapsed_s"], "student_acc": r["student_acc"], "head_acc": r.get("head_acc")}
             for r in JsonlLog(folder / "metrics.jsonl").read() if r.get("student_acc") is not None]
    summary = {"cell": cell.__dict__, "id": cell.id, "variant": cell.variant, "pair": cell.pair, "seed": cell.seed,
               "student_acc": final_acc, "head_acc": fin.head_acc, "rounds": fin.round,
               "kd_steps": run.progress.kd_steps, "bank_size": fin.bank_size, "elapsed_s": fin.elapsed_s,
               "reason": fin.reason, "config": to_dict(run.cfg), "curve": curve,
               "precision": run.precision, "threads": run.cfg.threads,
               "compute": compute_record(run.progress) | {
                   "reference_kd_student": reference_kd_passes(run.cfg.method),
                   "kd_steps_per_round": run.progress.kd_step_cap},
               "final_test_images": len(final_test_set) if final_test_set is not None else None,
               "dataset": run.dataset,
               "teacher_sha256": catalog.sha256_of(run.teacher),
               "machine": invocation.get("machine") if invocation else None,
               "calibration": invocation.get("calibration") if invocation else None,
               "invocation": invocation.get("index") if invocation else None,
               "calibrations": history}
    text = json.dumps(json_safe(summary), indent=1)
    atomic_write_text(folder / "summary.json", text)
    cell.record_path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cell.record_path(out), text)
    return summary


def child_command(cell: Cell, settings: dict, out: Path, invocation: int, allow_mixed: bool = False) -> list[str]:
    """The command that runs one cell of this sweep in its own process, under invocation `invocation`."""
    cmd = [sys.executable, "-m", "ifhe", "reproduce", "--table", settings["table"],
           "--methods", cell.variant, "--seeds", str(cell.seed + 1),
           "--budget-minutes", repr(float(settings["budget_minutes"])),
           "--eval-every", str(settings["eval_every"]), "--eval-images", str(settings["eval_images"]),
           "--precision", settings["precision"], "--out", str(out),
           "--only-cell", cell.id, "--invocation", str(invocation)]
    if settings.get("threads") is not None:
        cmd += ["--threads", str(settings["threads"])]
    for item in settings.get("set") or []:
        cmd += ["--set", item]
    if settings.get("data"):
        cmd += ["--data", str(settings["data"])]
    if allow_mixed:
        cmd.append("--allow-mixed-machines")
    return cmd


class _Done:
    """A handle like subprocess.Popen's for a cell that ran in this process."""

    def __init__(self, returncode: int):
        self.returncode = returncode

    def poll(self) -> int:
        return self.returncode

    def terminate(self) -> None:
        pass


def run_cells(cells: list[Cell], out: Path, jobs: int, start: Callable[[Cell], object], poll_s: float = 1.0,
              wait_s: float = 10.0, log: Callable[[str], None] = print) -> dict[str, int]:
    """Run every unfinished cell, `jobs` at a time: `start(cell)` returns a handle with `poll()` (None while it
    runs, else its exit status: 0 finished, LOCKED_RC held by another process, anything else failed) and
    `terminate()`. A cell held by another process (another invocation on the same folder) is waited for, and
    run here if its holder gives it up unfinished. Returns {cell id: exit status} of the cells that failed."""
    todo = [c for c in cells if finished_summary(c, out) is None]
    total = len(todo)
    running: dict[Cell, object] = {}
    waiting: list[Cell] = []
    failed: dict[str, int] = {}
    started = 0
    try:
        while todo or running or waiting:
            for c in list(waiting):
                if finished_summary(c, out) is not None:
                    waiting.remove(c)
                elif lock_holder(c.lock_path(out)) is None:
                    waiting.remove(c)
                    todo.insert(0, c)
            while todo and len(running) < jobs:
                c = todo.pop(0)
                if finished_summary(c, out) is not None:
                    continue
                holder = lock_holder(c.lock_path(out))
                if holder is not None:
                    log(f"{c.id}: being run by {describe_holder(holder)}; waiting for it")
                    waiting.append(c)
                    continue
                started += 1
                log(f"[{started}/{total}] {c.id}")
                running[c] = start(c)
            progressed = False
            for c, h in list(running.items()):
                rc = h.poll()
                if rc is None:
                    continue
                progressed = True
                del running[c]
                if rc == LOCKED_RC:
                    log(f"{c.id}: taken by another process meanwhile; waiting for it")
                    waiting.append(c)
                elif rc != 0 and finished_summary(c, out) is None:
                    failed[c.id] = rc
                    log(f"{c.id}: failed (exit status {rc}); rerun the command to resume it")
            if not progressed and (running or (waiting and not todo)):
                time.sleep(poll_s if running else wait_s)
    finally:
        for h in running.values():  # interrupted: stop the children; their cells resume from checkpoints
            h.terminate()
    return failed
