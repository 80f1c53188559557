"""Knowledge distillation on synthesized images: the student learns KL(T/tau || S/tau) and the head h learns
KL(T/tau || h(f_T)/tau) on the same batches; evaluation of both on real test images."""
from __future__ import annotations

import math

import torch
from torch import nn

from .data import ImageSet, Normalizer, random_crop_flip, to_unit
from .device import autocast
from .evaluation import evaluate, predict_logits
from .hooks import FeatureTap
from .losses import kd_kl


def cosine_lr(base_lr: float, progress: float) -> float:
    """Cosine decay from base_lr to 0 as progress goes 0 -> 1 (progress may come from rounds or from time)."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def make_kd_optimizer(student: nn.Module, head: nn.Module | None, lr: float, momentum: float,
                      weight_decay: float) -> torch.optim.SGD:
    groups = [{"params": list(student.parameters())}]
    if head is not None:
        groups.append({"params": list(head.parameters())})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def prepare_batch(x_uint8: torch.Tensor, normalizer: Normalizer, device: torch.device, augment: bool) -> torch.Tensor:
    if augment:
        x_uint8 = random_crop_flip(x_uint8)
    return normalizer(to_unit(x_uint8.to(device, non_blocking=True))).contiguous(memory_format=torch.channels_last)


def kd_step(student: nn.Module, head: nn.Module | None, teacher: nn.Module, x: torch.Tensor,
            opt: torch.optim.Optimizer, T: float, h_stages: tuple[str, ...],
            precision: str = "fp32") -> dict[str, torch.Tensor]:
    """One SGD step on a normalized batch; returns detached 0-d loss tensors (no host sync)."""
    student.train()
    with autocast(x.device, precision):
        with torch.no_grad(), FeatureTap(teacher, h_stages if head is not None else ()) as tap:
            t_logits = teacher(x).float()
            f_t = tap.concat() if head is not None else None
        s_logits = student(x).float()
        h_logits = head(f_t).float() if head is not None else None
    loss_s = kd_kl(s_logits, t_logits, T=T)
    losses = {"kd_student": loss_s}
    total = loss_s
    if head is not None:
        loss_h = kd_kl(h_logits, t_logits, T=T)
        losses["kd_head"] = loss_h
        total = total + loss_h
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return {k: v.detach() for k, v in losses.items()}


@torch.inference_mode()
def evaluate_head(head: nn.Module, teacher: nn.Module, data: ImageSet, normalizer: Normalizer,
                  device: torch.device, h_stages: tuple[str, ...], batch_size: int = 500) -> float:
    """Top-1 of h(f_T(x)) on real images, in percent."""
    correct = 0
    for i in range(0, len(data), batch_size):
        x = normalizer(to_unit(data.x[i:i + batch_size].to(device))).contiguous(memory_format=torch.channels_last)
        with FeatureTap(teacher, h_stages) as tap:
            teacher(x)
            pred = head(tap.concat()).argmax(1).cpu()
        correct += int((pred == data.y[i:i + batch_size]).sum())
    return 100.0 * correct / max(1, len(data))


__all__ = ["cosine_lr", "make_kd_optimizer", "prepare_batch", "kd_step", "evaluate", "evaluate_head",
           "predict_logits"]
