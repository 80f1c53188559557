"""`ifhe demo`: the Streamlit app in a child process, which gets Ctrl-C and SIGTERM and stops its runs cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import IfheError
from .common import add_data


def register(sub) -> None:
    dm = sub.add_parser("demo", help="start the Streamlit demo in the browser")
    dm.add_argument("--port", type=int, default=8501)
    dm.add_argument("--headless", action="store_true", help="do not open a browser window")
    add_data(dm)
    dm.set_defaults(func=command)


def command(a) -> int:
    app = Path(__file__).resolve().parent.parent.parent / "app" / "streamlit_app.py"
    if not app.exists():
        raise IfheError(f"the demo app is not installed next to the package ({app}); run from a source checkout")
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(a.port),
           "--server.headless", str(a.headless).lower(), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # no polling of the source tree while runs use the cores
    env = dict(os.environ)
    if a.data:
        env["IFHE_DATA"] = a.data
    print(f"ifhe demo: http://localhost:{a.port}")
    # Ctrl-C, SIGTERM: the server gets the signal and stops its runs (each saves its checkpoint) before it exits;
    # this process waits for that and exits with the server's code (subprocess.call would kill it after 0.25 s)
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
