"""Loss terms of model inversion and distillation: pure functions of tensors, one signature style.

`(tensors..., *, options, reduction)` -> Tensor. Hooks only record statistics; these functions do the math.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .hooks import BNStats


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"unknown reduction {reduction!r}")


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, T: float = 1.0,
          reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, Hinton's distillation loss.

    "batchmean": the mean over the batch (CMI, Fast, DAFL); "elementmean": the mean over all N x C elements,
    i.e. batchmean / C, what `F.kl_div`'s default reduction gives (ZSKT's solver.py); or "none"/"sum"/"mean"
    of the per-sample values."""
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    p_t = F.softmax(teacher_logits / T, dim=1)
    per_sample = F.kl_div(log_p_s, p_t, reduction="none").sum(1) * (T * T)
    if reduction == "batchmean":
        return per_sample.mean()
    if reduction == "elementmean":
        return per_sample.mean() / student_logits.shape[1]
    return _reduce(per_sample, reduction)


def bn_stat_loss(stats: Sequence[BNStats], *, first_multiplier: float = 1.0,
                 momentum_stats: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                 momentum: float = 0.0, reduction: str = "sum") -> torch.Tensor:
    """DeepInversion: sum over BN layers of ||var - running_var||_2 + ||mean - running_mean||_2.

    With `momentum_stats` (Fast-Datafree), the batch statistics are first blended with an exponential average
    of earlier rounds': m * avg + (1 - m) * batch.
    """
    terms = []
    for i, s in enumerate(stats):
        mean, var = s.mean, s.var
        if momentum_stats is not None and momentum > 0:
            m_mean, m_var = momentum_stats[i]
            mean, var = (1 - momentum) * mean + momentum * m_mean, (1 - momentum) * var + momentum * m_var
        term = torch.linalg.vector_norm(var - s.running_var) + torch.linalg.vector_norm(mean - s.running_mean)
        terms.append(term * (first_multiplier if i == 0 else 1.0))
    return _reduce(torch.stack(terms), reduction)


def one_hot_ce(logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """L_oh: cross-entropy of the teacher's output against the target classes."""
    return F.cross_entropy(logits, targets, reduction=reduction)


def heterogeneity_ce(head_logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """IFHE's L_H = CE(h(f_T), t): the same cross-entropy, read off the auxiliary head over intermediate features."""
    return one_hot_ce(head_logits, targets, reduction=reduction)


def masked_adversarial_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, T: float = 1.0,
                          use_mask: bool = True, reduction: str = "mean") -> torch.Tensor:
    """-KL(p_T || p_S) per sample, zeroed where student and teacher disagree (CMI/Fast-Datafree), averaged over
    the whole batch (masked samples count as zeros).

    Without the mask it is the plain adversarial term of ZSKT/DFQ; `reduction="elementmean"` divides the mean
    by the class count as ZSKT's `F.kl_div` default does.
    """
    kl = kd_kl(student_logits, teacher_logits, T=T, reduction="none")
    if use_mask:
        kl = kl * (student_logits.argmax(1) == teacher_logits.argmax(1)).to(kl.dtype)
    if reduction == "elementmean":
        return -kl.mean() / student_logits.shape[1]
    return _reduce(-kl, reduction)


def js_divergence(a_logits: torch.Tensor, b_logits: torch.Tensor, *, T: float = 1.0,
                  reduction: str = "mean") -> torch.Tensor:
    """ADI's competition term as CMI's `criterions.jsdiv` and NVlabs' DeepInversion compute it:
    0.5 KL(M || P) + 0.5 KL(M || Q) with P, Q = softmax(a/T), softmax(b/T), M = (P + Q) / 2, and all three
    clamped to [0.01, 0.99] after M is formed. (Not the textbook 0.5 KL(P||M) + 0.5 KL(Q||M): at T = 3 the two
    differ by about 30%, and this one's gradient is larger.) `reduction="mean"` averages over the batch, as
    `F.kl_div(..., reduction="batchmean")` does there."""
    p, q = F.softmax(a_logits / T, dim=1), F.softmax(b_logits / T, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    per_sample = 0.5 * (F.kl_div(p.log(), m, reduction="none").sum(1) + F.kl_div(q.log(), m, reduction="none").sum(1))
    return _reduce(per_sample, reduction)


def contrastive_loss(local_proj: torch.Tensor, global_proj: torch.Tensor, *, T: float = 0.1,
                     n_current: int | None = None) -> torch.Tensor:
    """CMI's instance discrimination: each local view must pick its own global view among all others.

    Rows are L2-normalised projections of [current batch; cached negatives]. The mean over current rows and
    the mean over cached rows are added, so a large cache does not dilute the generator's gradient.
    """
    # (local / T) @ global^T: the same logits as (local @ global^T) / T, with the division on the N x d operand
    # instead of the N x N product (and its backward)
    logits = (local_proj / T) @ global_proj.detach().T
    ce = F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device), reduction="none")
    if n_current is None or n_current >= logits.shape[0]:
        return ce.mean()
    return ce[:n_current].mean() + ce[n_current:].mean()


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Spatial attention of a (N, C, H, W) feature map: channel mean of squares, flattened, L2-normalised."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], *,
                       reduction: str = "sum") -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis; ZSKT's beta term): per pair of stages of equal spatial size,
    the mean squared difference of the two attention maps; summed over the pairs."""
    if len(student_maps) != len(teacher_maps) or not student_maps:
        raise ValueError("attention_transfer needs one teacher map per student map, and at least one pair")
    terms = [(attention_map(s) - attention_map(t)).pow(2).mean() for s, t in zip(student_maps, teacher_maps)]
    return _reduce(torch.stack(terms), reduction)


def dafl_activation_loss(features: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """DAFL: -|features|, rewarding strong penultimate activations."""
    return _reduce(-features.abs(), reduction)


def dafl_balance_loss(logits: torch.Tensor, *, log_base: float = math.e) -> torch.Tensor:
    """DAFL's information-entropy term: sum p_mean log p_mean (minimised -> classes balanced over the batch).
    DAFL's own code takes log10 (`DAFL-train.py`); CMI's `class_balance_loss` (DFQ) the natural log."""
    p = F.softmax(logits, dim=1).mean(0)
    return (p * p.clamp_min(1e-12).log()).sum() / math.log(log_base)


TV_FORMS = ("l1", "l2")


def total_variation(x: torch.Tensor, *, form: str = "l1") -> torch.Tensor:
    """DeepInversion's total-variation prior over the 4 neighbour directions (right, down, and both diagonals).

    "l1": the sum over directions of the mean absolute difference (CMI's `get_image_prior_losses`, the form its
    DeepInversion/ADI presets weight); "l2": the sum over directions of the L2 norm of the differences (NVlabs'
    `loss_var_l2`)."""
    diffs = (x[:, :, :, :-1] - x[:, :, :, 1:], x[:, :, :-1, :] - x[:, :, 1:, :],
             x[:, :, 1:, :-1] - x[:, :, :-1, 1:], x[:, :, :-1, :-1] - x[:, :, 1:, 1:])
    if form == "l1":
        return sum(d.abs().mean() for d in diffs)
    if form == "l2":
        return sum(torch.linalg.vector_norm(d) for d in diffs)
    raise ValueError(f"unknown total-variation form {form!r}; choose one of {', '.join(TV_FORMS)}")
