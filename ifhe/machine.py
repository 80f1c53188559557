"""Which machine a figure was measured on, and how fast it is: a description and a calibration step.

Machines differ by up to 3.5x in speed, so every sweep records `machine_info()` and `calibrate()` at its start,
and a table never mixes cells whose calibrations differ by more than 20% (`same_machine`).

The calibration figure is the time of one fixed training step: WRN-16-2, a batch of 128 random 32x32 images,
fp32, channels_last, SGD with Nesterov momentum and label-smoothed cross-entropy, exactly the step of
`ifhe train-teacher`. On a CPU it is counted in CPU seconds per torch thread (the clock the sweeps' budgets use,
`experiment.cpu_seconds`), so another process on the same cores does not move it; on a GPU in wall seconds.
"""
from __future__ import annotations

import platform
import statistics
import time

import torch

from .cpu import cpu_kind

CALIBRATION_ARCH = "wrn16_2"
CALIBRATION_BATCH = 128
DEFAULT_TOLERANCE = 0.2


def machine_info() -> dict:
    """CPU model, cores, torch threads, versions, GPU (if any) and the instruction sets that matter here."""
    cuda = None
    if torch.cuda.is_available():
        try:
            cuda = torch.cuda.get_device_name(0)
        except Exception:  # a broken driver should not stop a CPU sweep
            cuda = "unknown CUDA device"
    return {**cpu_kind(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(terse=True), "cuda_device": cuda}


def _seconds(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time() / max(1, torch.get_num_threads())


def calibrate(threads: int | None = None, repeats: int = 5, warmup: int = 1, device: str = "cpu",
              max_seconds: float = 12.0) -> dict:
    """Time the fixed WRN-16-2 training step (module docstring) with `threads` torch threads.

    Returns {"step_s": median seconds per step (CPU seconds per thread on a CPU, wall seconds on a GPU),
    "wall_s": median wall seconds, "steps": the measured ones, ...}. Stops measuring once `max_seconds` have
    passed (at least one step is measured), so a slow machine still calibrates in about that time.
    Global RNG state and the thread count are restored afterwards."""
    import torch.nn.functional as F

    from .device import fast_layout
    from .models import create_model

    dev = torch.device(device)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    used = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            torch.manual_seed(0)
            model = fast_layout(create_model(CALIBRATION_ARCH, 10).to(dev)).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(CALIBRATION_BATCH, 3, 32, 32, generator=g).to(dev)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (CALIBRATION_BATCH,), generator=g).to(dev)

            def step():
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            start = time.perf_counter()
            for _ in range(warmup):
                step()
            steps, walls = [], []
            for _ in range(max(1, repeats)):
                c0, w0 = _seconds(dev), time.perf_counter()
                step()
                steps.append(_seconds(dev) - c0)
                walls.append(time.perf_counter() - w0)
                if time.perf_counter() - start > max_seconds:
                    break
    finally:
        torch.set_num_threads(before)
    return {"step_s": statistics.median(steps), "wall_s": statistics.median(walls), "steps": steps,
            "clock": "wall" if dev.type == "cuda" else "cpu per thread", "threads": used, "device": str(dev),
            "arch": CALIBRATION_ARCH, "batch": CALIBRATION_BATCH, "precision": "fp32",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def calibration_seconds(cal: dict | float | int | None) -> float | None:
    """The figure compared between machines: a calibration dict's step_s, or a number as is."""
    if cal is None:
        return None
    if isinstance(cal, dict):
        cal = cal.get("step_s")
        if cal is None:
            return None
    v = float(cal)
    return v if v > 0 and v == v and v != float("inf") else None


def relative_difference(cal_a, cal_b) -> float:
    """How much slower the slower of two calibrations is: max/min - 1 (0.25 = 25% slower); inf if unknown."""
    a, b = calibration_seconds(cal_a), calibration_seconds(cal_b)
    if a is None or b is None:
        return float("inf")
    return max(a, b) / min(a, b) - 1


def same_machine(cal_a, cal_b, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether two calibrations (dicts from `calibrate` or seconds) are within `tolerance` of each other:
    the slower at most (1 + tolerance) times the faster. A missing calibration matches nothing."""
    return relative_difference(cal_a, cal_b) <= tolerance + 1e-12
