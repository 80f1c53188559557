"""Knowledge distillation on synthesized images: the student learns KL(T/tau || S/tau) and the head h learns
KL(T/tau || h(f_T)/tau) on the same batches; evaluation of both on real test images."""
from __future__ import annotations

import torch
from torch import nn

from .data import ImageSet, Normalizer, random_crop_flip, to_unit
from .device import autocast
from .evaluation import evaluate, predict_logits
from .hooks import FeatureTap
from .errors import IfheError
from .losses import attention_transfer, kd_kl
from .schedules import cosine_lr


def make_kd_optimizer(student: nn.Module, head: nn.Module | None, lr: float, momentum: float,
                      weight_decay: float, kind: str = "sgd") -> torch.optim.Optimizer:
    """SGD with momentum (CMI, Fast, DAFL), or Adam with its default betas (ZSKT's solver.py)."""
    groups = [{"params": list(student.parameters())}]
    if head is not None:
        groups.append({"params": list(head.parameters())})
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def prepare_batch(x_uint8: torch.Tensor, normalizer: Normalizer, device: torch.device, augment: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    if augment:
        x_uint8 = random_crop_flip(x_uint8, generator=generator)
    return normalizer(to_unit(x_uint8.to(device, non_blocking=True))).contiguous(memory_format=torch.channels_last)


def attention_pairs(student: nn.Module, teacher: nn.Module, device: torch.device) -> tuple[tuple[str, str], ...]:
    """(student stage, teacher stage) pairs of equal spatial size, for attention transfer. WRNs pair block1-3 by
    name; a ResNet18 student (32, 16, 8, 4 pixels) of a VGG11 teacher (16, 8, 4, 2, 1) pairs its block2 with the
    teacher's block1, and so on."""
    sizes = []
    for model in (student, teacher):
        stages = [s for s in model.stage_modules if s != "penultimate"]
        with torch.no_grad(), FeatureTap(model, stages, pool=False) as tap:
            was = model.training
            model.eval()
            model(torch.zeros(1, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last))
            model.train(was)
        sizes.append({tuple(tap.features[s].shape[2:]): s for s in stages})
    pairs = tuple((name, sizes[1][hw]) for hw, name in sizes[0].items() if hw in sizes[1])
    if not pairs:
        raise IfheError("attention transfer: the student and the teacher have no stages of equal spatial size")
    return pairs


def kd_step(student: nn.Module | None, head: nn.Module | None, teacher: nn.Module, x: torch.Tensor,
            opt: torch.optim.Optimizer, T: float, h_stages: tuple[str, ...],
            precision: str = "fp32", at: float = 0.0, at_pairs: tuple[tuple[str, str], ...] = (),
            kl_reduction: str = "batchmean", grad_clip: float = 0.0) -> dict[str, torch.Tensor]:
    """One optimizer step on a normalized batch; returns detached 0-d loss tensors (no host sync).

    The student learns KL(T/τ || S/τ) (plus, with `at` > 0, the teacher's spatial attention at the stage pairs
    `at_pairs`: ZSKT's beta term), h learns KL(T/τ || h(f_T)/τ). `student=None` trains h alone (synthesis-only
    runs of IFHE). `grad_clip` > 0 clips the student's gradient norm (ZSKT)."""
    s_stages, t_stages = zip(*at_pairs) if at > 0 and student is not None else ((), ())
    losses: dict[str, torch.Tensor] = {}
    total = None
    with autocast(x.device, precision):
        with torch.no_grad(), FeatureTap(teacher, h_stages if head is not None else ()) as tap, \
                FeatureTap(teacher, t_stages, pool=False) as t_maps:
            t_logits = teacher(x).float()
            f_t = tap.concat() if head is not None else None
        if student is not None:
            student.train()
            inner = getattr(student, "module", student)  # hooks go on the model inside DistributedDataParallel
            with FeatureTap(inner, s_stages, pool=False) as s_maps:
                s_logits = student(x).float()
        h_logits = head(f_t).float() if head is not None else None
    if student is not None:
        total = losses["kd_student"] = kd_kl(s_logits, t_logits, T=T, reduction=kl_reduction)
        if at > 0:
            losses["attention"] = attention_transfer([s_maps.features[s] for s in s_stages],
                                                     [t_maps.features[t] for t in t_stages])
            total = total + at * losses["attention"]
    if head is not None:
        losses["kd_head"] = kd_kl(h_logits, t_logits, T=T)
        total = losses["kd_head"] if total is None else total + losses["kd_head"]
    if total is None:
        raise IfheError("kd_step: nothing to train (no student and no head)")
    opt.zero_grad(set_to_none=True)
    total.backward()
    if grad_clip > 0 and student is not None:
        nn.utils.clip_grad_norm_(student.parameters(), grad_clip)
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


__all__ = ["attention_pairs", "cosine_lr", "make_kd_optimizer", "prepare_batch", "kd_step", "evaluate",
           "evaluate_head", "predict_logits"]
