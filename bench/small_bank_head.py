"""How well h knows its job in the Feature space page's small IFHE bank: a random h at the first round (the
paper's start) against the h shipped with the teacher (synth.h_init=pretrained, what the page uses).

Each bank is the page's: the CPU IFHE preset, 3 rounds of 64 images, synthesis only, h learning alone 20 steps a
round. Prints, per start and seed, h's agreement with the teacher on each round's batch during synthesis (the
figure the app shows next to the grid), then over the finished bank: h(f_T) = t (h meets L_H's target),
T = t, h = T, and h's top-1 on the real test set after the run; and the seconds per bank.

    python bench/small_bank_head.py [--seeds 3] [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import machine, teacher, threads
from ifhe.config import make_config, preset
from ifhe.data import load_split
from ifhe.distill import evaluate_head
from ifhe.experiment import Run, SynthStep, run_to_end
from ifhe.hooks import FeatureTap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.features_data import SMALL_BANK  # noqa: E402


def small_bank(seed: int, h_init: str, out: Path, teacher_name: str):
    s, _ = preset("ifhe", "cpu")
    cfg = make_config("ifhe", "cpu", {"batch_size": SMALL_BANK["batch"], "h_init": h_init, "iterations": s.iterations},
                      {"steps_per_round": 0}, teacher=teacher_name, student="wrn16_1", rounds=SMALL_BANK["rounds"],
                      seed=seed, log_every=1, preview_every=0)
    agree: dict[int, list[float]] = {}

    def on_event(e):
        if isinstance(e, SynthStep) and e.metrics and "h_agree" in e.metrics:
            agree.setdefault(e.round, []).append(float(e.metrics["h_agree"]))

    run = Run(cfg, out, test_set=None)
    t0 = time.perf_counter()
    run_to_end(run, on_event)
    return run, agree, time.perf_counter() - t0


def bank_agreement(run) -> dict[str, float]:
    x = run.teacher.normalizer(run.bank.images.float().div(255)).contiguous(memory_format=torch.channels_last)
    t = run.bank.labels
    with torch.no_grad(), FeatureTap(run.teacher, run.cfg.synth.h_stages) as tap:
        t_pred = run.teacher(x).argmax(1)
        h_pred = run.head(tap.concat()).argmax(1)
    pct = lambda m: 100.0 * float(m.float().mean())  # noqa: E731
    return {"h=t": pct(h_pred == t), "T=t": pct(t_pred == t), "h=T": pct(h_pred == t_pred)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    t, name = teacher()
    test = load_split("cifar10", "test", a.data).subset(2000, 0)
    print(f"{machine()}, {threads()} threads; teacher {name}; bank: {SMALL_BANK['rounds']} rounds of "
          f"{SMALL_BANK['batch']}, IFHE CPU preset, synthesis only")
    print("start       seed  h=T per round (synthesis, mean of iterations)   bank: h=t   T=t   h=T   "
          "h real top-1   s/bank")
    for h_init in ("", "pretrained"):
        for seed in range(a.seeds):
            with tempfile.TemporaryDirectory() as out:
                run, agree, secs = small_bank(seed, h_init, Path(out), name)
                b = bank_agreement(run)
                real = evaluate_head(run.head.eval(), run.teacher, test, run.teacher.normalizer, run.device,
                                     run.cfg.synth.h_stages)
            rounds = "  ".join(f"r{r}: {100 * sum(v) / len(v):5.1f}%" for r, v in sorted(agree.items()))
            print(f"{h_init or 'random':11s} {seed:4d}  {rounds:45s}  {b['h=t']:5.1f}% {b['T=t']:5.1f}% "
                  f"{b['h=T']:5.1f}%  {real:6.2f}%       {secs:5.0f}")


if __name__ == "__main__":
    main()
