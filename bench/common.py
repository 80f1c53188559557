"""Shared set-up for the benchmarks: the shipped teacher (or a random one of the same architecture)."""
from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ifhe.device import set_cpu_threads  # noqa: E402
from ifhe.zoo import teacher_or_random  # noqa: E402


def teacher(name: str = "cifar10_wrn16_2", arch: str = "wrn16_2"):
    """The shipped teacher, or a random one of the same architecture (same cost); and which it is."""
    return teacher_or_random(name, arch)


def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    """The CPU this runs on, as every recorded figure must name it: model, cores, vector extensions."""
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    ext = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {'/'.join(ext) or 'no AVX2'}, torch {torch.__version__}"


def threads() -> int:
    return set_cpu_threads(int(os.environ.get("IFHE_THREADS", "2")))   # with the allocator tuning runs get
