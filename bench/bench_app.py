"""The app's speed against the engine under it, in a real browser on the real server (figures printed, never
asserted).

    python bench/bench_app.py [--repeats 3] [--windows 2]
    python bench/bench_app.py --first-page 5          # the first page alone, without a browser (AppTest)
    python bench/bench_app.py --first-start 3         # the first Start of fresh servers, 1 s and 3 s after the page
    python bench/bench_app.py --feature-page results/shipped/feature-banks --repeats 3   # the committed comparison

- First page: seconds from the server answering its health check to the Synthesize page's Start button in
  headless Chromium (the browser is launched before the server, so its own start-up is not counted).
- Start -> first image grid in the browser (IFHE synthesis, batch 16): the first run of the server and the
  median over repeats (each a new run).
- Live rate: synthesis iterations per second of the same run (IFHE, the app's settings: batch 16, its
  iterations per round and h-only steps between rounds, the app's thread count)
    * engine: `Run.events()` alone, in a subprocess, nothing consuming the events;
    * app job, no page: the app's job thread (app/jobs.py) in a subprocess, no server, nobody watching;
    * app in the browser: the real server with Chromium watching the Synthesize page (grid and charts live).
  Each window is two whole rounds after the first (iterations and the h-only steps between rounds), so the
  rates compare like with like; "in-round" is the rate over the last steps of a round (the figure the page
  shows), without the h-only steps between rounds.
- Health endpoint latency while a job runs, server peak memory, and four sessions pressing Start at once.

Uses the shipped cifar10_wrn16_2 teacher when it is published, else a randomly initialised WRN-16-2 (same cost).
Run it on a quiet machine (other work on the cores changes every figure) and name the machine with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))   # the server and browser helpers are test tooling

from app_server import (CHROMIUM, CHROMIUM_ARGS, GRID, Server, button, health, main_block,  # noqa: E402
                        open_page, publish_test_teacher)
import torch  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from app.forms import build_config, form_defaults  # noqa: E402
from app.jobs import RATE_WINDOW, JobRegistry, job_threads  # noqa: E402
from ifhe.catalog import available  # noqa: E402
from ifhe.experiment import Run  # noqa: E402

TEACHER = "cifar10_wrn16_2"
# records (ms, synthesis step of the grid shown, iterations/s shown) each time the grid's caption changes
WATCH_JS = """() => { window.__steps = []; let last = null;
  window.__poll = setInterval(() => {
    const el = document.querySelector('.st-key-grid [data-testid="stImageCaption"]');
    const cap = el ? el.innerText : null;
    if (!cap || cap === last) return;
    last = cap;
    const m = cap.match(/\\(step (\\d+)\\)/), r = cap.match(/([\\d.]+) it\\/s/);
    if (m) window.__steps.push([performance.now(), parseInt(m[1]), r ? parseFloat(r[1]) : null]);
  }, 20); }"""


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({platform.machine()}), {os.cpu_count()} logical CPUs"


class OtherLoad:
    """CPU used by processes outside this benchmark's own process tree (others' work on a shared machine), in
    cores, between start() and stop(): the figures of a measure are only comparable when this is about equal."""

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK")

    def _busy(self) -> float:
        f = open("/proc/stat").readline().split()[1:]
        v = [int(x) for x in f]
        return (sum(v) - v[3] - v[4]) / self.tick  # all but idle and iowait

    def _ours(self) -> float:
        procs = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                procs[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]))  # ppid; utime stime cutime cstime
        tree, todo = set(), [os.getpid()]
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo += [p for p, (pp, _) in procs.items() if pp == pid and p not in tree]
        return sum(procs[p][1] for p in tree if p in procs) / self.tick

    def start(self) -> "OtherLoad":
        self.t0, self.b0, self.o0 = time.perf_counter(), self._busy(), self._ours()
        return self

    def stop(self) -> float:
        dt = time.perf_counter() - self.t0
        return max(0.0, (self._busy() - self.b0) - (self._ours() - self.o0)) / dt


def windows(points: list[tuple[float, int, float | None]], per_round: int, n: int) -> list[dict]:
    """From (seconds, steps so far, it/s shown) samples: for each of `n` windows of two whole rounds after the
    first (steps per_round+1 .. 3*per_round+1, then the next two rounds), iterations per second over the window
    and the in-round rate shown at the last iteration of its rounds."""
    out = []
    for w in range(n):
        lo, hi = per_round * (1 + 2 * w) + 1, per_round * (3 + 2 * w) + 1
        a = next((p for p in points if p[1] >= lo), None)
        b = next((p for p in points if p[1] >= hi), None)
        if a is None or b is None:
            break
        shown = [p[2] for p in points if a[1] <= p[1] <= b[1] and p[2] and p[1] % per_round == 0]
        out.append({"rate": (b[1] - a[1]) / (b[0] - a[0]),
                    "in_round": statistics.median(shown) if shown else None})
    return out


# ---- in a subprocess: the bare engine, or the app's job thread with nobody watching -----------------------

def inproc(mode: str, n_windows: int, threads: int, env_root: str) -> None:
    torch.set_num_threads(threads)
    cfg = build_config(dict(form_defaults("ifhe"), method="ifhe", teacher=TEACHER, student="wrn16_1", seed=0), "synth")
    per_round = cfg.synth.iterations
    need = per_round * (3 + 2 * (n_windows - 1)) + 1
    out = Path(env_root) / f"{mode}-{time.time_ns()}"
    points = []
    if mode == "engine":
        run = Run(cfg, out)
        steps = 0
        for ev in run.events():
            if ev.kind == "synth":
                steps += 1
                now = time.perf_counter()
                shown = None  # what the page would show: iterations per wall second over the round's last steps
                if ev.iteration == per_round:
                    shown = RATE_WINDOW / (now - points[-RATE_WINDOW][0])
                points.append((now, steps, shown))
                if steps >= need:
                    break
        run.request_stop()
    else:
        reg = JobRegistry(out, max_jobs=1, threads=threads)
        job = reg.submit(cfg)
        while True:  # what a page would see, read 20 times a second (a page reads it 2-3 times)
            s = job.snapshot()
            if not points or s.steps != points[-1][1]:
                points.append((time.perf_counter(), s.steps, s.it_per_s if s.iteration == per_round else None))
            if s.steps >= need or not s.active:
                break
            time.sleep(0.05)
        reg.stop_all()
    print(json.dumps(windows(points, per_round, n_windows)))


def measure_inproc(mode: str, n_windows: int, threads: int, env: dict, root: Path) -> list[dict]:
    cmd = [sys.executable, __file__, "--inproc", mode, "--windows", str(n_windows), "--threads", str(threads),
           "--root", str(root)]
    res = subprocess.run(cmd, env={**os.environ, **env, "OMP_NUM_THREADS": str(threads)}, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    if res.returncode:
        raise RuntimeError(f"{mode} measurement failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure_browser(page, n_windows: int, per_round: int) -> list[dict]:
    """Start a run on the page and watch it for `n_windows` windows (see `windows`)."""
    need = per_round * (3 + 2 * (n_windows - 1)) + 1
    button(page, "Start").click()
    page.locator(GRID).first.wait_for(timeout=60_000)
    page.evaluate(WATCH_JS)
    deadline = time.perf_counter() + 60 + 20 * need
    points = []
    while time.perf_counter() < deadline:
        page.wait_for_timeout(1000)
        points = page.evaluate("() => window.__steps")
        if points and points[-1][1] >= need:
            break
    page.evaluate("() => clearInterval(window.__poll)")
    button(page, "Stop").click()
    page.get_by_text("stopped · ", exact=False).first.wait_for(timeout=60_000)
    return windows([(t / 1000, s, v) for t, s, v in points], per_round, n_windows)


class HealthProbe(threading.Thread):
    """Polls the health endpoint every 100 ms in the background; keeps the latencies."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.times, self.errors = url, [], 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.times.append(health(self.url, timeout=5.0))
            except OSError:
                self.errors += 1
            self._halt.wait(0.1)

    def stop(self):
        self._halt.set()
        self.join()


_FIRST_PAGE = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
t1 = time.perf_counter()
at = AppTest.from_file({app!r}, default_timeout=120).run()
t2 = time.perf_counter()
print(json.dumps({{"streamlit_s": t1 - t0, "page_s": t2 - t1, "torch": "torch" in sys.modules,
                  "start": any(b.label == "Start" for b in at.button), "errors": [str(e.value) for e in at.exception]}}))
"""


def first_page(repeats: int) -> None:
    """The Synthesize page drawn by Streamlit's AppTest in `repeats` fresh interpreters (no browser, no warm-up):
    seconds to import Streamlit's test harness, seconds to run the page script, and whether torch was imported."""
    code = _FIRST_PAGE.format(root=str(ROOT), app=str(ROOT / "app" / "streamlit_app.py"))
    env = {**os.environ, "IFHE_APP_WARMUP": "0", "IFHE_APP_RUNS": tempfile.mkdtemp(prefix="bench_app_")}
    rows = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        if out.returncode:
            raise RuntimeError(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if rows[-1]["errors"] or not rows[-1]["start"]:
            raise RuntimeError(f"the first page failed: {rows[-1]}")
    page = statistics.median(r["page_s"] for r in rows)
    total = statistics.median(r["page_s"] + r["streamlit_s"] for r in rows)
    print(f"{machine()}; load average (1 min) {os.getloadavg()[0]:.2f}")
    print(f"first page (AppTest, median of {repeats} fresh processes): page script {page:.2f} s, with Streamlit's "
          f"import {total:.2f} s; torch imported: {sorted({r['torch'] for r in rows})}")


def _fmt_rates(ws: list[dict]) -> tuple[str, str]:
    rates = [w["rate"] for w in ws]
    inr = [w["in_round"] for w in ws if w["in_round"]]
    r = f"{statistics.median(rates):.2f} ({min(rates):.2f}-{max(rates):.2f})" if rates else "-"
    i = f"{statistics.median(inr):.2f} ({min(inr):.2f}-{max(inr):.2f})" if inr else "-"
    return r, i


class Bench:
    """One benchmark run: its temporary folder, the environment of the server and processes it starts, the
    rows it prints at the end and other processes' load during each measure (in cores)."""

    def __init__(self, a, threads: int):
        self.a, self.threads = a, threads
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
        self.env = {"IFHE_APP_RUNS": str(self.tmp / "runs"), "IFHE_APP_THREADS": str(threads)}
        self.rows: list[tuple[str, str, str]] = []
        self.others = {"engine": [], "job": [], "browser": []}
        self.per_round = form_defaults("ifhe")["iterations"]

    def teacher(self) -> str:
        """The shipped teacher, else a random WRN-16-2 published into a temporary zoo for the server."""
        if TEACHER in available():
            return f"{TEACHER} (shipped)"
        publish_test_teacher(self.tmp / "pretrained", TEACHER, "wrn16_2")
        self.env["IFHE_PRETRAINED"] = str(self.tmp / "pretrained")
        return f"random WRN-16-2 ({TEACHER} not published; same cost)"

    def timed(self, kind: str, fn, *args):
        load = OtherLoad().start()
        out = fn(*args)
        self.others[kind].append(load.stop())
        return out

    def inproc(self, mode: str) -> list[dict]:
        return self.timed(mode, measure_inproc, mode, self.a.windows, self.threads, self.env, self.tmp)


def first_page_and_grid(b: Bench, page, server) -> None:
    """Server up -> Start button in the browser; then Start -> first image grid, `--repeats` times."""
    t0 = time.perf_counter()
    page.goto(server.url)
    button(page, "Start").wait_for(timeout=60_000)
    b.rows.append(("first page: server up -> Start button", f"{time.perf_counter() - t0:.2f} s", "< 3 s"))
    page.wait_for_timeout(3000)  # a user reads the page before pressing Start; the server warms up
    firsts = []
    for i in range(b.a.repeats):
        expect(page.locator(GRID)).to_have_count(0)
        t0 = time.perf_counter()
        button(page, "Start").click()
        page.locator(GRID).first.wait_for(timeout=60_000)
        firsts.append(time.perf_counter() - t0)
        button(page, "Reset").click()  # stops the run and detaches: the grid goes away
        page.wait_for_timeout(1500)
    b.rows.append(("Start -> first grid, first run / median of " + str(len(firsts)),
                   f"{firsts[0]:.2f} / {statistics.median(firsts):.2f} s", "< 1.5 s"))


def live_rates(b: Bench, page, server, engine: list[dict], job: list[dict]) -> None:
    """The live rate with the browser watching, health meanwhile; engine and browser alternate so that other work
    on the machine weighs on both alike. Rows for the engine, the job thread and the browser."""
    browser_rates = []
    probe = HealthProbe(server.url)
    for rep in range(b.a.pairs):
        if rep:
            engine += b.inproc("engine")
            button(page, "Reset").click()  # forget the stopped run: its grid goes away
            expect(page.locator(GRID)).to_have_count(0)
        if rep == 0:
            probe.start()
        browser_rates += b.timed("browser", measure_browser, page, b.a.windows, b.per_round)
        if rep == 0:
            probe.stop()
    for kind, name, ws in (("engine", "engine alone", engine), ("job", "app job thread, no page", job),
                           ("browser", "app in the browser (server + Chromium)", browser_rates)):
        rate, in_round = _fmt_rates(ws)
        ratio = (statistics.median(w["rate"] for w in engine) / statistics.median(w["rate"] for w in ws)
                 if ws else float("nan"))
        load = "/".join(f"{x:.2f}" for x in b.others[kind])
        b.rows.append((f"it/s, {name}: 2-round windows / in-round", f"{rate} / {in_round}",
                       f"engine/this {ratio:.2f}x (<= 1.3x); other load {load} cores"))
    b.rows.append(("health endpoint while a job runs, median / max",
                   f"{statistics.median(probe.times) * 1000:.0f} / {max(probe.times) * 1000:.0f} ms"
                   + (f" ({probe.errors} errors)" if probe.errors else ""), "< 1 s"))
    b.rows.append(("server peak memory with one job (VmHWM)", f"{server.peak_rss_mb():.0f} MB", "< 1.5 GB"))


def four_sessions(b: Bench, browser, server) -> None:
    """Four sessions press Start at once: as many start as the job limit allows, the others are refused."""
    pages = [open_page(browser, server.url, 1200, 900) for _ in range(4)]
    probe = HealthProbe(server.url)
    probe.start()
    for q in pages:
        button(q, "Start").click(no_wait_after=True)
    deadline = time.perf_counter() + 60
    started = refused = []
    while time.perf_counter() < deadline:
        started = [q for q in pages if "job=" in q.url]
        refused = [q for q in pages if "job=" not in q.url
                   and main_block(q).get_by_text("of this server are busy", exact=False).count()]
        if len(started) + len(refused) == 4:
            break
        pages[0].wait_for_timeout(200)
    for q in started:
        q.locator(GRID).first.wait_for(timeout=60_000)
    pages[0].wait_for_timeout(2000)
    probe.stop()
    limit = os.environ.get("IFHE_APP_MAX_JOBS") or max(1, (os.cpu_count() or 2) - 1)
    b.rows.append(("4 sessions press Start at once: started / refused",
                   f"{len(started)} / {len(refused)}", f"started = job limit ({limit})"))
    b.rows.append(("health meanwhile, max", f"{max(probe.times) * 1000:.0f} ms", "< 1 s"))
    for q in started:
        button(q, "Stop").click()


def in_the_browser(a, threads: int) -> None:
    b = Bench(a, threads)
    teacher = b.teacher()
    print(f"{machine()}; teacher {teacher}; IFHE synthesis, batch {form_defaults('ifhe')['batch']}, "
          f"{b.per_round} iterations a round; {threads} torch thread(s) per job")
    load0 = os.getloadavg()[0]
    # live rate without a browser first: the engine alone, the app's job thread alone
    engine, job = b.inproc("engine"), b.inproc("job")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        with Server(b.env, log=b.tmp / "server.log") as server:
            first_page_and_grid(b, page, server)
            live_rates(b, page, server, engine, job)
            if not a.skip_sessions:
                four_sessions(b, browser, server)
        browser.close()
    print(f"load average (1 min) at the start / end: {load0:.2f} / {os.getloadavg()[0]:.2f}")
    w = max(len(r[0]) for r in b.rows)
    print(f"\n{'measure':{w}s}  {'value':>30s}  target")
    for name, value, target in b.rows:
        print(f"{name:{w}s}  {value:>30s}  {target}")


def first_starts(repeats: int, read_s: list[float]) -> None:
    """The first Start of a fresh server: for each reading time (seconds between the Start button appearing and
    the click), `repeats` fresh servers; first page, Start -> first grid of the server's first run, and of a second
    run (each on the same teacher, IFHE at the app's batch)."""
    b = Bench(argparse.Namespace(repeats=1), job_threads())
    print(f"{machine()}; teacher {b.teacher()}; load average (1 min) {os.getloadavg()[0]:.2f}")
    rows = {r: [] for r in read_s}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for rep in range(repeats):
            for r in read_s:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                with Server({**b.env, "IFHE_APP_RUNS": str(b.tmp / f"runs-{rep}-{r}")}) as server:
                    load = OtherLoad().start()
                    t0 = time.perf_counter()
                    page.goto(server.url)
                    button(page, "Start").wait_for(timeout=60_000)
                    first_page_s = time.perf_counter() - t0
                    page.wait_for_timeout(r * 1000)
                    starts = []
                    for _ in range(2):
                        t0 = time.perf_counter()
                        button(page, "Start").click()
                        page.locator(GRID).first.wait_for(timeout=60_000)
                        starts.append(time.perf_counter() - t0)
                        button(page, "Reset").click()
                        page.wait_for_timeout(1500)
                    rows[r].append((first_page_s, *starts, load.stop()))
                page.context.close()
        browser.close()
    for r, xs in rows.items():
        med = [statistics.median(x[i] for x in xs) for i in range(4)]
        print(f"read {r:g} s: first page {med[0]:.2f} s · Start -> first grid, first run {med[1]:.2f} s "
              f"(each: {', '.join(f'{x[1]:.2f}' for x in xs)}) · second run {med[2]:.2f} s · other load "
              f"{med[3]:.2f} cores (median of {len(xs)} fresh servers)")


def feature_page(shipped: str, repeats: int) -> None:
    """The Feature space page of a fresh server opened right after the first page (the warm-up still importing
    torch) and again once warm: seconds from the click to the committed comparison's maps (every panel) and a
    table on screen."""
    import re
    print(f"{machine()}; comparison {shipped}; load average (1 min) {os.getloadavg()[0]:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    env = {"IFHE_APP_RUNS": str(tmp / "runs"), "IFHE_APP_SHIPPED": shipped}
    names = None
    out = {"cold": [], "warm": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeats):
            with Server(env) as server:
                for kind in ("cold", "warm"):
                    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                    page.goto(server.url)
                    button(page, "Start").wait_for(timeout=60_000)
                    if kind == "warm":
                        page.wait_for_timeout(8000)
                    t0 = time.perf_counter()
                    page.get_by_role("link", name="Feature space").click()
                    main_block(page).get_by_text(re.compile(r"^shipped comparison:")).wait_for(timeout=60_000)
                    if names is None:
                        from ifhe.feature_banks import load_comparison
                        r = load_comparison(shipped).report
                        names = [s.name for s in r.sets if s.name == "real" or s.seed in (None, 0)]
                    charts = main_block(page).get_by_test_id("stPlotlyChart")
                    for i in (0, 1):
                        for name in names:
                            charts.nth(i).get_by_text(name, exact=True).wait_for(timeout=60_000)
                    main_block(page).locator('[data-testid="stDataFrame"]:visible').first.wait_for(timeout=60_000)
                    out[kind].append(time.perf_counter() - t0)
                    page.context.close()
        browser.close()
    for kind, xs in out.items():
        print(f"Feature space, shipped maps and table on screen after the click ({kind}): "
              f"{statistics.median(xs):.2f} s (each: {', '.join(f'{x:.2f}' for x in xs)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="Start -> first grid repeats")
    ap.add_argument("--windows", type=int, default=2, help="two-round windows per live-rate measure")
    ap.add_argument("--pairs", type=int, default=2, help="engine / browser measures, alternated")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of a job (default: the app's)")
    ap.add_argument("--skip-sessions", action="store_true", help="leave out the four-sessions measure")
    ap.add_argument("--first-page", type=int, metavar="N",
                    help="only the first page without a browser: N fresh processes each draw it with Streamlit's "
                         "AppTest (no warm-up), timed, and whether torch was imported before it was drawn")
    ap.add_argument("--first-start", type=int, metavar="N",
                    help="only the first Start of N fresh servers per reading time (--read-s), in the browser")
    ap.add_argument("--read-s", type=float, nargs="+", default=[1.0, 3.0],
                    help="seconds between the Start button appearing and the click (--first-start)")
    ap.add_argument("--feature-page", metavar="DIR", help="only the Feature space page on the committed comparison "
                                                          "in DIR (results/shipped/feature-banks), --repeats times")
    ap.add_argument("--inproc", choices=("engine", "job"), help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    a = ap.parse_args()
    threads = a.threads or job_threads()
    if a.inproc:
        inproc(a.inproc, a.windows, threads, a.root)
    elif a.first_page:
        first_page(a.first_page)
    elif a.first_start:
        first_starts(a.first_start, a.read_s)
    elif a.feature_page:
        feature_page(a.feature_page, a.repeats)
    else:
        in_the_browser(a, threads)


if __name__ == "__main__":
    main()
