"""bf16 against fp32 on the shipped teacher: the synthesis losses and their gradients at the same state, per
method, and the seconds of one synthesis step and one KD step in each precision.

    python bench/bench_precision.py --threads 1 > results/precision/gradients.txt

For each method a synthesizer is built twice from the same seed (same generator or pixels, same z, same
augmentation draws); one step runs in fp32, one in bf16 (forward passes under autocast, losses in fp32). Printed:
every loss term's relative difference, and the cosine similarity and relative L2 difference of the gradient on
what the optimizer moves (the generator's parameters and z, or the pixels). Figures, never asserted here;
tests/test_precision.py holds the tolerances.
"""
from __future__ import annotations

import argparse
import time

import torch

from common import machine
from ifhe.distill import kd_step, make_kd_optimizer
from ifhe.models import create_model
from ifhe.synth import synthesizer_for
from ifhe.zoo import resolve_teacher

METHODS = ("ifhe", "cmi", "fast", "nayer", "deepinversion", "adi")


def moved(s) -> list[torch.Tensor]:
    """What the images' optimizer moves: the pixels, or the generator's parameters (and z)."""
    param = s.param
    if getattr(param, "x", None) is not None and param.generator is None:
        return [param.x]
    g = getattr(param, "fast", None) or param.generator
    out = [p for p in g.parameters() if p.requires_grad]
    z = getattr(param, "z", None)
    return out + ([z] if z is not None else [])


def one_step(teacher, method: str, precision: str, batch: int, seed: int):
    torch.manual_seed(seed)
    s = synthesizer_for(method, teacher, precision=precision, batch_size=batch, iterations=2)
    s.start_round(0)
    t = time.perf_counter()
    rep = s.step()
    seconds = time.perf_counter() - t
    grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in moved(s)])
    return rep, grads, seconds


def kd_seconds(teacher, precision: str, batch: int, reps: int = 5) -> float:
    torch.manual_seed(0)
    student = create_model("wrn16_1", 10).to(memory_format=torch.channels_last)
    opt = make_kd_optimizer(student, None, 0.1, 0.9, 1e-4)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    kd_step(student, None, teacher, x, opt, 20.0, (), precision)
    t = time.perf_counter()
    for _ in range(reps):
        kd_step(student, None, teacher, x, opt, 20.0, (), precision)
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"# bf16 vs fp32 on the shipped teacher: {machine()}, {a.threads} thread(s), batch {a.batch}\n")
    teacher = resolve_teacher("cifar10_wrn16_2")
    print("| method | seed | term | fp32 | bf16 | relative difference |")
    print("|---|---|---|---|---|---|")
    grads_rows, secs = [], {}
    for method in a.methods:
        for seed in range(a.seeds):
            r32, g32, s32 = one_step(teacher, method, "fp32", a.batch, seed)
            r16, g16, s16 = one_step(teacher, method, "bf16", a.batch, seed)
            for k, v in r32.losses.items():
                w = float(r16.losses[k])
                print(f"| {method} | {seed} | {k} | {float(v):.5g} | {w:.5g} | "
                      f"{abs(w - float(v)) / max(abs(float(v)), 1e-12):.4f} |")
            cos = float(torch.nn.functional.cosine_similarity(g32, g16, dim=0))
            rel = float((g32 - g16).norm() / g32.norm().clamp_min(1e-12))
            grads_rows.append((method, seed, cos, rel))
            secs.setdefault(method, []).append((s32, s16))
    print("\n| method | seed | gradient cosine similarity | gradient relative L2 difference |")
    print("|---|---|---|---|")
    for method, seed, cos, rel in grads_rows:
        print(f"| {method} | {seed} | {cos:.4f} | {rel:.4f} |")
    print("\n| pass | fp32 s | bf16 s | bf16 / fp32 |")
    print("|---|---|---|---|")
    for method, pairs in secs.items():   # the first step of a fresh synthesizer (allocations included)
        f, b = min(p[0] for p in pairs), min(p[1] for p in pairs)
        print(f"| synthesis step, {method} (first of a round) | {f:.3f} | {b:.3f} | {b / f:.2f} |")
    f, b = kd_seconds(teacher, "fp32", a.batch), kd_seconds(teacher, "bf16", a.batch)
    print(f"| KD step, WRN-16-1 student, batch {a.batch} | {f:.3f} | {b:.3f} | {b / f:.2f} |")


if __name__ == "__main__":
    main()
