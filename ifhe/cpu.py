"""What kind of CPU this is, read without torch (the app's first page uses it): model, cores, the instruction
sets that decide bf16's speed, and a figure's machine in words. `ifhe.machine` adds torch's side (threads,
versions, GPU) and the calibration step."""
from __future__ import annotations

import os
import platform


def _cpuinfo() -> dict[str, str | set]:
    """Model name, flags and the number of physical cores from /proc/cpuinfo (Linux); {} elsewhere."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return {}
    out: dict = {}
    cores = set()
    phys = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware", "cpu model") and "model" not in out and value:
            out["model"] = value
        elif key in ("flags", "Features") and "flags" not in out:
            out["flags"] = set(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not line.strip():
            if core is not None:
                cores.add((phys, core))
            phys = core = None
    if core is not None:
        cores.add((phys, core))
    if cores:
        out["physical_cores"] = len(cores)
    return out


def cpu_kind() -> dict:
    """This machine as the sweeps record the CPU part of it (`machine.machine_info`): model, cores, ISA flags."""
    info = _cpuinfo()
    flags = info.get("flags") or set()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"cpu_model": info.get("model") or platform.processor() or platform.machine() or "unknown CPU",
            "logical_cores": os.cpu_count(), "physical_cores": info.get("physical_cores"), "usable_cores": usable,
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


KIND_KEYS = ("cpu_model", "usable_cores", "avx512_bf16", "amx_bf16")


def same_cpu_kind(a: dict | None, b: dict | None) -> bool:
    """Whether two recorded machines are the same kind of CPU for a figure's sake: model, usable cores and the
    bf16 instruction sets (speed within a kind still varies; the sweeps' calibration measures it)."""
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in KIND_KEYS) and not a.get("cuda_device") \
        and not b.get("cuda_device")


def machine_label(info: dict | None, threads: int | None = None) -> str:
    """'AMD EPYC, 2 cores (AVX512-BF16), 1 thread' (threads: the sweep's, else the recorded torch threads)."""
    if not info:
        return "machine not recorded"
    cores = info.get("usable_cores") or info.get("logical_cores")
    isa = "AVX512-BF16" if info.get("avx512_bf16") else "AVX512" if info.get("avx512") else \
        "AVX2" if info.get("avx2") else None
    t = threads if threads is not None else info.get("torch_threads")
    parts = [str(info.get("cpu_model") or "unknown CPU"), f"{cores} cores" + (f" ({isa})" if isa else "")]
    if t:
        parts.append(f"{t} thread{'s' if t != 1 else ''}")
    if info.get("cuda_device"):
        parts.append(f"GPU {info['cuda_device']}")
    return ", ".join(parts)
