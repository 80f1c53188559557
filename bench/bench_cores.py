"""Two cores: intra-op threads against a two-stage pipeline (synthesis of round r+1 beside KD of round r).

    python bench/bench_cores.py --precision bf16 > results/speed/cores.txt   (on an otherwise idle machine)

Times a synthesis step and a KD step of each method's CPU preset (shipped teacher, WRN-16-1 student, batch 64)
at 1 and at 2 intra-op threads. With per-round costs S (synthesis) and K (KD), a round takes S2 + K2 with both
threads inside each pass; a pipeline with one thread per stage, the two stages overlapping, takes at best
max(S1, K1) a round (and costs a copy of the student for the adversarial term, and a bank one round behind).
Printed: both, and the pipeline's best possible gain. Figures only.

Under the budget rule (README "Budgets": KD gets `--kd-share` of the time, 0.8 in the sweeps) the two are compared
by what a second of the run buys: KD steps and synthesized images per second, with 2 intra-op threads (share of
the time in each stage at 2-thread speed) and in the pipeline at best (each stage one thread, all of the time).
"""
from __future__ import annotations

import argparse

import torch

from common import machine
from ifhe.config import make_config
from ifhe.distill import kd_step, make_kd_optimizer
from ifhe.heads import head_for
from ifhe.models import create_model
from ifhe.synth import synthesizer_for
from ifhe.zoo import resolve_teacher


def per_step(fn, reps: int) -> float:
    import time
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def costs(teacher, method: str, precision: str, reps: int) -> tuple[float, float, int, int]:
    cfg = make_config(method)
    s = synthesizer_for(method, teacher, precision=precision)
    s.start_round(0)
    synth = per_step(s.step, reps)
    student = create_model("wrn16_1", 10).to(memory_format=torch.channels_last)
    head = head_for(teacher)
    opt = make_kd_optimizer(student, head, 0.1, 0.9, 1e-4)
    x = torch.randn(cfg.distill.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    kd = per_step(lambda: kd_step(student, head, teacher, x, opt, 20.0, cfg.synth.h_stages, precision), reps)
    return synth, kd, cfg.synth.iterations, cfg.distill.steps_per_round


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["ifhe", "cmi", "fast", "nayer", "deepinversion"])
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--kd-share", type=float, default=0.8, help="the budget rule's KD share of the time")
    a = ap.parse_args()
    teacher = resolve_teacher("cifar10_wrn16_2")
    print(f"# intra-op threads vs a synthesis/KD pipeline: {machine()}, {a.precision}\n")
    share = a.kd_share
    print("| method | synth step 1t / 2t (s) | KD step 1t / 2t (s) | intra-op speed-up | round, 2 threads (s) | "
          "round, pipeline at best (s) | pipeline's best gain | "
          f"KD share {share:g}: KD steps/s, 2 threads / pipeline | images/s, 2 threads / pipeline |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in a.methods:
        res = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            res[n] = costs(teacher, method, a.precision, a.reps)
        (s1, k1, it, kd), (s2, k2, _, _) = res[1], res[2]
        round1, round2 = it * s1 + kd * k1, it * s2 + kd * k2
        pipe = max(it * s1, kd * k1)
        batch = make_config(method).synth.batch_size
        kd_rate = f"{share / k2:.2f} / {1 / k1:.2f}"
        image_rate = f"{(1 - share) * batch / (it * s2):.1f} / {batch / (it * s1):.1f}"
        print(f"| {method} | {s1:.3f} / {s2:.3f} | {k1:.3f} / {k2:.3f} | {round1 / round2:.2f}x | {round2:.2f} | "
              f"{pipe:.2f} | {round2 / pipe:.2f}x | {kd_rate} | {image_rate} |", flush=True)


if __name__ == "__main__":
    main()
