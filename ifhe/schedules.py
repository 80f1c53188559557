"""Learning-rate schedules as pure functions of the run's progress (a fraction in [0, 1] of its rounds or of its
time budget), so the same schedule serves a run of 200 rounds and a run of 20 minutes."""
from __future__ import annotations

import math


def cosine_lr(base_lr: float, progress: float, floor: float = 0.0) -> float:
    """Cosine decay from base_lr to `floor` as progress goes 0 -> 1 (CosineAnnealingLR's eta_min)."""
    p = min(1.0, max(0.0, progress))
    return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * p))


def multistep_lr(base_lr: float, progress: float, milestones: tuple[float, ...], gamma: float = 0.1) -> float:
    """base_lr times gamma for every milestone (a fraction of the run) already passed (DAFL: 0.4, 0.8)."""
    return base_lr * gamma ** sum(progress >= m for m in milestones)


def after_warmup(progress: float, warmup: float) -> float:
    """Progress of the part of a run that follows a warm-up (Fast-Datafree's KD schedule waits for it)."""
    if warmup <= 0:
        return progress
    return max(0.0, (progress - warmup) / (1 - warmup))
