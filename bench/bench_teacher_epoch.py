"""What a teacher training costs on this machine, before starting one: the seconds of one `ifhe train-teacher`
step (forward, backward, SGD update; channels_last; batch 256) in fp32 and in bf16, and the wall minutes of an
epoch and of a whole recipe they imply.

    python bench/bench_teacher_epoch.py --archs wrn40_2 vgg11_bn --threads 2 --epochs 60

An estimate from the median of a few steps: the real epoch adds data loading, augmentation and the test-set
evaluation (a few percent on the runs of README "The fast recipe"), and a shared host drifts during hours.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import machine, set_cpu_threads, timed
from ifhe.device import autocast, fast_layout
from ifhe.models import create_model

TRAIN_IMAGES = 50_000


def step_seconds(arch: str, precision: str, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = fast_layout(create_model(arch, 10)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (batch,))

    def step():
        with autocast(x.device, precision):
            out = model(x)
        loss = F.cross_entropy(out.float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["wrn40_2"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    set_cpu_threads(a.threads)
    print(f"# {machine()}, {a.threads} threads, batch {a.batch_size}")
    steps = -(-TRAIN_IMAGES // a.batch_size)
    for arch in a.archs:
        for precision in ("fp32", "bf16"):
            s = step_seconds(arch, precision, a.batch_size, a.repeats)
            epoch = s * steps / 60
            print(f"{arch:9s} {precision}: {s:.3f} s/step, {epoch:.2f} wall min/epoch, {a.epochs} epochs "
                  f"{epoch * a.epochs / 60:.1f} wall h ({epoch * a.epochs * a.threads / 60:.1f} CPU-h)")


if __name__ == "__main__":
    main()
