"""Seconds per synthesis iteration: our engine vs the reference code's way of running the same step.

The reference runs with the teacher's (and the student's) parameters trainable, so every backward also computes
their weight gradients; its BN hook copies every BN input (`permute(1, 0, 2, 3).contiguous().view(C, -1)`)
to take the variance; and it reads `loss.item()` at every step to pick the best batch (a host sync). We run
the same IFHE step both ways, adding the reference's habits one at a time, and time the other methods too.

    python bench/bench_synth.py [--batch 64] [--repeats 10]
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import replace

import torch

from common import teacher, threads, timed
from ifhe.config import preset
from ifhe.heads import head_for
from ifhe.models import create_model
from ifhe.hooks import BNStatHook, BNStats
from ifhe.synth import InversionSynthesizer, no_param_grads


def build(t, method: str, batch: int):
    synth, _ = preset(method, "cpu")
    synth = replace(synth, batch_size=batch, iterations=10 ** 6)
    student = create_model("wrn16_1", 10).to(memory_format=torch.channels_last)
    head = head_for(t, synth.h_stages, synth.h_hidden)
    s = InversionSynthesizer(synth, t, student, head, t.normalizer, 10, torch.device("cpu"))
    s.start_round(0)
    return s


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

    ref = build(t, "ifhe", a.batch)
    best = [float("inf")]

    def synced_step():
        rep = ref.step()
        best[0] = min(best[0], rep.losses["total"].item())  # per-step host sync, as the reference code does

    def reference_bn_record(self, module, inputs, output):
        x = inputs[0]
        nch = x.shape[1]
        mean = x.mean([0, 2, 3])
        var = x.permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
        self.stats.append(BNStats(mean, var, module.running_mean, module.running_var,
                                  x.mean((2, 3)) if self.instance_means else None))

    rows = [("ours (frozen teacher, no per-step sync)", sec_ours)]
    rows.append(("+ per-step loss.item()", timed(synced_step, a.repeats)))
    for p in t.parameters():  # the reference leaves the teacher trainable
        p.requires_grad_(True)
    rows.append(("+ unfrozen teacher", timed(synced_step, a.repeats)))
    for p in ref.student.parameters():
        p.requires_grad_(True)
    import ifhe.synth.inversion as inv
    saved = inv.no_param_grads
    inv.no_param_grads = lambda *m: contextlib.nullcontext()  # the reference keeps student weight grads on
    rows.append(("+ student weights trainable during synthesis", timed(synced_step, a.repeats)))
    saved_record = BNStatHook._record
    BNStatHook._record = reference_bn_record
    rows.append(("+ BN hook copying each input (reference code)", timed(synced_step, a.repeats)))
    BNStatHook._record = saved_record
    inv.no_param_grads = saved
    for p in t.parameters():
        p.requires_grad_(False)
    for name, sec in rows:
        print(f"  IFHE iteration {name:48s} {sec:.3f} s  ({sec / sec_ours:.2f}x ours)")
    print(f"IFHE iteration: ours {sec_ours:.3f} s vs the reference's way {rows[-1][1]:.3f} s -> "
          f"{rows[-1][1] / sec_ours:.2f}x faster")
    for method in ("deepinversion", "cmi", "fast", "dfq"):
        s = build(t, method, a.batch)
        print(f"{method:14s} iteration: {timed(s.step, a.repeats):.3f} s at batch {a.batch}")


if __name__ == "__main__":
    main()
