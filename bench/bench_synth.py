"""Seconds per synthesis iteration: our engine vs the reference code's way of running the same step.

The reference runs with the teacher's parameters trainable (so every backward also computes weight gradients
of the teacher) and reads `loss.item()` at every step to pick the best batch (a host sync). We run the same
IFHE step both ways, and time DeepInversion and CMI iterations too.

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
from ifhe.synth import InversionSynthesizer


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

    def reference_style_step():
        rep = ref.step()
        cost = rep.losses["total"].item()  # per-step host sync, as the reference code does
        best[0] = min(best[0], cost)

    for p in t.parameters():  # the reference leaves the teacher trainable
        p.requires_grad_(True)
    sec_ref = timed(reference_style_step, a.repeats)
    for p in t.parameters():
        p.requires_grad_(False)
    print(f"IFHE iteration: ours {sec_ours:.3f} s, reference-style (unfrozen teacher, per-step sync) "
          f"{sec_ref:.3f} s -> {sec_ref / sec_ours:.2f}x faster")
    for method in ("deepinversion", "cmi", "fast", "dfq"):
        s = build(t, method, a.batch)
        print(f"{method:14s} iteration: {timed(s.step, a.repeats):.3f} s at batch {a.batch}")


if __name__ == "__main__":
    main()
