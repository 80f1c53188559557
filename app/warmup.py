"""Warming the server up in the background after the first page is drawn: torch and what the first run needs are
imported and exercised once (torch's import, its compiler stack that the first optimizer imports, first
allocations: 5-6 s on a loaded 2-core machine, 7 s for a first Start that found nothing done), so that the first
Start is as quick as the next ones. `app.jobs` stops it when a run starts and waits for it at exit."""
from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import replace

from ifhe.catalog import default_teacher
from ifhe.config import preset

from .forms import DEFAULT_BATCH

# The warm-up starts this long after the first page's script has ended (its elements are on their way to the
# browser): the first Start comes seconds later, and everything the warm-up has not done by then is the run's to do
WARM_UP_DELAY_S = 0.2

_warm = {"thread": None, "stop": threading.Event(), "lock": threading.Lock()}


def start_warm_up() -> None:
    """Start warming up once per process, in the background (pages call this after they have been drawn, so
    the first page does not share the interpreter with torch's import). Off with IFHE_APP_WARMUP=0."""
    if os.environ.get("IFHE_APP_WARMUP", "1") == "0":
        return
    with _warm["lock"]:
        if _warm["thread"] is not None:
            return
        t = threading.Thread(target=warm_up, args=(_warm["stop"],), name="ifhe-warm-up", daemon=True)
        _warm["thread"] = t
        t.start()


def _import_torch() -> None:
    import torch  # noqa: F401  (the imports are the warm-up: they run in its thread, after the first page was drawn)


def _compiler_stack() -> None:
    """The first optimizer a run builds imports torch's compiler stack (torch._dynamo): about 3 s cold on a loaded
    2-core machine, the largest part of a cold first Start; early, so that a Start soon after the page finds it."""
    import torch
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _engine() -> None:
    import ifhe.experiment  # noqa: F401
    import plotly.graph_objects  # noqa: F401  (the pages' charts; slow to import the first time)
    import ifhe.synth  # noqa: F401


def _exercise(stop: threading.Event) -> None:
    """The default path once: the default teacher, IFHE, the app's batch (kernels are made per shape), a grid."""
    import torch
    from ifhe.heads import head_for
    from ifhe.models import create_model
    from ifhe.synth import InversionSynthesizer
    from ifhe.zoo import teacher_or_random
    from .grids import compose_grid
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher, _ = teacher_or_random(default_teacher("cifar10") or "", "wrn16_2")
        nc = teacher.num_classes
        student = create_model("wrn16_1", nc).to(memory_format=torch.channels_last)
        s, _ = preset("ifhe", "cpu")
        s = replace(s, batch_size=DEFAULT_BATCH, iterations=2)
        synth = InversionSynthesizer(s, teacher, student, head_for(teacher, s.h_stages, s.h_hidden),
                                     teacher.normalizer, nc, torch.device("cpu"))
        synth.start_round(0)
        for _ in range(2):
            if stop.is_set():
                return
            synth.step()
        x, y = synth.images()
        with torch.inference_mode():
            teacher(teacher.normalizer(x.float() / 255).contiguous(memory_format=torch.channels_last))
        compose_grid(x, y, torch.ones(len(y)), y, ())
    finally:
        torch.set_num_threads(default_threads)


def warm_up(stop: threading.Event | None = None) -> None:
    """Import and exercise what the first run needs, part by part (torch, its compiler stack, the engine, the
    default path once); done here, in the background, the first Start is as quick as the next ones. Between its
    parts it gives up when `stop` is set (a run started: it does the rest itself; or the process is exiting)."""
    stop = stop or threading.Event()
    t0 = time.perf_counter()
    if stop.wait(WARM_UP_DELAY_S):  # the browser is still receiving the page that started this
        return
    debug = os.environ.get("IFHE_APP_DEBUG")
    try:
        for part in (_import_torch, _compiler_stack, _engine, lambda: _exercise(stop)):
            if stop.is_set():
                break
            part()
            if debug:
                print(f"[warm-up] {getattr(part, '__name__', 'exercise')} done at {time.perf_counter() - t0:.2f}s",
                      flush=True)
    except Exception:  # warming up is an optimization; never let it disturb the server
        traceback.print_exc()
    if debug:
        print(f"[warm-up] {'given up' if stop.is_set() else 'done'} at {time.perf_counter() - t0:.2f}s", flush=True)


def warm_up_running() -> bool:
    """Whether the warm-up thread is still at work (it finishes the part it is in after being stopped)."""
    t = _warm["thread"]
    return t is not None and t.is_alive()


def stop_warm_up() -> None:
    """A run is starting (it warms up by itself; the warm-up would only slow it), or the process is exiting."""
    _warm["stop"].set()


def join_warm_up(timeout: float) -> None:
    t = _warm["thread"]
    if t is not None:
        t.join(timeout)  # an import of torch cannot be interrupted; it takes a few seconds at most
