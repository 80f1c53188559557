"""The one place that decides where tensors live, how many CPU threads torch may use, and in which precision."""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import torch

from .config import _choice

# the arithmetic a pass can run in (a run may also ask for "auto": ifhe.precision picks one of these)
ARITHMETIC = ("fp32", "bf16")


def pick_device(requested: str | None = None, local_rank: int = 0) -> torch.device:
    """`requested` may be 'cpu', 'cuda', 'cuda:1' or None/'auto' (CUDA when present); under torchrun a bare
    'cuda' means this process's own GPU (LOCAL_RANK)."""
    if requested in (None, "", "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        from .errors import IfheError

        raise IfheError(f"device {requested!r} asked for, but CUDA is not available on this machine")
    return device


def set_cpu_threads(n: int | None = None) -> int:
    """Cap intra-op threads; by default all cores, or $IFHE_THREADS."""
    if n is None:
        n = int(os.environ.get("IFHE_THREADS", "0")) or (os.cpu_count() or 1)
    n = max(1, int(n))
    torch.set_num_threads(n)
    tune_cpu_allocator()
    return n


_ALLOCATOR_TUNED: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process for reuse instead of handing big blocks back to the kernel (glibc only;
    once per process; `IFHE_MALLOC_TUNE=0` leaves the allocator as it is). Returns whether it is in effect.

    glibc serves blocks of 32 MB and more (CMI's 4,160 x 4,160 contrastive logits and their gradients, 70 MB
    each) with a fresh mmap and unmaps them on free, so every step page-faults them in again: on the 2-core CPU
    box a 70 MB copy took 74 ms that way and 10 ms from reused memory, and CMI's step 30% less time
    (docs/PROFILE.md). `M_MMAP_MAX = 0` serves every block from the heap and `M_TRIM_THRESHOLD` of 1 GiB keeps
    freed heap memory for the next step; the peak resident memory stays the peak of what is live (plus
    fragmentation), only the memory is not returned between steps."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    _ALLOCATOR_TUNED = False
    if os.environ.get("IFHE_MALLOC_TUNE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import ctypes
        import platform

        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # no glibc here: nothing to tune
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED


def fast_layout(module: torch.nn.Module) -> torch.nn.Module:
    """Convolution weights in channels_last, the layout every image batch here is in.

    Measured on the 2-core CPU box: the generator's forward+backward at batch 64 drops from 0.27 s to 0.15 s, and
    models whose weights stay NCHW get their weights reordered at every call."""
    return module.to(memory_format=torch.channels_last)


def check_precision(precision: str) -> str:
    _choice("precision", precision, ARITHMETIC)
    return precision


def autocast(device: torch.device, precision: str = "fp32"):
    """Forward passes in bfloat16 where `precision` is 'bf16', else a no-op context.

    Losses and statistics are still taken in float32 (callers cast), so only convolutions and linear layers run
    in bf16. Measured on the 2-core CPU box (AVX512-BF16): a WRN-16-2 forward+backward at batch 64 takes 0.11 s
    instead of 0.24 s. On a CPU without native bf16 it is emulated and slower: keep fp32 there."""
    check_precision(precision)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class RunRNG:
    """A run's own random streams: one on the CPU (augmentation parameters, sampling indices) and one on the
    run's device (noise, targets, re-initialisations). Runs never draw from torch's global generator while they
    step, so runs that share a process (the app's job threads) cannot disturb each other's images, and a
    checkpoint restores exactly what comes next."""

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.cpu = torch.Generator().manual_seed(seed)
        self.dev = self.cpu if self.device.type == "cpu" else torch.Generator(self.device).manual_seed(seed)

    @classmethod
    def from_global(cls, device: torch.device | str = "cpu") -> "RunRNG":
        """Seeded by one draw from torch's global generator (for code that sets `torch.manual_seed`)."""
        return cls(int(torch.randint(0, 2 ** 62, ())), device)

    def reseed(self, seed: int) -> None:
        self.cpu.manual_seed(seed)
        if self.dev is not self.cpu:
            self.dev.manual_seed(seed)

    def state_dict(self) -> dict:
        s = {"cpu": self.cpu.get_state()}
        if self.dev is not self.cpu:
            s["dev"] = self.dev.get_state()
        return s

    def load_state_dict(self, state: dict) -> None:
        self.cpu.set_state(state["cpu"])
        if self.dev is not self.cpu and "dev" in state:
            self.dev.set_state(state["dev"])


_INIT_LOCK = __import__("threading").RLock()  # re-entrant: a synthesizer built inside seeded_init may seed its own parts


@contextmanager
def seeded_init(seed: int, device: torch.device | str = "cpu"):
    """Initialise modules from torch's global generator at `seed` without disturbing anyone: threads take turns,
    and the global state is restored afterwards."""
    device = torch.device(device)
    with _INIT_LOCK, torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                                           device_type=device.type if device.type == "cuda" else "cuda"):
        torch.manual_seed(seed)
        yield


def compile_enabled(device: torch.device | str = "cpu") -> bool:
    """Whether the engine's synthesis passes run through torch.compile: $IFHE_COMPILE (1/0) decides; default off
    (see `maybe_compile` for what it measured)."""
    v = os.environ.get("IFHE_COMPILE", "").strip().lower()
    return v in ("1", "true", "yes", "on")


class _CompiledOrEager:
    """Calls `torch.compile(module)`; if compiling fails (no C++ compiler, an unsupported op, ...), says so once
    and calls the module itself from then on."""

    def __init__(self, module: torch.nn.Module, name: str):
        self.module, self.name = module, name
        self.compiled = None
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.module, dynamic=False)
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager
                self.failed = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                import warnings

                warnings.warn(f"torch.compile of the {self.name} failed ({self.failed[:300]}); running it "
                              f"eagerly", RuntimeWarning, stacklevel=2)
        return self.module(*args, **kwargs)


def maybe_compile(module: torch.nn.Module, name: str, enabled: bool | None = None):
    """`module` itself, or (with `enabled`, default `compile_enabled()`) a callable that runs it through
    torch.compile (dynamic=False: one graph per batch shape) and falls back to eager where compiling fails."""
    if enabled is None:
        enabled = compile_enabled()
    return _CompiledOrEager(module, name) if enabled else module
