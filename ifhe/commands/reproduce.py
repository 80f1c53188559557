"""`ifhe reproduce`: methods swept under equal time budgets, cell by cell, resumable (`ifhe.reproduce` runs the
cells, `ifhe.sweep_report` writes the tables with intervals and the curves)."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from .. import catalog
from ..errors import IfheError
from .common import add_data, add_precision, parse_set


def register(sub) -> None:
    rp = sub.add_parser("reproduce", help="sweep methods under equal time budgets; tables with intervals, curves")
    rp.add_argument("--table", default="cifar10",
                    help="the pairs swept: " + "; ".join(f"{name}: " + ", ".join(f"{t} -> {st}" for t, st in pairs)
                                                          for name, pairs in catalog.TABLES.items()))
    rp.add_argument("--methods", nargs="+", default=["deepinversion", "cmi", "ifhe"],
                    help="variants: methods, ifhe-a0 / ifhe-a0.5 / ifhe-a1 (alpha ablation), dafl+ifhe, dfq+ifhe")
    rp.add_argument("--budget-minutes", dest="budget_minutes", type=float, default=20.0)
    rp.add_argument("--seeds", type=int, default=1)
    rp.add_argument("--eval-every", dest="eval_every", type=int, default=250, help="KD steps between curve points")
    rp.add_argument("--eval-images", dest="eval_images", type=int, default=2000,
                    help="test images per curve point (the final figure uses the whole test set)")
    rp.add_argument("--threads", type=int, help="torch threads of each cell (and of the calibration step)")
    rp.add_argument("--jobs", type=int, default=1,
                    help="cells run at the same time, each in its own process with --threads threads "
                         "(e.g. --jobs 2 --threads 1 on 2 cores)")
    rp.add_argument("--compare", action="append", metavar="A:B",
                    help="also report the paired difference A - B (every variant is compared with the first "
                         "one listed anyway)")
    rp.add_argument("--allow-mixed-machines", dest="allow_mixed_machines", action="store_true",
                    help="tabulate cells whose calibrations differ by more than 20%% (each cell then names its "
                         "machine), and let this machine join a sweep started on a different one")
    rp.add_argument("--report-only", dest="report_only", action="store_true",
                    help="write table.md, results.json and curves from the finished cells; run nothing")
    rp.add_argument("--only-cell", dest="only_cell", metavar="PAIR/VARIANT/seedK",
                    help="run just this cell (what each process of --jobs does)")
    rp.add_argument("--invocation", type=int, help=argparse.SUPPRESS)  # set by --jobs for its processes
    rp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a setting for every cell, e.g. synth.iterations=100 (recorded with the sweep)")
    add_precision(rp, "auto")
    rp.add_argument("--out", default="results")
    add_data(rp)
    rp.set_defaults(func=command)


def command(a) -> int:
    from ..device import set_cpu_threads
    from ..reproduce import finished_summary, parse_comparisons, plan

    out = Path(a.out)
    if a.jobs < 1:
        raise IfheError(f"--jobs must be >= 1, got {a.jobs}")
    if a.jobs > 1 and a.threads is None:
        raise IfheError(f"--jobs {a.jobs} runs {a.jobs} cells at once: give each its --threads "
                        f"(e.g. --jobs 2 --threads 1 on 2 cores)")
    cells = plan(a.table, a.methods, a.seeds, catalog.available())
    comparisons = parse_comparisons(a.compare, a.methods)
    ids = [c.id for c in cells]
    if a.report_only:
        return tables(a, cells, comparisons)
    if a.only_cell is not None and a.only_cell not in ids:
        raise IfheError(f"--only-cell {a.only_cell!r}: not a cell of this sweep; its cells: {', '.join(ids)}")
    set_cpu_threads(a.threads)
    inv = invocation(a, out)
    run_here = cell_runner(a, out, inv)
    if a.only_cell is not None:
        return run_here(next(c for c in cells if c.id == a.only_cell))
    failed = run_all(a, cells, out, inv, run_here)
    if failed is None:
        return 130
    missing = [c.id for c in cells if finished_summary(c, out) is None]
    if missing:
        print(f"ifhe: {len(missing)} cell(s) not finished ({', '.join(missing)}"
              f"{'; failed: ' + ', '.join(failed) if failed else ''}); rerun the same command to resume them, "
              f"or --report-only to tabulate the finished ones", file=sys.stderr)
        return 1
    return tables(a, cells, comparisons)


def settings(a) -> dict:
    """What every invocation on one sweep folder must share (recorded in sweep.json)."""
    return {"table": a.table, "budget_minutes": a.budget_minutes, "threads": a.threads,
            "precision": a.precision, "eval_every": a.eval_every, "eval_images": a.eval_images,
            "set": list(a.set or []), "data": a.data}


def tables(a, cells, comparisons) -> int:
    """table.md, results.json and the curves from the finished cells; printed and written."""
    from ..reproduce import finished_summary, read_sweep
    from ..sweep_report import write_results

    out = Path(a.out)
    summaries = [s for s in (finished_summary(c, out) for c in cells) if s is not None]
    if not summaries:
        raise IfheError(f"no finished cell of this sweep in {out}")
    paths = write_results(summaries, out, a.budget_minutes, comparisons, a.allow_mixed_machines,
                          planned=[c.id for c in cells], sweep=read_sweep(out))
    print(Path(paths["md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def invocation(a, out: Path) -> dict:
    """This process's record in sweep.json: the one given by --invocation (a child of --jobs), else a new one with
    this machine and a calibration measured now."""
    from ..device import pick_device
    from ..cpu import machine_label
    from ..machine import calibrate, machine_info
    from ..reproduce import join_invocation, start_invocation

    if a.invocation is not None:
        return join_invocation(out, a.invocation, settings(a))
    device = pick_device(None).type
    print(f"calibrating: a WRN-16-2 training step at batch 128 on {device}, "
          f"{a.threads or 'all'} thread(s) ...", flush=True)
    cal = calibrate(a.threads, device=device)
    inv = start_invocation(out, settings(a), a.argv, machine_info(), cal, a.allow_mixed_machines, jobs=a.jobs)
    print(f"invocation {inv['index']} of {out}: {machine_label(inv['machine'], a.threads)}; calibration "
          f"{cal['step_s']:.3f} s per step", flush=True)
    return inv


def cell_runner(a, out: Path, inv: dict):
    """run_here(cell) -> exit status: one cell in this process under its lock (LOCKED_RC when another has it),
    finally evaluated on the whole real test set when one is configured."""
    from ..data import load_split
    from ..locks import CellLock, describe_holder, lock_holder
    from ..reproduce import LOCKED_RC, run_cell

    sets = parse_set(a.set)
    overrides = {"eval_images": a.eval_images, "eval_every": a.eval_every, "threads": a.threads,
                 "precision": a.precision, **sets.get("", {}), "synth": sets.get("synth", {}),
                 "distill": sets.get("distill", {})}
    final_tests: dict = {}

    def final_test(cell):
        dataset = catalog.teacher_info(cell.teacher).get("dataset") or "cifar10"
        if dataset not in final_tests:
            final_tests[dataset] = (load_split(dataset, "test", a.data)
                                    if a.data or os.environ.get("IFHE_DATA") else None)
        return final_tests[dataset]

    def run_here(cell) -> int:
        lock = CellLock(cell.lock_path(out))
        if not lock.acquire():
            print(f"{cell.id}: being run by {describe_holder(lock_holder(lock.path))}", flush=True)
            return LOCKED_RC
        try:
            s = run_cell(cell, out, a.budget_minutes, a.data, overrides, final_test_set=final_test(cell),
                         invocation=inv)
        finally:
            lock.release()
        acc = f"{s['student_acc']:.2f}%" if s["student_acc"] is not None else "not evaluated"
        print(f"{cell.id}: student {acc} after {s['rounds']} rounds, {s['kd_steps']} KD steps, bank "
              f"{s['bank_size']}", flush=True)
        return 0

    return run_here


def run_all(a, cells, out: Path, inv: dict, run_here) -> dict[str, int] | None:
    """Every unfinished cell, --jobs at a time (in this process, or one child process each); the failed cells'
    exit statuses, or None when interrupted."""
    from ..reproduce import _Done, child_command, run_cells

    if a.jobs == 1:
        def start(cell):
            try:
                return _Done(run_here(cell))
            except Exception as e:  # one failed cell does not stop the others; rerunning resumes it
                print(f"ifhe: error in {cell.id}: {e}", file=sys.stderr, flush=True)
                return _Done(1)
    else:
        def start(cell):
            return subprocess.Popen(child_command(cell, settings(a), out, inv["index"], a.allow_mixed_machines))

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate) if a.jobs > 1 else None
    try:
        return run_cells(cells, out, a.jobs, start)
    except KeyboardInterrupt:
        print("ifhe: interrupted; rerun the same command to resume the sweep (finished cells are kept, "
              "unfinished ones resume from their checkpoints)", file=sys.stderr)
        return None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
