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

Tables never mix machines: cells whose calibrations differ from the first cell's by more than 20% are refused
(`check_machines`) unless allowed, and then each cell names its machine and paired differences use only seeds
whose two cells ran on the same one.
"""
from __future__ import annotations

import json
import math
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .checkpoint import atomic_write_text
from .config import make_config, to_dict
from .errors import IfheError
from .jsonl import JsonlLog
from .methods import variants
from .paper import ABLATION_PAIRS, NOTES as PAPER_NOTES, headline_figures
from .machine import DEFAULT_TOLERANCE, calibration_seconds, machine_label, relative_difference, same_machine

# name -> (method preset, synth overrides): every method and its variants, from the method spec
VARIANTS: dict[str, tuple[str, dict]] = variants()
PAPER_CIFAR10_WRN40_2_WRN16_1 = headline_figures()

TABLES = {"cifar10": [("cifar10_wrn16_2", "wrn16_1"), ("cifar10_wrn40_2", "wrn16_1"),
                      ("cifar10_wrn40_2", "wrn40_1"), ("cifar10_wrn40_2", "wrn16_2")],
          # across families: the student has no stage that mirrors the teacher's
          "cifar10-vgg": [("cifar10_vgg11_bn", "wrn16_1"), ("cifar10_vgg11_bn", "resnet18")]}

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
    if table not in TABLES:
        raise IfheError(f"--table {table!r}: known tables: {', '.join(TABLES)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise IfheError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if len(set(variants)) != len(variants):
        raise IfheError(f"--methods lists a variant twice: {variants}")
    if seeds < 1:
        raise IfheError(f"--seeds must be >= 1, got {seeds}")
    pairs = [(t, s) for t, s in TABLES[table] if t in available]
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


# ---- one process per cell -----------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CellLock:
    """An exclusive lock on a file, held by one process at a time.

    The file holds the holder's pid and host for people and messages; exclusion itself is `fcntl.flock`, which
    the kernel drops when the holder dies, so a lock left by a killed process (its pid dead, the file still
    there) is simply taken over, and two processes that find the same stale file cannot both take it. The file
    is removed on release; a process that opened it just before the removal notices (another inode) and
    tries again."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> bool:
        import fcntl

        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
                continue
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and our flock: take the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
            self.fd = fd
            return True

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "CellLock":
        if not self.acquire():
            raise IfheError(f"{self.path} is held by {describe_holder(lock_holder(self.path))}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(path: str | os.PathLike) -> dict | None:
    """Who holds the lock at `path` ({"pid", "host", "since"}), or None when nobody does (no file, or a file
    left by a process that died)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                info = json.loads(os.read(fd, 4096).decode() or "{}")
            except ValueError:
                info = {}
            return info if isinstance(info, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(info: dict | None) -> str:
    if not info:
        return "another process"
    alive = "" if info.get("host") != socket.gethostname() or _pid_alive(int(info.get("pid", 0) or 0)) \
        else " (not running)"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}{alive}, since {info.get('since', '?')}"


# ---- the sweep record: settings, machine and calibration of every invocation --------------------------------

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
        atomic_write_text(path, json.dumps(_plain(sweep), indent=1))
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
    import shlex
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
                atomic_write_text(record, json.dumps(_plain(summary), indent=1))
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
    from .evaluation import evaluate
    from .experiment import CHECKPOINT, Run, run_to_end

    out = Path(out)
    done = finished_summary(cell, out)
    if done is not None:
        return done
    folder = cell.folder(out)
    method, synth = VARIANTS[cell.variant]
    o = dict(overrides or {})
    cfg = make_config(method, "cpu", synth={**synth, **o.pop("synth", {})}, distill=o.pop("distill", {}),
                      teacher=cell.teacher, student=cell.student, seed=cell.seed, budget_minutes=budget_minutes,
                      rounds=10 ** 6, data=data, **{"clock": "cpu", **o})
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
        atomic_write_text(history_path, json.dumps(_plain(history), indent=1))
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
               "final_test_images": len(final_test_set) if final_test_set is not None else None,
               "dataset": run.dataset,
               "machine": invocation.get("machine") if invocation else None,
               "calibration": invocation.get("calibration") if invocation else None,
               "invocation": invocation.get("index") if invocation else None,
               "calibrations": history}
    text = json.dumps(_plain(summary), indent=1)
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


# ---- machines -----------------------------------------------------------------------------------------------

def _cell_id(s: dict) -> str:
    return s.get("id") or f"{s['pair']}/{s['variant']}/seed{s['seed']}"


def _cal_text(cal) -> str:
    v = calibration_seconds(cal)
    return f"{v:.3f} s" if v is not None else "not recorded"


def check_machines(summaries: list[dict], tolerance: float = DEFAULT_TOLERANCE, allow_mixed: bool = False) -> dict:
    """Whether the cells ran on one machine, judged by their calibrations (`machine.same_machine`).

    The reference is the first cell's calibration. A cell is off when its calibration, or any calibration it ran
    under before a resume, differs from the reference by more than `tolerance`, or is missing while others are
    recorded. Off cells raise IfheError listing them, unless `allow_mixed`; then the result groups the cells by
    machine (M1 is the reference's) so that tables can say which cell ran where. Cells recorded before
    calibrations existed (none has one) pass with `recorded` False."""
    ids = [_cell_id(s) for s in summaries]
    cals = [calibration_seconds(s.get("calibration")) for s in summaries]
    if all(c is None for c in cals):
        return {"recorded": False, "reference": None, "reference_cell": None, "machines": [], "cell_machine": {},
                "off": [], "mixed": False, "tolerance": tolerance}
    ref_i = next(i for i, c in enumerate(cals) if c is not None) if cals[0] is None else 0
    ref = summaries[ref_i]
    off = []
    for s, cid, c in zip(summaries, ids, cals):
        under = [c] + [calibration_seconds(h.get("calibration")) for h in s.get("calibrations") or []]
        bad = [u for u in under if u is None or not same_machine(ref.get("calibration"), u, tolerance)]
        if bad:
            worst = "not recorded" if any(u is None for u in bad) else \
                f"{max(bad, key=lambda u: relative_difference(u, ref['calibration'])):.3f} s"
            off.append(f"{cid}: calibration {worst} ({machine_label(s.get('machine'))})")
    if off and not allow_mixed:
        raise IfheError(
            f"cells from different machines: the table's reference is {ids[ref_i]} at "
            f"{_cal_text(ref.get('calibration'))} ({machine_label(ref.get('machine'))}); these differ by more "
            f"than {100 * tolerance:.0f}% (or ran partly elsewhere): " + "; ".join(off) +
            ". Rerun them on the reference's kind of machine, or pass --allow-mixed-machines to tabulate them "
            "with each cell's machine named")
    machines: list[dict] = []
    cell_machine: dict[str, str] = {}
    for s, cid, c in zip(summaries, ids, cals):
        if c is None:
            cell_machine[cid] = "?"
            continue
        m = next((m for m in machines if same_machine(m["calibration_s"], c, tolerance)), None)
        if m is None:
            m = {"id": f"M{len(machines) + 1}", "calibration_s": c, "calibration": s.get("calibration"),
                 "machine": s.get("machine"), "label": machine_label(s.get("machine"), _threads_of(s)), "cells": []}
            machines.append(m)
        m["cells"].append(cid)
        under = [calibration_seconds(h.get("calibration")) for h in s.get("calibrations") or []]
        within = all(u is not None and same_machine(c, u, tolerance) for u in under)
        cell_machine[cid] = m["id"] if within else m["id"] + "*"
    return {"recorded": True, "reference": ref.get("calibration"), "reference_cell": ids[ref_i],
            "reference_invocation": ref.get("invocation"),
            "machines": machines, "cell_machine": cell_machine, "off": off, "mixed": bool(off),
            "tolerance": tolerance}


def _threads_of(s: dict) -> int | None:
    return (s.get("config") or {}).get("threads") or (s.get("calibration") or {}).get("threads")


# ---- statistics over seeds ----------------------------------------------------------------------------------

def _pairs_and_variants(summaries: list[dict]) -> tuple[list[str], list[str]]:
    return list(dict.fromkeys(s["pair"] for s in summaries)), list(dict.fromkeys(s["variant"] for s in summaries))


def paper_figure(variant: str):
    return PAPER_CIFAR10_WRN40_2_WRN16_1.get(variant)


def variant_stats(summaries: list[dict]) -> list[dict]:
    """Per (pair, variant): seeds, and mean / std / 95% t interval of the student's and h's top-1, rounds,
    KD steps and bank size over the seeds."""
    from .stats import mean_interval

    pairs, variants = _pairs_and_variants(summaries)
    rows = []
    for p in pairs:
        for v in variants:
            cells = sorted((s for s in summaries if s["pair"] == p and s["variant"] == v), key=lambda s: s["seed"])
            if not cells:
                continue
            row = {"pair": p, "variant": v, "seeds": [s["seed"] for s in cells], "n": len(cells),
                   "paper": paper_figure(v), "paper_note": PAPER_NOTES.get(v)}
            for key in ("student_acc", "head_acc", "rounds", "kd_steps", "bank_size"):
                row[key] = mean_interval([s.get(key) for s in cells]).as_dict()
            rows.append(row)
    return rows


def paper_claim(a: str, b: str) -> tuple[int, str] | None:
    """The sign the paper claims for A - B and a sentence saying so, where it reports both."""
    pa, pb = ABLATION_PAIRS.get((a, b)) or (paper_figure(a), paper_figure(b))
    if (b, a) in ABLATION_PAIRS:
        pb, pa = ABLATION_PAIRS[(b, a)]
    if pa is None or pb is None or pa == pb:
        return None
    sign = 1 if pa > pb else -1
    return sign, f"{a} {'>' if sign > 0 else '<'} {b} ({pa} vs {pb})"


def paired_differences(summaries: list[dict], comparisons: list[tuple[str, str]],
                       machines: dict | None = None) -> list[dict]:
    """For each pair of variants (A, B) and teacher-student pair: the student's top-1 A - B over the seeds both
    ran (`stats.paired_difference`: mean, 95% t interval, paired t test, exact sign-flip test), and the verdict
    on the paper's claim where the paper reports both. With `machines` from `check_machines`, a seed whose two
    cells ran on different machines is left out (and named)."""
    from .stats import paired_difference, verdict

    cm = (machines or {}).get("cell_machine") or {}
    pairs, _ = _pairs_and_variants(summaries)
    rows = []
    for p in pairs:
        by = {}
        for s in summaries:
            if s["pair"] == p:
                by.setdefault(s["variant"], {})[s["seed"]] = s
        for a, b in comparisons:
            if a not in by or b not in by:
                continue
            excluded = []
            xa, xb = {}, {}
            for seed in sorted(set(by[a]) & set(by[b])):
                ma, mb = cm.get(_cell_id(by[a][seed])), cm.get(_cell_id(by[b][seed]))
                if cm and (ma != mb or "*" in (ma or "") or ma == "?"):
                    excluded.append(seed)
                    continue
                xa[seed], xb[seed] = by[a][seed].get("student_acc"), by[b][seed].get("student_acc")
            d = paired_difference(xa, xb)
            claim = paper_claim(a, b)
            rows.append({"pair": p, "a": a, "b": b, "n": len(d.seeds), **d.as_dict(),
                         "excluded_seeds": excluded,
                         "claim": claim[1] if claim else None,
                         "verdict": verdict(d.diff, 0.0, claim[0]) if claim else None})
    return rows


def curve_bands(summaries: list[dict], points: int = 60) -> list[dict]:
    """Per (pair, variant): the mean student curve over seeds on a common time grid (each seed's curve linearly
    interpolated over the span all seeds cover), with the min-max over seeds and a 95% t interval per point.
    One seed: its own points, no band."""
    import numpy as np

    from .stats import t_quantile

    pairs, variants = _pairs_and_variants(summaries)
    out = []
    for p in pairs:
        for v in variants:
            curves = []
            for s in summaries:
                if s["pair"] == p and s["variant"] == v and s.get("curve"):
                    pts = sorted((c["elapsed_s"], c["student_acc"]) for c in s["curve"]
                                 if c.get("student_acc") is not None and c.get("elapsed_s") is not None)
                    if pts:
                        curves.append((np.array([x for x, _ in pts]), np.array([y for _, y in pts])))
            if not curves:
                continue
            n = len(curves)
            if n == 1:
                xs, ys = curves[0]
                out.append({"pair": p, "variant": v, "n": 1, "minutes": (xs / 60).tolist(), "mean": ys.tolist(),
                            "min": ys.tolist(), "max": ys.tolist(), "low": None, "high": None})
                continue
            lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
            grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi])
            ys = np.stack([np.interp(grid, x, y) for x, y in curves])
            mean = ys.mean(0)
            half = t_quantile(n - 1) * ys.std(0, ddof=1) / math.sqrt(n)
            out.append({"pair": p, "variant": v, "n": n, "minutes": (grid / 60).tolist(), "mean": mean.tolist(),
                        "min": ys.min(0).tolist(), "max": ys.max(0).tolist(),
                        "low": (mean - half).tolist(), "high": (mean + half).tolist()})
    return out


def analyze(summaries: list[dict], budget_minutes: float | None = None,
            comparisons: list[tuple[str, str]] | None = None, allow_mixed: bool = False,
            tolerance: float = DEFAULT_TOLERANCE, planned: list[str] | None = None,
            sweep: dict | None = None) -> dict:
    """Everything `results.json` holds besides the cells: machines, per-variant intervals, paired differences,
    curve bands. Raises IfheError on mixed machines unless `allow_mixed`."""
    machines = check_machines(summaries, tolerance, allow_mixed)
    _, variants = _pairs_and_variants(summaries)
    if comparisons is None:
        comparisons = [(v, variants[0]) for v in variants[1:]]
    if budget_minutes is None:
        budgets = {(s.get("config") or {}).get("budget_minutes") for s in summaries} - {None}
        budget_minutes = budgets.pop() if len(budgets) == 1 else None
    ref = next((s for s in summaries if _cell_id(s) == machines["reference_cell"]), None)
    finished = {_cell_id(s) for s in summaries}
    return {"format": "ifhe-sweep-results/2", "budget_minutes": budget_minutes,
            "machine": {"label": machine_label(ref.get("machine"), _threads_of(ref)) if ref else
                        "machine not recorded", "info": ref.get("machine") if ref else None,
                        "calibration": machines["reference"]},
            "machines": machines, "time_unit": _time_unit(summaries) if summaries else None,
            "variants": variant_stats(summaries),
            "paired": paired_differences(summaries, comparisons, machines if machines["mixed"] else None),
            "comparisons": [list(c) for c in comparisons],
            "curves": curve_bands(summaries),
            "missing": [c for c in (planned or []) if c not in finished],
            "sweep": sweep}


def load_results(path: str | os.PathLike) -> dict:
    """A sweep's results.json as written by `write_results`; an older one (a bare list of cell summaries) is
    analysed on reading, machines not checked (they were not recorded)."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        res = analyze(data, allow_mixed=True)
        res["cells"] = data
        res["legacy"] = True
        return res
    if not isinstance(data, dict) or "cells" not in data:
        raise IfheError(f"{path}: not a sweep's results.json")
    return data


# ---- tables and curves --------------------------------------------------------------------------------------

def _mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _time_unit(summaries: list[dict]) -> str:
    """How the budgets were measured, from the runs' own configs (threads may differ between sweeps)."""
    threads = sorted({s["config"].get("threads") for s in summaries if s.get("config")} - {None})
    t = "/".join(map(str, threads)) if threads else "all cores'"
    bf16 = any(s["config"].get("precision") == "bf16" for s in summaries if s.get("config"))
    return f"CPU time per thread, {t} thread{'s' if t != '1' else ''}{', bf16 forward passes' if bf16 else ''}"


def _iv(d: dict | None, digits: int = 2) -> str:
    """'63.35 [61.02, 65.68]' from an Interval's dict (NaN may have become None in JSON)."""
    from .stats import Interval

    if not d:
        return "–"
    f = {k: (float("nan") if d.get(k) is None else d[k]) for k in ("estimate", "low", "high", "std")}
    return Interval(f["estimate"], f["low"], f["high"], d.get("n", 0), f["std"], d.get("method", "t")).text(digits)


def _num(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def _pair_label(pair: str, summaries: list[dict]) -> str:
    s = next((s for s in summaries if s["pair"] == pair), None)
    cell = (s or {}).get("cell") or {}
    teacher, student = cell.get("teacher"), cell.get("student")
    if not teacher:
        teacher, _, student = pair.rpartition("-")
    return f"{teacher.split('_', 1)[-1]} → {student}"


def _dataset_of(summaries: list[dict]) -> str:
    ds = {s.get("dataset") or (s.get("cell") or {}).get("teacher", "cifar10").split("_", 1)[0] for s in summaries}
    return "/".join(sorted(d.upper().replace("CIFAR", "CIFAR-") for d in ds))


def machine_statement(analysis: dict) -> str:
    m = analysis["machines"]
    if not m["recorded"]:
        return ("**Machine:** not recorded (cells run before sweeps recorded their machine and calibration); "
                "compare these figures only with figures of the same sweep.")
    cal = m["reference"] or {}
    unit = "CPU seconds per thread" if cal.get("clock", "cpu per thread").startswith("cpu") else "wall seconds"
    k = m.get("reference_invocation")
    when = f"invocation {k} of the sweep" if k is not None else "the sweep"
    text = (f"**Machine:** {analysis['machine']['label']}. **Calibration:** {_cal_text(cal)} per fixed "
            f"WRN-16-2 training step at batch 128 (fp32, {unit}), measured at the start of {when}, which "
            f"finished the first cell; every cell below ran within {100 * m['tolerance']:.0f}% of it.")
    if m["mixed"]:
        text = (f"**Mixed machines** (`--allow-mixed-machines`): cells ran on {len(m['machines'])} machines by "
                f"their calibrations, " + "; ".join(f"{x['id']} = {x['label']}, {_cal_text(x['calibration_s'])}"
                                                   for x in m["machines"]) +
                ". The cell table names each cell's machine (* = resumed across machines, ? = not recorded); a "
                "row mixing machines is marked †; paired differences use only seeds whose two cells ran on "
                "the same machine. Do not read the means of marked rows as one machine's figure.")
    return text


def table_markdown(summaries: list[dict], zoo: dict[str, dict], budget_minutes: float,
                   analysis: dict | None = None) -> str:
    if analysis is None:
        analysis = analyze(summaries, budget_minutes)
    pairs, variants = _pairs_and_variants(summaries)
    cm = analysis["machines"]["cell_machine"]
    mixed_row = {}
    for s in summaries:
        mixed_row.setdefault((s["pair"], s["variant"]), set()).add(cm.get(_cell_id(s), ""))
    lines = [machine_statement(analysis), ""]
    head = "| | " + " | ".join(f"{_pair_label(p, summaries)} (ours)" for p in pairs)
    head += " | paper, WRN40-2 → WRN16-1 |"
    lines += [head, "|---" * (len(pairs) + 2) + "|"]
    teacher_row = ["teacher"] + [f"{zoo.get(p.rpartition('-')[0], {}).get('test_accuracy', '–')}" for p in pairs]
    lines.append("| " + " | ".join(teacher_row) + f" | {PAPER_CIFAR10_WRN40_2_WRN16_1['teacher']} |")
    scratch = []
    for p in pairs:
        teacher, student = p.rpartition("-")[0], p.rpartition("-")[2]
        scratch.append(str(zoo.get(f"{teacher.split('_', 1)[0]}_{student}", {}).get("test_accuracy", "–")))
    lines.append("| student from scratch (real data) | " + " | ".join(scratch) +
                 f" | {PAPER_CIFAR10_WRN40_2_WRN16_1['student (scratch)']} |")
    for v in variants:
        cells = []
        for p in pairs:
            accs = [s["student_acc"] for s in summaries if s["variant"] == v and s["pair"] == p]
            ms = mixed_row.get((p, v), set())
            mark = " †" if analysis["machines"]["mixed"] and (len(ms) > 1 or any("*" in m or m == "?" for m in ms)) \
                else ""
            cells.append(_mean_std(accs) + (f" (n={len(accs)})" if len(accs) > 1 else "") + mark)
        paper = PAPER_CIFAR10_WRN40_2_WRN16_1.get(v, PAPER_NOTES.get(v, "–"))
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {paper} |")
    n_seeds = len({s["seed"] for s in summaries})
    n_images = {s.get("final_test_images") for s in summaries} - {None}
    images = f"all {n_images.pop():,} images" if len(n_images) == 1 else "the test images"
    lines.append("")
    lines.append(f"Student top-1 (%) on the real {_dataset_of(summaries)} test set ({images}) after "
                 f"{budget_minutes:g} minutes of training time per run ({_time_unit(summaries)}; evaluations "
                 f"excluded), mean ± std over {n_seeds} seed(s).")

    lines += ["", "### Per variant over seeds: mean, standard deviation, 95% t interval", "",
              "| pair | variant | seeds | student top-1 mean | std | 95% interval | h top-1 mean [95%] | "
              "rounds mean [95%] | KD steps mean [95%] |", "|---|---|---|---|---|---|---|---|---|"]
    for r in analysis["variants"]:
        st = r["student_acc"]
        interval = f"[{_num(st.get('low'))}, {_num(st.get('high'))}]" if st.get("low") is not None and \
            math.isfinite(st.get("low")) else "–"
        lines.append(f"| {_pair_label(r['pair'], summaries)} | {r['variant']} | {r['n']} | "
                     f"{_num(st.get('estimate'))} | {_num(st.get('std'))} | {interval} | {_iv(r['head_acc'])} | "
                     f"{_iv(r['rounds'], 1)} | {_iv(r['kd_steps'], 0)} |")

    if analysis["paired"]:
        lines += ["", "### Paired differences of the student's top-1 (points), on the seeds both ran", "",
                  "| pair | A − B | seeds | mean difference | 95% interval | paired t test p | sign-flip p | "
                  "paper's claim | verdict |", "|---|---|---|---|---|---|---|---|---|"]
        for d in analysis["paired"]:
            diff = d["diff"]
            interval = f"[{_num(diff.get('low'))}, {_num(diff.get('high'))}]" if diff.get("low") is not None \
                and math.isfinite(diff["low"]) else "–"
            seeds = ",".join(map(str, d["seeds"])) or "none"
            if d.get("excluded_seeds"):
                seeds += f" (left out, other machine: {','.join(map(str, d['excluded_seeds']))})"
            lines.append(f"| {_pair_label(d['pair'], summaries)} | {d['a']} − {d['b']} | {seeds} | "
                         f"{_num(diff.get('estimate'))} | {interval} | {_p(d.get('t_p'))} | "
                         f"{_p(d.get('sign_flip_p'))} | {d.get('claim') or '–'} | {d.get('verdict') or '–'} |")
        lines += ["", "The interval is Student's t over the per-seed differences; the sign-flip test is exact over "
                      "all 2^n sign assignments (with 3 seeds its smallest possible p is 0.25). A verdict is "
                      "'reproduced' only when the whole interval lies on the paper's side of zero."]

    lines += ["", "### Cells", "",
              "| pair | variant | seed | student top-1 | h top-1 | rounds | KD steps | bank | calibration | machine |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {_pair_label(s['pair'], summaries)} | {s['variant']} | {s['seed']} | "
                     f"{_num(s.get('student_acc'))} | {_num(s.get('head_acc'))} | {s.get('rounds', '–')} | "
                     f"{s.get('kd_steps', '–')} | {s.get('bank_size', '–')} | {_cal_text(s.get('calibration'))} | "
                     f"{cm.get(_cell_id(s), '–')} |")
    if analysis.get("missing"):
        lines += ["", f"Not finished yet ({len(analysis['missing'])} cells, not in this table): "
                      + ", ".join(analysis["missing"]) + "."]
    return "\n".join(lines) + "\n"


def write_curves(summaries: list[dict], out: Path, bands: list[dict] | None = None) -> dict[str, Path]:
    """Mean student curve per variant over seeds with its min-max band (curves.png, curves.html)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    bands = curve_bands(summaries) if bands is None else bands
    many_pairs = len({b["pair"] for b in bands}) > 1
    fig_p = go.Figure()
    f, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, b in enumerate(bands):
        colour = matplotlib.colors.to_hex(colours[i % len(colours)])
        r, g, b_ = (int(255 * c) for c in matplotlib.colors.to_rgb(colour))
        label = f"{b['variant']}" + (f" ({b['pair']})" if many_pairs else "") + f", n={b['n']}"
        ax.plot(b["minutes"], b["mean"], marker="." if b["n"] == 1 else None, color=colour, label=label)
        if b["n"] > 1:
            ax.fill_between(b["minutes"], b["min"], b["max"], color=colour, alpha=0.2, linewidth=0)
            fig_p.add_trace(go.Scatter(x=b["minutes"] + b["minutes"][::-1], y=b["max"] + b["min"][::-1],
                                       fill="toself", mode="lines", line=dict(width=0),
                                       fillcolor=f"rgba({r}, {g}, {b_}, 0.2)", name=f"{label} min-max",
                                       hoverinfo="skip",
                                       showlegend=False, legendgroup=label))
        fig_p.add_trace(go.Scatter(x=b["minutes"], y=b["mean"], mode="lines" if b["n"] > 1 else "lines+markers",
                                   line=dict(color=colour), name=label, legendgroup=label))
    ax.set_xlabel(f"training time (min of {_time_unit(summaries)}; evaluation excluded)")
    ax.set_ylabel("student top-1 on real test images (%)")
    if any(b["n"] > 1 for b in bands):
        ax.set_title("mean over seeds; band: min–max over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    f.tight_layout()
    paths = {"png": out / "curves.png", "html": out / "curves.html"}
    f.savefig(paths["png"], dpi=110)
    plt.close(f)
    fig_p.update_layout(xaxis_title="training time (min)", yaxis_title="student top-1 (%)",
                        title="mean over seeds; band: min–max over seeds")
    paths["html"].write_text(fig_p.to_html(include_plotlyjs=True, full_html=True))
    return paths


def write_results(summaries: list[dict], out: Path, budget_minutes: float,
                  comparisons: list[tuple[str, str]] | None = None, allow_mixed: bool = False,
                  tolerance: float = DEFAULT_TOLERANCE, planned: list[str] | None = None,
                  sweep: dict | None = None) -> dict[str, Path]:
    """table.md, results.json, curves.png/html from finished cells' summaries (refused on mixed machines unless
    `allow_mixed`, before anything is written)."""
    from .zoo import read_manifest

    analysis = analyze(summaries, budget_minutes, comparisons, allow_mixed, tolerance, planned, sweep)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_curves(summaries, out, analysis["curves"])
    paths["md"] = out / "table.md"
    atomic_write_text(paths["md"], table_markdown(summaries, read_manifest(), budget_minutes, analysis))
    paths["json"] = out / "results.json"
    atomic_write_text(paths["json"], json.dumps(_plain({**analysis, "cells": summaries}), indent=1))
    return paths


def _plain(obj):
    """JSON-safe: NaN and infinities become null, tuples lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
