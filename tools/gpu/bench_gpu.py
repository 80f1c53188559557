"""Images per second of the engine's inner loops on a GPU (bench/ times the CPU: no device flag, no CUDA sync).

Rows: an IFHE synthesis iteration (reference preset: generator + z, student, h) at batch 64 and 256; a KD step
(student + h) at batch 128 and 256, with the bank on the CPU (as `Run` keeps it) and on the GPU; and a
supervised training step of the paper's teacher as `ifhe/train.py` runs it today (data on the CPU, fp32, two
host syncs a step) against data held on the GPU, bf16 and cudnn.benchmark (what train.py lacks). Each in fp32
and bf16, with the shipped WRN-16-2 teacher and a random WRN-40-2 (the paper's teacher; speed only).

    python tools/gpu/bench_gpu.py [--device cuda] [--json bench.json] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ifhe.config import preset  # noqa: E402
from ifhe.data import Normalizer, normalization, random_crop_flip, to_unit  # noqa: E402
from ifhe.device import autocast, fast_layout, pick_device  # noqa: E402
from ifhe.distill import kd_step, make_kd_optimizer, prepare_batch  # noqa: E402
from ifhe.heads import DEFAULT_STAGES, head_for  # noqa: E402
from ifhe.models import create_model  # noqa: E402
from ifhe.synth import InversionSynthesizer  # noqa: E402
from ifhe.catalog import available  # noqa: E402
from ifhe.zoo import random_teacher, resolve_teacher  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def timed(fn, dev: torch.device, repeats: int, warmup: int) -> float:
    """Mean seconds per call, the device drained before and after."""
    for _ in range(warmup):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - t0) / repeats


def teachers(dev: torch.device) -> list[tuple[str, torch.nn.Module]]:
    out = [("cifar10_wrn16_2", resolve_teacher("cifar10_wrn16_2", device=dev))] if "cifar10_wrn16_2" in available() \
        else []
    torch.manual_seed(0)
    return out + [("random wrn40_2", random_teacher("wrn40_2", device=dev))]


def student_and_head(t, dev):
    return fast_layout(create_model("wrn16_1", 10).to(dev)), head_for(t).to(dev)


def synth_step(t, dev, batch: int, precision: str):
    cfg = replace(preset("ifhe", "reference")[0], batch_size=batch, iterations=10 ** 6)
    student, head = student_and_head(t, dev)
    s = InversionSynthesizer(cfg, t, student, head, t.normalizer, 10, dev, precision)
    s.start_round(0)
    return s.step


def kd(t, dev, batch: int, precision: str, bank_device: str):
    student, head = student_and_head(t, dev)
    opt = make_kd_optimizer(student, head, 0.1, 0.9, 1e-4)
    bank = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8, device=dev if bank_device == "gpu" else "cpu")

    def step():
        idx = torch.randint(0, len(bank), (batch,), device=bank.device)
        x = prepare_batch(bank[idx], t.normalizer, dev, augment=True)
        kd_step(student, head, t, x, opt, 20.0, DEFAULT_STAGES, precision)
    return step


def train_step(arch: str, dev, batch: int, precision: str, data_on_gpu: bool, sync: bool, n: int):
    """One step of ifhe/train.py's loop; `data_on_gpu`, `precision` and `sync` are the switches it lacks."""
    torch.manual_seed(0)
    model = fast_layout(create_model(arch, 10).to(dev))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    norm = Normalizer(*normalization("cifar10")).to(dev)
    where = dev if data_on_gpu else torch.device("cpu")
    x_all = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8).to(where)
    y_all = torch.randint(0, 10, (n,)).to(where)
    aug, perm, state = torch.Generator().manual_seed(0), torch.randperm(n), {"i": 0}

    def step():
        i = state["i"] % (n // batch)
        state["i"] += 1
        idx = perm[i * batch:(i + 1) * batch]
        xb = random_crop_flip(x_all[idx], generator=aug).to(dev, non_blocking=True)
        yb = y_all[idx].to(dev, non_blocking=True)
        xb = norm(to_unit(xb)).contiguous(memory_format=torch.channels_last)
        with autocast(dev, precision):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sync:  # train.py reads the loss and the correct count back every step
            loss.detach().cpu(), (logits.argmax(1) == yb).sum().cpu()
    return step


def cpu_reference() -> list[str]:
    """The CPU figures recorded in results/bench.txt (another machine: bench/ on the 2-core box)."""
    path = ROOT / "results" / "bench.txt"
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.startswith("IFHE iteration: ours") or ": KD " in line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="default: cuda when present")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--quick", action="store_true", help="tiny batches and repeats (a dry run on a CPU)")
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    dev = pick_device(a.device)
    reps, warm = (2, 1) if a.quick else (a.repeats, 3)
    synth_batches, kd_batches, train_n = ((8,), (8,), 256) if a.quick else ((64, 256), (128, 256), 50_000)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {dev} ({name}), torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.get_num_threads()} CPU threads", flush=True)
    rows = []

    def row(kind: str, what: str, batch: int, precision: str, fn) -> None:
        sec = timed(fn, dev, reps, warm)
        rows.append({"kind": kind, "what": what, "batch": batch, "precision": precision, "seconds": sec,
                     "images_per_s": batch / sec})
        print(f"{kind:6s} {what:46s} batch {batch:4d} {precision}: {1000 * sec:8.2f} ms  {batch / sec:9.0f} img/s",
              flush=True)

    for tname, t in teachers(dev):
        for b in synth_batches:
            for p in PRECISIONS:
                row("synth", f"IFHE iteration, teacher {tname}", b, p, synth_step(t, dev, b, p))
        for b in kd_batches:
            for p in PRECISIONS:
                for bank in ("cpu", "gpu"):
                    row("kd", f"KD step + h, teacher {tname}, bank on {bank}", b, p, kd(t, dev, b, p, bank))
    tb = 8 if a.quick else 128
    variants = [("as train.py: data on CPU, sync each step", "fp32", False, True, False),
                ("data on GPU, no sync", "fp32", True, False, False),
                ("data on GPU, no sync", "bf16", True, False, False),
                ("data on GPU, no sync, cudnn.benchmark", "bf16", True, False, True)]
    for what, p, on_gpu, sync, bench in variants:
        torch.backends.cudnn.benchmark = bench
        row("train", f"wrn40_2 step, {what}", tb, p, train_step("wrn40_2", dev, tb, p, on_gpu, sync, train_n))
    torch.backends.cudnn.benchmark = False
    steps_per_epoch = 50_000 // tb
    print(f"train epoch of wrn40_2 at batch {tb} ({steps_per_epoch} steps, evaluation excluded): " + ", ".join(
        f"{r['what'].split(', ', 1)[1]} {r['precision']} {r['seconds'] * steps_per_epoch:.1f} s"
        for r in rows if r["kind"] == "train"))
    ref = cpu_reference()
    if ref:
        print("CPU reference (results/bench.txt, the 2-core box, another machine):\n  " + "\n  ".join(ref))
    if a.json:
        Path(a.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows,
                                            "cpu_reference": ref}, indent=1) + "\n")


if __name__ == "__main__":
    main()
