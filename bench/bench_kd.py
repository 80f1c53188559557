"""KD throughput (images per second) for WRN-16-2 -> WRN-16-1: student and head h trained on bank batches
(fp32, and with --precision bf16's forward passes).

    python bench/bench_kd.py [--batch 128] [--repeats 10]
"""
from __future__ import annotations

import argparse

import torch

from common import teacher, threads, timed
from ifhe.distill import kd_step, make_kd_optimizer, prepare_batch
from ifhe.heads import DEFAULT_STAGES, head_for
from ifhe.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    n = threads()
    t, name = teacher()
    student = create_model("wrn16_1", 10).to(memory_format=torch.channels_last)
    head = head_for(t)
    opt = make_kd_optimizer(student, head, 0.1, 0.9, 1e-4)
    bank = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8)

    def step(with_head=True, precision="fp32"):
        idx = torch.randint(0, len(bank), (a.batch,))
        x = prepare_batch(bank[idx], t.normalizer, torch.device("cpu"), augment=True)
        kd_step(student, head if with_head else None, t, x, opt, 20.0, DEFAULT_STAGES, precision)

    sec = timed(step, a.repeats)
    sec_no_h = timed(lambda: step(False), a.repeats)
    sec_bf16 = timed(lambda: step(True, "bf16"), a.repeats)
    print(f"teacher {name}, {n} threads, batch {a.batch}: KD {a.batch / sec:.0f} images/s with h, "
          f"{a.batch / sec_no_h:.0f} images/s student only, {a.batch / sec_bf16:.0f} images/s with h in bf16 "
          f"(reference code: 168 images/s)")


if __name__ == "__main__":
    main()
