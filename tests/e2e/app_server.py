"""Start the real app server in a subprocess, and drive it from Chromium: test tooling, shared by the browser tests,
the screenshots and bench/bench_app.py (which puts this folder on its path)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "streamlit_app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
GRID = ".st-key-grid img"       # the Synthesize page's image grid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(url: str, timeout: float = 5.0) -> float:
    """Seconds the health endpoint takes to answer 'ok' (raises if it does not)."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as r:
        body = r.read()
    if r.status != 200 or body.strip() != b"ok":
        raise RuntimeError(f"health endpoint answered {r.status} {body[:40]!r}")
    return time.perf_counter() - t0


class Server:
    """`python -m streamlit run app/streamlit_app.py` on a free port; a context manager that ends it."""

    name = "the app server"
    new_session = False           # True: in a session of its own, as a terminal runs a command

    def __init__(self, env: dict | None = None, port: int | None = None, log: str | os.PathLike | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(log) if log else None
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(self.port),
                "--server.address", "127.0.0.1", "--server.headless", "true",
                "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]

    def start(self, timeout: float = 90.0) -> "Server":
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=str(ROOT), start_new_session=self.new_session)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                health(self.url, timeout=2.0)
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s")

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory (VmHWM), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def publish_test_teacher(root: str | os.PathLike, name: str = "tiny_wrn16_1", arch: str = "wrn16_1",
                         accuracy: float = 10.0) -> str:
    """A randomly initialised teacher in a zoo folder (for tests on machines without the shipped one)."""
    import torch  # here: the server's tests need no torch in this process until they publish a teacher
    from ifhe.models import create_model
    from ifhe.zoo import publish
    torch.manual_seed(0)
    publish(create_model(arch, 10), name, "cifar10", accuracy, 0, "random init (tests)", root=Path(root))
    return name


# ---- Playwright helpers shared by the browser tests, the screenshots and the benchmark ---------------------

def main_block(page):
    """The page's main column (the sidebar has buttons and captions of its own)."""
    return page.get_by_test_id("stMainBlockContainer")


def button(page, name: str):
    return main_block(page).get_by_role("button", name=name, exact=True)


def open_page(browser, url: str, width: int = 1400, height: int = 1000, timeout_ms: int = 60_000):
    """A new browser context on `url`, returned once the Synthesize page's Start button is there."""
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(url)
    button(page, "Start").wait_for(timeout=timeout_ms)
    return page
