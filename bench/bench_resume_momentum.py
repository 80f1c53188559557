"""What resuming without the momentum costs: one training checkpoint (with its full momentum) continued twice for
the same number of steps, once as it is and once with the momentum dropped and rebuilt (`--momentum none`, README
"Resumable from git"); printed: the training loss and test accuracy each ends with.

    python bench/bench_resume_momentum.py --checkpoint runs/teachers/cifar10_vgg11_bn/checkpoint.safetensors \\
        --steps 195 --threads 2 > results/teachers/resume-momentum.txt
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import torch

from common import machine
from ifhe.checkpoint import load_state, save_state
from ifhe.train import TrainConfig, train_classifier


def continued(checkpoint: Path, folder: Path, drop_momentum: bool, steps: int, data: str | None) -> dict:
    state, meta = load_state(checkpoint)
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in meta["config"].items() if k in names})
    if drop_momentum:
        state["optimizer"] = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
    folder.mkdir(parents=True)
    save_state(folder / "checkpoint.safetensors", state, meta)
    start = state["step"]
    r = train_classifier(cfg, folder, data=data, resume=True, progress=False, max_steps=start + steps)
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()] \
        if (folder / "metrics.jsonl").exists() else []
    return {"from_step": start, "to_step": r["step"], "test_acc": r["test_acc"],
            "last_epoch_record": log[-1] if log else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--steps", type=int, default=195)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"# resume with and without the momentum: {machine()}, {a.threads} threads, {a.steps} steps\n")
    tmp = Path(tempfile.mkdtemp())
    try:
        for name, drop in (("momentum kept (exact resume)", False), ("momentum dropped, rebuilt", True)):
            r = continued(Path(a.checkpoint), tmp / name.split()[1], drop, a.steps, a.data)
            print(f"{name}: steps {r['from_step']} -> {r['to_step']}, test top-1 {r['test_acc']:.2f}%, "
                  f"last epoch's record {json.dumps(r['last_epoch_record'])}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
