"""The app's speed, measured in a real browser against the real server (figures printed, never asserted).

    python bench/bench_app.py [--repeats 3] [--seconds 6]

- Start -> first image grid in the browser (IFHE synthesis, WRN-16-2 teacher, batch 16): first and median
  over repeats (each a new run; the first includes the server's first-run costs).
- Refreshes per second while running: how often the grid's image and the live caption change in the page.
- Health endpoint (/_stcore/health) latency while a job runs: median and max.
- Server peak memory (VmHWM) with one job.
- Four browser sessions pressing Start at once: jobs started vs refused, health latency meanwhile.

Uses the shipped cifar10_wrn16_2 teacher when it is published, else a randomly initialised WRN-16-2 (same cost).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.serve import CHROMIUM, CHROMIUM_ARGS, Server, health, publish_test_teacher  # noqa: E402

GRID = ".st-key-grid img"
COUNTER_JS = """() => { window.__changes = {grid: 0, tick: 0}; let g = null, t = null;
  window.__poll = setInterval(() => {
    const img = document.querySelector('.st-key-grid img'); const src = img ? img.getAttribute('src') : null;
    if (src && src !== g) { window.__changes.grid++; g = src; }
    const cap = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].map(e => e.innerText)
                  .find(x => x.includes('refreshed')) || null;
    if (cap && cap !== t) { window.__changes.tick++; t = cap; }
  }, 20); }"""


def main_block(page):
    return page.get_by_test_id("stMainBlockContainer")


def button(page, name):
    return main_block(page).get_by_role("button", name=name, exact=True)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0, help="how long to watch the refresh rate")
    a = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from ifhe.zoo import available
    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    env = {"IFHE_APP_RUNS": str(tmp / "runs")}
    if "cifar10_wrn16_2" in available():
        teacher = "cifar10_wrn16_2 (shipped)"
    else:
        publish_test_teacher(tmp / "pretrained", "random_wrn16_2", "wrn16_2")
        env["IFHE_PRETRAINED"] = str(tmp / "pretrained")
        teacher = "random WRN-16-2 (cifar10_wrn16_2 not published yet; same cost)"
    print(f"teacher {teacher}; IFHE synthesis, batch 16; {os.cpu_count()} CPU cores")
    rows = []
    with Server(env, log=tmp / "server.log") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(server.url)
        button(page, "Start").wait_for(timeout=60_000)
        page.wait_for_timeout(3000)  # a user reads the page before pressing Start; the server warms up meanwhile

        # -- Start -> first grid -------------------------------------------------------------------------------
        firsts = []
        for i in range(a.repeats):
            expect(page.locator(GRID)).to_have_count(0)
            t0 = time.perf_counter()
            button(page, "Start").click()
            page.locator(GRID).first.wait_for(timeout=60_000)
            firsts.append(time.perf_counter() - t0)
            if i < a.repeats - 1:
                button(page, "Reset").click()  # stops the run and detaches: the grid goes away
                page.wait_for_timeout(1500)
        rows.append(("Start -> first grid in the browser, first run", f"{firsts[0]:.2f} s", "< 2 s"))
        rows.append((f"Start -> first grid, median of {len(firsts)}", f"{statistics.median(firsts):.2f} s", "< 2 s"))

        # -- refresh rate and health while the last run goes on ------------------------------------------------
        probe = HealthProbe(server.url)
        probe.start()
        page.evaluate(COUNTER_JS)
        page.wait_for_timeout(a.seconds * 1000)
        changes = page.evaluate("() => { clearInterval(window.__poll); return window.__changes; }")
        probe.stop()
        rows.append(("live view refreshes per second", f"{changes['tick'] / a.seconds:.2f}", ">= 2"))
        rows.append(("new image grids per second (bounded by the run's speed)", f"{changes['grid'] / a.seconds:.2f}", ""))
        rows.append(("health endpoint while a job runs, median / max",
                     f"{statistics.median(probe.times) * 1000:.0f} / {max(probe.times) * 1000:.0f} ms"
                     + (f" ({probe.errors} errors)" if probe.errors else ""), "< 1 s"))
        rows.append(("server peak memory with one job (VmHWM)", f"{server.peak_rss_mb():.0f} MB", "< 1.5 GB"))
        button(page, "Stop").click()
        expect(button(page, "Start")).to_be_enabled(timeout=30_000)

        # -- four sessions press Start at once -----------------------------------------------------------------
        pages = []
        for _ in range(4):
            q = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            q.goto(server.url)
            button(q, "Start").wait_for(timeout=60_000)
            pages.append(q)
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
        rows.append(("4 sessions press Start at once: started / refused", f"{len(started)} / {len(refused)}",
                     f"started = job limit ({limit})"))
        rows.append(("health meanwhile, max", f"{max(probe.times) * 1000:.0f} ms", "< 1 s"))
        rows.append(("server peak memory after that (VmHWM)", f"{server.peak_rss_mb():.0f} MB", ""))
        for q in started:
            button(q, "Stop").click()
        browser.close()
    w = max(len(r[0]) for r in rows)
    print(f"\n{'measure':{w}s}  {'value':>22s}  target")
    for name, value, target in rows:
        print(f"{name:{w}s}  {value:>22s}  {target}")


if __name__ == "__main__":
    main()
