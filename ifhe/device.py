"""The one place that decides where tensors live, how many CPU threads torch may use, and in which precision."""
from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from .config import PRECISIONS, _choice


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
    return n


def fast_layout(module: torch.nn.Module) -> torch.nn.Module:
    """Convolution weights in channels_last, the layout every image batch here is in.

    Measured on the 2-core CPU box: the generator's forward+backward at batch 64 drops from 0.27 s to 0.15 s, and
    models whose weights stay NCHW get their weights reordered at every call."""
    return module.to(memory_format=torch.channels_last)


def check_precision(precision: str) -> str:
    _choice("precision", precision, PRECISIONS)
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
