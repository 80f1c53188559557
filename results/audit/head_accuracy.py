"""Audit (issue 23, item 4): h's top-1 and the teacher's top-1 on the same 10,000 real CIFAR-10 test images.

The sweeps record h's accuracy on the runs' 2,000-image evaluation subset (config eval_images=2000,
`test.subset(2000, seed=0)`), while the teacher's 90.16% is on all 10,000. This script measures both on all
10,000 (and, for reference, on the same 2,000-image subset the runs used). Only head files that exist are
measured: the shipped h (pretrained/cifar10_wrn16_2.ifhe-head.safetensors, the head.safetensors of sweep a's
cell ifhe/seed1) and any results/**/head.safetensors committed with the sweeps (none at the time of writing).

Run:  IFHE_DATA=/work/shared/data python results/audit/head_accuracy.py > results/audit/head_accuracy.txt
"""
from __future__ import annotations

import glob
import hashlib
import platform
import subprocess
from pathlib import Path

import torch

from ifhe.checkpoint import load_tensors, load_weights_into
from ifhe.data import load_split
from ifhe.distill import evaluate_head
from ifhe.evaluation import evaluate
from ifhe.heads import head_for
from ifhe.zoo import load_teacher

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


def cpu_line() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    flags = Path("/proc/cpuinfo").read_text()
    bf16 = "yes" if " avx512_bf16" in flags else "no"
    return (f"machine: {model}, {len(__import__('os').sched_getaffinity(0))} usable cores, avx512_bf16 {bf16}, "
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, {platform.python_version()}")


def main() -> None:
    device = torch.device("cpu")
    print(cpu_line())
    teacher = load_teacher("cifar10_wrn16_2", device)
    test = load_split("cifar10", "test", None)
    sub = test.subset(2000, seed=0)     # the runs' evaluation subset (experiment.load_test_set)
    print(f"test set: {len(test)} real images; runs' evaluation subset: {len(sub)} images (subset seed 0)")
    t_all = evaluate(teacher, test, teacher.normalizer, device)
    t_sub = evaluate(teacher, sub, teacher.normalizer, device)
    print(f"teacher cifar10_wrn16_2 (sha256 {teacher.zoo_entry['sha256'][:12]}): "
          f"top-1 {t_all:.2f}% on {len(test)}, {t_sub:.2f}% on the {len(sub)}-image subset")
    heads = [ROOT / "pretrained" / teacher.zoo_entry["head"]["file"]]
    heads += [Path(p) for p in sorted(glob.glob(str(ROOT / "results" / "**" / "head.safetensors"), recursive=True))]
    for path in heads:
        tensors, meta = load_tensors(str(path))
        stages = tuple(meta.get("stages", ("block1", "block2", "block3")))
        head = head_for(teacher, stages, int(meta.get("hidden", 256))).to(device)
        load_weights_into(head, tensors, str(path))
        head.eval()
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        a_all = evaluate_head(head, teacher, test, teacher.normalizer, device, stages)
        a_sub = evaluate_head(head, teacher, sub, teacher.normalizer, device, stages)
        print(f"h {path.relative_to(ROOT)} (sha256 {sha[:12]}, stages {'+'.join(stages)}, "
              f"header head_acc {meta.get('head_acc')}): top-1 {a_all:.2f}% on {len(test)} "
              f"(teacher - h = {t_all - a_all:+.2f} points), {a_sub:.2f}% on the {len(sub)}-image subset")
    if len(heads) == 1:
        print("no results/**/head.safetensors is committed: the other sweep cells' h can only be quoted on the "
              "2,000-image subset their runs recorded")


if __name__ == "__main__":
    main()
