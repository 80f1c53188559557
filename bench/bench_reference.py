"""Side by side against zju-vipa/CMI's own code on this machine, in one run: CMI's synthesizers and KD loop
(../shared/bench-reference/harness_cmi.py, unedited) and our engine (bench/bench_reference_ours.py, an adapted
copy of ../shared/bench-reference/harness_ours.py), each row in its own process, theirs then ours, pass after
pass (ABAB). The table is ../shared/bench-reference/summarize.py's; it is also written to --save.

    CMI_DIR=/tmp/CMI CMI_SITE=/tmp/cmi-site python bench/bench_reference.py [--iters 30] [--kd-iters 40]
        [--passes 2] [--compiled] [--rows cmi adi deepinversion kd] [--quiet 0.15] [--pause-pid PID] [--save results/bench-reference.txt]

Set-up of CMI_DIR and CMI_SITE: ../shared/bench-reference/README.md. `--quiet X` waits before each process
until the other processes of the machine use less than X of a core, and runs a process again (up to --retries
times) when they used more than that while it ran (shared machines: other people's tests made single iterations
10x slower); `--pause-pid` stops one background process (SIGSTOP) while each timed process
runs and always resumes it (SIGCONT), also on errors and Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REF = Path(os.environ.get("BENCH_REFERENCE", ROOT.parent / "shared" / "bench-reference"))
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

# row -> (theirs args, ours args)
ROWS = {
    "cmi": (["--mode", "cmi"], ["--mode", "cmi"]),
    "adi": (["--mode", "deepinv", "--adv", "1"], ["--mode", "adi"]),
    "deepinversion": (["--mode", "deepinv", "--adv", "0"], ["--mode", "deepinversion"]),
    "kd": (["--mode", "kd"], ["--mode", "kd"]),
}


def cpu_snapshot(skip: set[int]) -> dict[str, int]:
    """CPU ticks used so far by every process but `skip` (and their children, which are separate pids)."""
    d = {}
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) not in skip:
            try:
                f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
                d[p] = int(f[11]) + int(f[12])
            except (OSError, IndexError, ValueError):
                pass
    return d


def cores_used(a: dict[str, int], b: dict[str, int], seconds: float) -> float:
    return sum(v - a.get(p, v) for p, v in b.items()) / os.sysconf("SC_CLK_TCK") / max(seconds, 1e-9)


def others_cpu(skip: set[int], seconds: float = 3.0) -> float:
    """Cores used by every other process over `seconds`."""
    a = cpu_snapshot(skip)
    time.sleep(seconds)
    return cores_used(a, cpu_snapshot(skip), seconds)


def wait_quiet(limit: float, skip: set[int], max_wait: float = 1800) -> float:
    end = time.time() + max_wait
    used = others_cpu(skip)
    while used >= limit and time.time() < end:
        time.sleep(5)
        used = others_cpu(skip)
    return used


def run_one(cmd: list[str], env: dict, pause_pid: int | None, log: Path) -> int:
    paused = False
    try:
        if pause_pid:
            os.kill(pause_pid, signal.SIGSTOP)
            paused = True
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=str(ROOT))
            return proc.wait()
    finally:
        if paused:
            os.kill(pause_pid, signal.SIGCONT)


def machine_busy() -> float:
    """Seconds of CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    f = open("/proc/stat").readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--kd-iters", type=int, default=40)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", type=float, default=0.0, help="wait until others use < this many cores (0: no wait)")
    ap.add_argument("--retries", type=int, default=3, help="with --quiet: rerun a process that others disturbed")
    ap.add_argument("--pause-pid", type=int, default=None)
    ap.add_argument("--out", default=None, help="records.jsonl (default: a new folder under $BENCH_WORK or /tmp)")
    ap.add_argument("--save", default=None, help="also write the table here")
    ap.add_argument("--compiled", action="store_true",
                    help="also time ours with IFHE_COMPILE=1 after its eager run, in the same passes (theirs, ours, "
                         "ours compiled), and print a second table of the compiled rows against the same theirs")
    a = ap.parse_args()
    py = os.environ.get("IFHE_PY", sys.executable)
    work = Path(os.environ.get("BENCH_WORK", "/tmp")) / "cmi-bench-results" / time.strftime("%Y%m%d-%H%M%S")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    out = Path(a.out) if a.out else work / "records.jsonl"
    out_compiled = out.with_name(out.stem + "-compiled.jsonl")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS=str(a.threads),
               MKL_NUM_THREADS=str(a.threads), IFHE_THREADS=str(a.threads), IFHE_ROOT=str(ROOT))
    skip = {os.getpid(), os.getppid()} | ({a.pause_pid} if a.pause_pid else set())
    header = f"machine: {machine()}, {a.threads} threads per process"
    print("==", header, flush=True)
    r = subprocess.run([py, str(REF / "harness_cmi.py"), "--mode", "check"], env=env, cwd=str(ROOT),
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"CMI logit check failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    print("== " + r.stdout.strip().splitlines()[-1], flush=True)
    if "kd" in a.rows:
        subprocess.run([py, str(REF / "harness_cmi.py"), "--mode", "prep"], env=env, cwd=str(ROOT),
                       capture_output=True, text=True)
    for p in range(1, a.passes + 1):
        for row in a.rows:
            theirs, ours = ROWS[row]
            impls = [("theirs", REF / "harness_cmi.py", theirs, {}, out),
                     ("ours", HERE / "bench_reference_ours.py", ours, {"IFHE_COMPILE": "0"}, out)]
            if a.compiled:
                impls.append(("ours+compile", HERE / "bench_reference_ours.py", ours, {"IFHE_COMPILE": "1"},
                              out_compiled))
            for impl, script, args, extra_env, records in impls:
                n = ["--kd-iters", str(a.kd_iters)] if row == "kd" else ["--iters", str(a.iters)]
                cmd = [py, str(script), *args, *n, "--threads", str(a.threads), "--out", str(out)]
                for attempt in range(1, a.retries + 2):
                    used = wait_quiet(a.quiet, skip) if a.quiet else None
                    tmp = work / f"rec-{row}-{impl}-p{p}-a{attempt}.jsonl"
                    cmd[-1] = str(tmp)
                    busy0, ours0, t0 = machine_busy(), children_cpu(), time.perf_counter()
                    rc = run_one(cmd, env | extra_env, a.pause_pid, work / "logs" / f"{row}-{impl}-p{p}-a{attempt}.log")
                    wall = time.perf_counter() - t0
                    # the machine's busy time less our timed process's own (and its workers')
                    during = max(0.0, (machine_busy() - busy0) - (children_cpu() - ours0)) / wall
                    disturbed = a.quiet and during >= a.quiet
                    msg = f"   pass {p} {row:14s} {impl:12s} rc {rc} ({wall:.0f} s wall"
                    msg += f", others: {used:.2f} cores before, ~{during:.2f} during" if used is not None else ""
                    msg += ", DISTURBED: again)" if disturbed and attempt <= a.retries else ")"
                    print(msg, flush=True)
                    if not disturbed or attempt > a.retries:
                        if tmp.exists():
                            with open(records, "a") as f:
                                f.write(tmp.read_text())
                        break
    table = subprocess.run([py, str(REF / "summarize.py"), str(out)], capture_output=True, text=True).stdout
    if a.compiled and out_compiled.exists():
        # the compiled rows against the same theirs: summarize.py pairs "theirs" with "ours" records
        both = out.with_name(out.stem + "-theirs-vs-compiled.jsonl")
        theirs_lines = [x for x in open(out) if x.strip() and json.loads(x)["impl"] == "theirs"]
        both.write_text("".join(theirs_lines) + out_compiled.read_text())
        table += "\nours with IFHE_COMPILE=1 (torch.compile of the teacher pass), same passes, same theirs:\n"
        table += subprocess.run([py, str(REF / "summarize.py"), str(both)], capture_output=True,
                                text=True).stdout
    recs = [json.loads(x) for x in open(out) if x.strip()]
    firsts = [f"{r['row']}: {r['first_s']:.2f} s" for r in recs if r.get("impl") == "ours" and r.get("first_s")]
    text = (f"{header}\n{table}\nour first iterations (not in the medians): {', '.join(firsts)}\n"
            f"records: {out}\n")
    print(text)
    if a.save:
        Path(a.save).write_text(text)


if __name__ == "__main__":
    main()
