"""Where the time of one iteration goes, per op (torch.profiler), for the rows of the side-by-side benchmark
against zju-vipa/CMI (../shared/bench-reference/): CMI synthesis at batch 64 with 4,096 negatives, DeepInversion
with and without its JS term (our `adi` and `deepinversion`), and a KD step at batch 128.

The rows are built as bench/bench_reference_ours.py builds them. Ops are grouped into categories (convolutions,
BatchNorm, BN statistics, matmuls, elementwise, optimizer, copies/layout, ...); "Python + dispatch" is the wall
time of the profiled iterations minus the self time of every op the profiler saw.

    python bench/profile_rows.py [--rows cmi adi deepinversion kd] [--iters 3] [--top 25] [--compile 0|1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reference_ours import build_kd, build_synth  # noqa: E402
from common import machine  # noqa: E402

# (category, predicate on the op name); first match wins
CATEGORIES = [
    ("optimizer (Adam/SGD)", lambda n: n.startswith("aten::_foreach") or n.startswith("aten::_fused_adam")
     or n in ("aten::addcmul_", "aten::addcdiv_", "aten::lerp_", "aten::sqrt")),
    ("convolution fwd", lambda n: n in ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution",
                                        "aten::_nnpack_spatial_convolution", "aten::thnn_conv2d",
                                        "aten::_slow_conv2d_forward", "aten::conv2d")),
    ("convolution bwd", lambda n: "convolution_backward" in n or n.startswith("aten::_slow_conv2d_backward")
     or n == "aten::mkldnn_convolution_backward"),
    ("BatchNorm fwd/bwd", lambda n: "batch_norm" in n),
    ("matmul (linear, contrastive logits)", lambda n: n in ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul",
                                                             "aten::linear")),
    ("reductions (BN statistics, means)", lambda n: n in ("aten::mean", "aten::sum", "aten::var_mean", "aten::var",
                                                           "aten::amax", "aten::max", "aten::argmax",
                                                           "aten::linalg_vector_norm", "aten::norm")),
    ("softmax / log-softmax / CE", lambda n: "softmax" in n or "nll_loss" in n or "cross_entropy" in n
     or n == "aten::kl_div"),
    ("resampling (grid_sample, upsample, pad, gather)", lambda n: "grid_sampler" in n or "upsample" in n
     or n in ("aten::constant_pad_nd", "aten::index", "aten::roll", "aten::flip", "aten::affine_grid_generator",
              "aten::index_put_", "aten::_index_put_impl_", "aten::pad", "aten::index_select", "aten::gather",
              "aten::randperm")),
    ("copies / layout", lambda n: n in ("aten::copy_", "aten::contiguous", "aten::clone", "aten::to", "aten::_to_copy",
                                        "aten::cat", "aten::stack", "aten::fill_", "aten::zero_", "aten::zeros",
                                        "aten::zeros_like", "aten::empty", "aten::empty_like", "aten::empty_strided",
                                        "aten::ones_like", "aten::new_zeros", "aten::full", "aten::where",
                                        "aten::_unsafe_view", "aten::view", "aten::reshape", "aten::as_strided",
                                        "aten::t", "aten::transpose", "aten::permute", "aten::expand",
                                        "aten::slice", "aten::select", "aten::chunk", "aten::split",
                                        "aten::unsqueeze", "aten::squeeze", "aten::detach", "aten::detach_",
                                        "aten::alias", "aten::resize_", "aten::set_", "aten::result_type",
                                        "aten::lift_fresh", "aten::_reshape_alias", "aten::narrow",
                                        "aten::flatten", "aten::unbind", "aten::numpy_T", "aten::matrix_H")),
    ("compiled graphs (inductor kernels)", lambda n: n.startswith("Torch-Compiled") or n.startswith("CompiledFunction")
     or n.startswith("## Call CompiledFxGraph") or n.startswith("cpp_fused") or n.startswith("mkldnn::")
     or n.startswith("inductor::") or n.startswith("graph_")),
    ("elementwise (activations, arithmetic, their grads)", lambda n: n.startswith("aten::")),
]


def categorize(name: str) -> str:
    for cat, pred in CATEGORIES:
        if pred(name):
            return cat
    return "other (autograd nodes, runtime)"


def profile_row(name: str, step, iters: int, top: int) -> dict:
    for _ in range(3):   # warm-up (and the compile, where it is on)
        step()
    walls = []
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=False) as prof:
        for _ in range(iters):
            t0 = time.perf_counter()
            with record_function("## iteration"):
                step()
            walls.append(time.perf_counter() - t0)
    events = prof.key_averages()
    self_by_cat: dict[str, float] = defaultdict(float)
    flops_by_cat: dict[str, float] = defaultdict(float)
    ops = []
    for e in events:
        if e.key.startswith("## "):
            continue
        st = e.self_cpu_time_total / 1e6 / iters
        cat = categorize(e.key)
        self_by_cat[cat] += st
        flops_by_cat[cat] += (e.flops or 0) / iters
        ops.append((st, e.key, e.count // iters, (e.flops or 0) / iters))
    wall = sum(walls) / iters
    in_ops = sum(self_by_cat.values())
    self_by_cat["Python + dispatch (wall - op self time)"] = max(0.0, wall - in_ops)
    print(f"\n### {name}: {wall:.3f} s per profiled iteration (profiler on), {1e-9 * sum(flops_by_cat.values()):.1f} "
          f"GFLOP counted (convolutions and matmuls)\n")
    print("| category | s / iteration | share | GFLOP | GFLOP/s |")
    print("|---|---:|---:|---:|---:|")
    for cat, s in sorted(self_by_cat.items(), key=lambda kv: -kv[1]):
        fl = flops_by_cat.get(cat, 0.0) * 1e-9
        rate = f"{fl / s:.0f}" if fl and s else ""
        print(f"| {cat} | {s:.3f} | {100 * s / wall:.0f}% | {fl:.1f} | {rate} |" if fl else
              f"| {cat} | {s:.3f} | {100 * s / wall:.0f}% | | |")
    print(f"\ntop {top} ops by self time:\n")
    print("| op | calls | s / iteration | GFLOP | GFLOP/s |")
    print("|---|---:|---:|---:|---:|")
    for st, key, count, fl in sorted(ops, reverse=True)[:top]:
        rate = f"{fl * 1e-9 / st:.0f}" if fl and st else ""
        print(f"| `{key}` | {count} | {st:.4f} | {fl * 1e-9:.2f} | {rate} |" if fl else
              f"| `{key}` | {count} | {st:.4f} | | |")
    return dict(wall=wall, cats=dict(self_by_cat))


def peak(threads: int) -> str:
    """What this CPU does on the same kind of work: a big fp32 matmul and a 64-channel 3x3 convolution
    (forward), best of 5, in GFLOP/s."""
    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    x = torch.randn(64, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 3, 1, 1, bias=False).to(memory_format=torch.channels_last)
    out = []
    for name, fn, flop in (("matmul 4096^3", lambda: a @ b, 2 * 4096 ** 3),
                           ("conv 3x3 64->64, 64x32x32, channels_last", lambda: conv(x), 2 * 64 * 64 * 64 * 9 * 32 * 32)):
        with torch.no_grad():
            fn()
            best = min(_wall(fn) for _ in range(5))
        out.append(f"{name}: {flop / best * 1e-9:.0f} GFLOP/s")
    return "; ".join(out)


def _wall(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", nargs="+", default=["cmi", "adi", "deepinversion", "kd"])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", type=int, default=None, help="set IFHE_COMPILE for this process (0/1)")
    a = ap.parse_args()
    if a.compile is not None:
        os.environ["IFHE_COMPILE"] = str(a.compile)
    from ifhe.device import tune_cpu_allocator
    tune_cpu_allocator()
    print(machine(), f"| {a.threads} threads | IFHE_COMPILE={os.environ.get('IFHE_COMPILE', '(default)')}")
    print("peak:", peak(a.threads))
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from common import teacher
    t, _ = teacher()
    for row in a.rows:
        step = build_kd(t, 128) if row == "kd" else build_synth(t, row, 64, negatives=4096)
        profile_row(row, step, a.iters, a.top)


if __name__ == "__main__":
    main()
