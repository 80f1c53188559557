"""Our side of the side-by-side benchmark against zju-vipa/CMI: an adapted copy of
../shared/bench-reference/harness_ours.py (same rows, same command line, same `RESULT {json}` records), with two
changes, so that the two sides compare like with like:

- the CMI row's memory has CMI's 40,960 rows (`cr_bank`, the reference preset's value; the cpu preset scales it
  to 10,240), 4,096 of them filled, and 4,096 negatives drawn per iteration, as CMI's `MemoryBank` does there;
- each record also gives the first iteration's time (`first_s`: what a compile, where it is on, costs) and
  whether the compiled passes are on (`compile`).

    python bench/bench_reference_ours.py --mode cmi --iters 10      # preset 'cmi', batch 64, 4096 negatives
    python bench/bench_reference_ours.py --mode deepinversion       # preset 'deepinversion'
    python bench/bench_reference_ours.py --mode adi                 # preset 'adi' (DeepInversion + JS, T=3)
    python bench/bench_reference_ours.py --mode kd --iters 30       # kd_step at batch 128, student only / with h

bench/bench_reference.py runs it next to CMI's own code (../shared/bench-reference/harness_cmi.py).
"""
from __future__ import annotations

import sys
sys.dont_write_bytecode = True

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from ifhe.config import preset  # noqa: E402
from ifhe.device import set_cpu_threads  # noqa: E402
from ifhe.distill import kd_step, make_kd_optimizer, prepare_batch  # noqa: E402
from ifhe.heads import DEFAULT_STAGES, head_for  # noqa: E402
from ifhe.models import create_model  # noqa: E402
from ifhe.synth import InversionSynthesizer  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def build_synth(t, method: str, batch: int = 64, negatives: int = 4096, bank_rows: int = 40960, fill: int = 4096,
                precision: str = "fp32", scale: str = "cpu"):
    """A started InversionSynthesizer for `method` at `batch`; returns its step function (the synthesizer is
    its `.synth` attribute)."""
    synth, _ = preset(method, scale)
    overrides = dict(batch_size=batch, iterations=10 ** 6)
    if synth.cr > 0 and negatives:
        overrides.update(cr_negatives=negatives, cr_bank=max(bank_rows, negatives))
    synth = replace(synth, **overrides)
    student = create_model("wrn16_1", 10).to(memory_format=torch.channels_last)
    head = head_for(t, synth.h_stages, synth.h_hidden)
    s = InversionSynthesizer(synth, t, student, head, t.normalizer, 10, torch.device("cpu"), precision)
    s.start_round(0)
    memory = s.term_states["cr"].memory if "cr" in s.term_states else None
    if memory is not None:
        # the memory as after earlier rounds' commit()s (random values; only the fill level sets the cost)
        cap, dim2 = memory.data.shape
        fill = min(fill, cap)
        done = 0
        while done < fill:
            n = min(synth.batch_size, fill - done)
            memory.add(torch.randn(n, dim2))
            done += n
    def step():
        return s.step()
    step.synth = s  # type: ignore[attr-defined]
    return step


def build_kd(t, batch: int = 128, with_head: bool = False, precision: str = "fp32"):
    student = create_model("wrn16_1", 10).to(memory_format=torch.channels_last)
    head = head_for(t) if with_head else None
    bank = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8)
    opt = make_kd_optimizer(student, head, 0.1, 0.9, 1e-4)

    def step():
        idx = torch.randint(0, len(bank), (batch,))
        x = prepare_batch(bank[idx], t.normalizer, torch.device("cpu"), augment=True)
        kd_step(student, head, t, x, opt, 20.0, DEFAULT_STAGES, precision)
    return step


def per_call(fn, iters: int, warmup: int) -> tuple[list[float], float]:
    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        if i == 0:
            first = time.perf_counter() - t0
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out, first


def emit(args, row, diffs, first, batch=None, extra=None):
    from ifhe.device import compile_enabled
    rec = dict(row=row + args.tag, impl="ours", median_s=median(diffs) if diffs else None, n=len(diffs),
               samples=[round(d, 5) for d in diffs], peak_rss_mb=round(peak_rss_mb(), 1),
               threads=torch.get_num_threads(), pid=os.getpid(), first_s=round(first, 3) if first else None,
               compile=compile_enabled(torch.device("cpu")))
    if batch:
        rec["batch"] = batch
        rec["images_per_s"] = batch / rec["median_s"] if rec["median_s"] else None
    rec.update(extra or {})
    print("RESULT " + json.dumps(rec), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


def run_synth(args, t):
    step = build_synth(t, args.mode, args.batch, args.negatives, args.cr_bank, args.bank, args.precision, args.scale)
    s = step.synth
    cfg = s.cfg
    extra = dict(preset=args.mode, scale=args.scale, batch=cfg.batch_size, precision=args.precision,
                 weights=dict(beta=cfg.beta, oh=cfg.oh, gamma=cfg.gamma, adv_kind=cfg.adv_kind, adv_T=cfg.adv_T,
                              cr=cfg.cr, tv=cfg.tv, alpha=cfg.alpha))
    memory = s.term_states["cr"].memory if "cr" in s.term_states else None
    if memory is not None:
        extra.update(negatives_per_iteration=min(memory.count, cfg.cr_negatives),
                     cr_negatives=cfg.cr_negatives, cr_bank=memory.data.shape[0],
                     feature_dim=memory.data.shape[1] // 2)
    diffs, first = per_call(step, args.iters, args.warmup)
    row = {"cmi": "synth_cmi", "deepinversion": "synth_deepinv_noadv", "adi": "synth_deepinv_adv"}[args.mode]
    emit(args, row, diffs, first, extra=extra)


def run_kd(args, t):
    for with_head, row, source in (
            (False, "kd_student_only", "uint8 bank in memory; crop/flip + normalize inside the timed step"),
            (True, "kd_with_h", "as kd_student_only, plus the head h trained on the same batch (engine default "
                                "distill.train_head=True)")):
        diffs, first = per_call(build_kd(t, args.kd_batch, with_head, args.precision), args.kd_iters, args.warmup)
        emit(args, row, diffs, first, batch=args.kd_batch, extra=dict(source=source, precision=args.precision))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True, choices=["cmi", "deepinversion", "adi", "kd"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--kd-iters", type=int, default=None, help="timed KD steps (default: --iters)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="synthesis batch size")
    ap.add_argument("--kd-batch", type=int, default=128)
    ap.add_argument("--scale", default="cpu", choices=["cpu", "reference"], help="preset scale")
    ap.add_argument("--negatives", type=int, default=4096,
                    help="cmi: cr_negatives (CMI's n_neg is 4096; our cpu preset ships 1024); 0 = preset's own")
    ap.add_argument("--cr-bank", type=int, default=40960, help="cmi: rows of the memory (CMI's bank_size)")
    ap.add_argument("--bank", type=int, default=4096, help="cmi: rows of the memory filled before timing")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="", help="suffix for the row name (e.g. a variant of a preset)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.kd_iters is None:
        args.kd_iters = args.iters
    set_cpu_threads(args.threads)   # and the allocator tuning every ifhe run gets
    torch.manual_seed(args.seed)
    from ifhe.zoo import resolve_teacher
    t = resolve_teacher("cifar10_wrn16_2")
    if args.mode == "kd":
        run_kd(args, t)
    else:
        run_synth(args, t)


if __name__ == "__main__":
    main()
