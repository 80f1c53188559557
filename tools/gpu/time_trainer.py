"""Seconds per step of the project's own trainer (`ifhe.train.train_classifier`, as `ifhe train-teacher` runs
it), and how many epochs fit in a time limit. Three short runs: a first of `warmup` steps (it pays for the
CUDA start, as `ifhe train-teacher` does), then runs of `warmup` and `warmup + steps` steps, whose difference
is the steady step time; what the first run spends besides its steps (and this script's imports) is the fixed
cost (imports, data, model, CUDA start, final evaluation).

    python tools/gpu/time_trainer.py --arch wrn40_2 [--steps 100] [--limit-s 540] [--epochs 30] [--json t.json]

Needs $IFHE_DATA (or --data) with cifar10-{train,test}.npz. Each epoch's evaluation on the test set there (2,000
images after `pack_data.py unpack`) is counted as a third of a training step per batch of test images.
"""
from __future__ import annotations

import time

IMPORT_START = time.perf_counter()  # `ifhe train-teacher` pays for its imports too

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import fields  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ifhe.data import load_split  # noqa: E402
from ifhe.train import TrainConfig, train_classifier  # noqa: E402

IMPORT_S = time.perf_counter() - IMPORT_START


def measure(arch: str, batch_size: int, steps: int, warmup: int, data: str | None, device: str | None,
            precision: str | None = None) -> dict:
    options = {"arch": arch, "batch_size": batch_size}
    if precision and "precision" in {f.name for f in fields(TrainConfig)}:
        options["precision"] = precision  # once train.py has the option
    cfg = TrainConfig(**options)
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, n in enumerate((warmup, warmup, warmup + steps)):
            t0 = time.perf_counter()
            train_classifier(cfg, Path(tmp) / str(i), data, device=device, progress=False, max_steps=n)
            seconds.append(time.perf_counter() - t0)
    per_step = (seconds[2] - seconds[1]) / steps
    if per_step <= 0:  # too few steps to see past the noise: the longer run's mean is an upper bound
        per_step = seconds[2] / (warmup + steps)
    n_train, n_test = len(load_split("cifar10", "train", data)), len(load_split("cifar10", "test", data))
    steps_per_epoch = n_train // batch_size
    eval_s = per_step / 3 * n_test / batch_size  # a forward pass is about a third of a training step
    return {"arch": arch, "batch_size": batch_size, "options": options, "seconds_per_step": per_step,
            "fixed_s": IMPORT_S + max(0.0, seconds[0] - warmup * per_step), "steps_per_epoch": steps_per_epoch,
            "runs_s": seconds,
            "epoch_s": steps_per_epoch * per_step + eval_s}


def epochs_that_fit(t: dict, limit_s: float, margin_s: float = 30.0) -> int:
    return max(0, int((limit_s - margin_s - t["fixed_s"]) // t["epoch_s"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="wrn40_2")
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--precision", help="passed on once TrainConfig has a precision setting")
    ap.add_argument("--device")
    ap.add_argument("--data")
    ap.add_argument("--limit-s", dest="limit_s", type=float, default=540.0)
    ap.add_argument("--epochs", type=int, help="also print the expected time of this many epochs")
    ap.add_argument("--json")
    a = ap.parse_args()
    t0 = time.perf_counter()
    t = measure(a.arch, a.batch_size, a.steps, a.warmup, a.data, a.device, a.precision)
    t["limit_s"] = a.limit_s
    t["epochs_fit"] = epochs_that_fit(t, a.limit_s - (time.perf_counter() - t0))  # this timing counts too
    print(f"trainer {a.arch} batch {a.batch_size} {t['options']}: {1000 * t['seconds_per_step']:.1f} ms per step, "
          f"{t['epoch_s']:.1f} s per epoch ({t['steps_per_epoch']} steps), {t['fixed_s']:.1f} s fixed", flush=True)
    print(f"trainer: {t['epochs_fit']} epochs fit in the {a.limit_s:.0f} s given (this timing and 30 s kept)")
    if a.epochs:
        t["expected_s"] = t["fixed_s"] + a.epochs * t["epoch_s"]
        print(f"trainer: {a.epochs} epochs expected to take {t['expected_s']:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(t, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
