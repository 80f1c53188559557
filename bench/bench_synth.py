"""Seconds per synthesis iteration: our engine vs the reference code's way of running the same step.

The reference code runs in the default NCHW layout, with the teacher's (and the student's) parameters trainable,
so every backward also computes their weight gradients; its BN hook copies every BN input
(`permute(1, 0, 2, 3).contiguous().view(C, -1)`) to take the variance; and it reads `loss.item()` at every
step to pick the best batch (a host sync). `ReferenceStyleIFHE` is the same IFHE iteration written that way;
a second row shows it with only the teacher frozen and the sync removed, to separate those two effects.

    python bench/bench_synth.py [--batch 64] [--repeats 10]
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from common import teacher, threads, timed
from ifhe.config import preset
from ifhe.heads import head_for
from ifhe.models import create_model
from ifhe import losses as L
from ifhe.data import random_crop_flip
from ifhe.hooks import BNStats
from ifhe.models.generator import Generator
from ifhe.synth import InversionSynthesizer


def build(t, method: str, batch: int, precision: str = "fp32"):
    synth, _ = preset(method, "cpu")
    synth = replace(synth, batch_size=batch, iterations=10 ** 6)
    student = create_model("wrn16_1", 10).to(memory_format=torch.channels_last)
    head = head_for(t, synth.h_stages, synth.h_hidden)
    s = InversionSynthesizer(synth, t, student, head, t.normalizer, 10, torch.device("cpu"), precision)
    s.start_round(0)
    return s


class ReferenceStyleIFHE:
    """The same IFHE iteration written the way the public reference code runs it: default (NCHW) layouts,
    teacher and student parameters left trainable, BN statistics from a permuted copy of each BN input,
    and `loss.item()` at every step to keep the best batch. The math is ifhe.losses'."""

    def __init__(self, teacher, batch: int, freeze_teacher: bool = False, sync: bool = True):
        import copy
        self.teacher = copy.deepcopy(teacher).to(memory_format=torch.contiguous_format)
        for p in self.teacher.parameters():
            p.requires_grad_(not freeze_teacher)
        self.student = create_model("wrn16_1", 10)
        self.head = head_for(teacher)
        self.gen = Generator(256)
        self.z = torch.randn(batch, 256, requires_grad=True)
        self.opt = torch.optim.Adam([{"params": self.gen.parameters()}, {"params": [self.z]}], 1e-3, betas=(0.5, 0.999))
        self.targets = torch.randint(0, 10, (batch,)).sort().values
        self.sync, self.best, self.best_x = sync, float("inf"), None
        self.stats, self.feats = [], {}
        for m in self.teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.register_forward_hook(self._bn)
        for name in ("block1", "block2", "block3"):
            getattr(self.teacher, name).register_forward_hook(
                lambda mod, i, o, name=name: self.feats.__setitem__(name, o.mean((2, 3))))

    def _bn(self, module, inputs, output):
        x = inputs[0]
        nch = x.shape[1]
        mean = x.mean([0, 2, 3])
        var = x.permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
        self.stats.append(BNStats(mean, var, module.running_mean, module.running_var))

    def step(self) -> None:
        self.stats = []
        x01 = self.gen(self.z)
        x = self.teacher.normalizer(random_crop_flip(x01))
        t_logits = self.teacher(x)
        s_logits = self.student(x)
        f = torch.cat([self.feats[n] for n in ("block1", "block2", "block3")], 1)
        loss = (0.5 * L.heterogeneity_ce(self.head(f), self.targets) + L.bn_stat_loss(self.stats)
                + 0.5 * L.masked_adversarial_kl(s_logits, t_logits))
        if self.sync:
            cost = loss.item()
            if cost < self.best:
                self.best, self.best_x = cost, x01.data
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


def reference_rows(t, batch: int, repeats: int) -> list[tuple[str, float]]:
    rows = []
    for name, kw in (("reference code's way, but teacher frozen and no per-step sync", dict(freeze_teacher=True, sync=False)),
                     ("reference code's way (NCHW, unfrozen teacher, per-step sync)", {})):
        r = ReferenceStyleIFHE(t, batch, **kw)
        rows.append((name, timed(r.step, repeats)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    n = threads()
    t, name = teacher()
    print(f"teacher {name}, student wrn16_1, batch {a.batch}, {n} threads")

    ours = build(t, "ifhe", a.batch)
    sec_ours = timed(ours.step, a.repeats)

    sec_bf16 = timed(build(t, "ifhe", a.batch, "bf16").step, a.repeats)
    rows = [("ours", sec_ours), ("ours, --precision bf16", sec_bf16)] + reference_rows(t, a.batch, a.repeats)
    for name, sec in rows:
        print(f"  IFHE iteration, {name:62s} {sec:.3f} s  ({sec / sec_ours:.2f}x ours)")
    ref = rows[-1][1]
    print(f"IFHE iteration: ours {sec_ours:.3f} s (fp32), {sec_bf16:.3f} s (bf16) vs the reference code's way "
          f"{ref:.3f} s -> {ref / sec_ours:.2f}x faster in fp32, {ref / sec_bf16:.2f}x in bf16")
    for method in ("deepinversion", "cmi", "fast", "dfq"):
        for precision in ("fp32", "bf16"):
            s = build(t, method, a.batch, precision)
            print(f"{method:14s} iteration, {precision}: {timed(s.step, a.repeats):.3f} s at batch {a.batch}")


if __name__ == "__main__":
    main()
