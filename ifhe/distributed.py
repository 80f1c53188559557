"""Multi-process runs under `torchrun`: process group from the environment and the few collectives a Run needs.

Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op, so single-process code pays nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str = "cpu") -> Dist:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def any_rank(d: Dist, flag: bool) -> bool:
    """True on every rank if it is true on any: keeps stop decisions (budget, stop requests) in lockstep."""
    if not d.enabled:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_batches(d: Dist, images: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every rank's committed batch, in rank order (equal batch sizes on all ranks)."""
    if not d.enabled:
        return [(images, labels)]
    xs = [torch.empty_like(images) for _ in range(d.world)]
    ys = [torch.empty_like(labels) for _ in range(d.world)]
    dist.all_gather(xs, images.contiguous())
    dist.all_gather(ys, labels.contiguous())
    return list(zip(xs, ys))


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
