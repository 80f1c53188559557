"""`precision="auto"`: bf16 forward passes where they measure faster on the machine at hand, fp32 elsewhere.

CPU flags decide nothing: on an AMD EPYC (Zen 5) with AVX512-BF16 a WRN-16-2 step runs about twice as fast in
bf16, on an Intel Xeon that reports the same flag (no AMX) 1.4x slower. So `auto` times a short probe of the
run's own passes (`step_probe`) in both precisions and keeps bf16 only when it is at least `MARGIN` faster. The
answer is cached per machine, torch version, threads and probe (`$IFHE_CACHE`, default ~/.cache/ifhe), so a
machine pays for the probe once; `$IFHE_PRECISION_AUTO=fp32|bf16` makes `auto` take that answer without a probe
(the test suite pins it, so tests never depend on the machine's timing).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoint import atomic_write_text
from .device import ARITHMETIC, autocast
from .errors import IfheError

AUTO = "auto"
MARGIN = 0.9      # bf16 must take at most 90% of fp32's time: a tie keeps the exact arithmetic
ENV_FORCE = "IFHE_PRECISION_AUTO"


def cache_path() -> Path:
    return Path(os.environ.get("IFHE_CACHE") or Path.home() / ".cache" / "ifhe") / "precision.json"


def machine_key(device: torch.device) -> str:
    """What decides bf16's speed: the processor (model and flags), torch, and the threads torch uses."""
    from .cpu import _cpuinfo

    if device.type == "cuda":
        what = f"cuda:{torch.cuda.get_device_name(device)}"
    else:
        info = _cpuinfo()
        flags = " ".join(sorted(info.get("flags") or ()))
        what = f"cpu:{info.get('model', 'unknown')}:{hashlib.sha256(flags.encode()).hexdigest()[:12]}:" \
               f"threads={torch.get_num_threads()}"
    return f"{what}:torch={torch.__version__}"


def _time(fn: Callable[[], None], reps: int) -> float:
    fn()  # warm-up: allocator, kernels' first call
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def step_probe(teacher: torch.nn.Module, student: torch.nn.Module, synth_batch: int, kd_batch: int,
               device: torch.device, reps: int = 3) -> Callable[[str], float]:
    """Seconds of one synthesis-like pass (teacher forward + input gradient, student forward + input gradient
    on `synth_batch` images) plus one KD-like pass (teacher forward, student forward + backward on `kd_batch`)
    in a precision. The student is a throwaway copy; no weights change."""
    import copy

    student = copy.deepcopy(student).train()

    def one(precision: str) -> None:
        x = torch.randn(synth_batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        with autocast(device, precision):
            loss = teacher(x).float().logsumexp(1).mean() + student(x).float().logsumexp(1).mean()
        loss.backward()
        xk = torch.randn(kd_batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            with torch.no_grad():
                t = teacher(xk).float()
            s = student(xk).float()
        F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean").backward()
        student.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return lambda precision: _time(lambda: one(precision), reps)


def bf16_usable(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def choose_precision(requested: str, device: torch.device, probe: Callable[[str], float] | None,
                     probe_name: str) -> tuple[str, dict]:
    """The precision to run in, and how it was decided (recorded with the run). `requested` fp32/bf16 is
    taken as it is; `auto` asks the cache, then `probe` (seconds per pass in a precision)."""
    if requested != AUTO:
        if requested not in ARITHMETIC:
            raise IfheError(f"precision: unknown value {requested!r}; choose one of auto, {', '.join(ARITHMETIC)}")
        return requested, {"how": "requested"}
    forced = os.environ.get(ENV_FORCE, "").strip()
    if forced:
        if forced not in ARITHMETIC:
            raise IfheError(f"${ENV_FORCE}={forced!r}: expected one of {', '.join(ARITHMETIC)}")
        return forced, {"how": f"${ENV_FORCE}"}
    if not bf16_usable(device) or probe is None:
        return "fp32", {"how": "no bf16 on this device"}
    key = f"{machine_key(device)}:{probe_name}"
    cache = _read_cache()
    if key in cache:
        return cache[key]["choice"], {**cache[key], "how": "cached probe"}
    seconds = {p: probe(p) for p in ARITHMETIC}
    choice = "bf16" if seconds["bf16"] <= MARGIN * seconds["fp32"] else "fp32"
    record = {"choice": choice, "seconds": {p: round(s, 4) for p, s in seconds.items()},
              "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    cache[key] = record
    try:
        path = cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home: the probe runs again next time, nothing is lost
    return choice, {**record, "how": "probe"}


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
