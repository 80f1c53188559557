"""`ifhe run`, `ifhe synth`, `ifhe distill` (one experiment.Run each, printed as a progress bar) and `ifhe export`.

A run's settings: the method preset < --config file (or the resumed run's own config) < flags < --set."""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ..config import METHODS, SCALES, from_dict, read_config_file, to_dict
from ..errors import IfheError
from .common import add_data, add_precision, parse_set


def register(sub) -> None:
    r = sub.add_parser("run", help="synthesize and distill (any method), resumable")
    add_run_args(r)
    r.set_defaults(func=command_run)
    sy = sub.add_parser("synth", help="synthesize images into a bank only (no distillation)")
    add_run_args(sy)
    sy.set_defaults(func=command_synth)
    di = sub.add_parser("distill", help="distill a student from an existing bank")
    add_run_args(di)
    di.add_argument("--bank", required=True, help="folder of an image bank (e.g. runs/x/bank)")
    di.set_defaults(func=command_distill)
    ex = sub.add_parser("export", help="write a bank as a PNG ImageFolder")
    ex.add_argument("--bank", required=True)
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=command_export)


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML/JSON run config (configs/ has the paper's presets)")
    p.add_argument("--method", choices=METHODS, help="method preset (default ifhe)")
    p.add_argument("--scale", choices=SCALES, help="reference hyperparameters or the CPU-sized ones (default cpu)")
    p.add_argument("--teacher", help="zoo name (ifhe zoo) or a .safetensors file")
    p.add_argument("--teacher-arch", dest="teacher_arch")
    p.add_argument("--student")
    p.add_argument("--alpha", type=float, help="weight of L_H (IFHE)")
    p.add_argument("--beta", type=float, help="weight of L_bns")
    p.add_argument("--gamma", type=float, help="weight of the adversarial term")
    p.add_argument("--iterations", type=int, help="synthesis iterations per round")
    p.add_argument("--synth-batch", dest="synth_batch", type=int)
    p.add_argument("--lr-g", dest="lr_g", type=float)
    p.add_argument("--lr-z", dest="lr_z", type=float)
    p.add_argument("--kd-steps", dest="kd_steps", type=int, help="KD steps per round")
    p.add_argument("--kd-batch", dest="kd_batch", type=int)
    p.add_argument("--lr", type=float, help="KD learning rate")
    p.add_argument("--tau", type=float, help="KD temperature")
    p.add_argument("--rounds", type=int)
    p.add_argument("--budget-minutes", dest="budget_minutes", type=float)
    p.add_argument("--eval-every", dest="eval_every", type=int, help="KD steps between evaluations")
    p.add_argument("--eval-images", dest="eval_images", type=int, help="evaluate on a fixed subset of the test set")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting, e.g. synth.cr_T=0.2")
    p.add_argument("--out", required=True, help="run folder (checkpoint, bank, metrics.jsonl, student)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    add_precision(p)
    p.add_argument("--quiet", action="store_true")
    add_data(p)


_RUN_FLAGS = {  # flag -> (config section, field)
    "alpha": ("synth", "alpha"), "beta": ("synth", "beta"), "gamma": ("synth", "gamma"),
    "iterations": ("synth", "iterations"), "synth_batch": ("synth", "batch_size"),
    "lr_g": ("synth", "lr_g"), "lr_z": ("synth", "lr_z"),
    "kd_steps": ("distill", "steps_per_round"), "kd_batch": ("distill", "batch_size"),
    "lr": ("distill", "lr"), "tau": ("distill", "T"),
    "teacher": ("", "teacher"), "teacher_arch": ("", "teacher_arch"), "student": ("", "student"),
    "rounds": ("", "rounds"), "budget_minutes": ("", "budget_minutes"), "seed": ("", "seed"),
    "eval_every": ("", "eval_every"), "eval_images": ("", "eval_images"), "device": ("", "device"),
    "threads": ("", "threads"), "precision": ("", "precision"), "data": ("", "data"),
}


def build_run_config(a, resume_from: str | None = None, **forced):
    """preset(method, scale) < --config file (or the resumed run's own config) < flags < --set < forced."""
    if resume_from:
        base = to_dict(from_dict(read_config_file(resume_from)))
        if a.method and a.method != base["method"]:
            raise IfheError(f"--method {a.method}: the run being resumed uses {base['method']}")
    else:
        base = read_config_file(a.config) if a.config else {}
        if a.method:
            base["method"] = a.method
        if a.scale:
            base["scale"] = a.scale
    base.setdefault("synth", {})
    base.setdefault("distill", {})
    sections = {"": base, "synth": base["synth"], "distill": base["distill"]}
    for flag, (section, name) in _RUN_FLAGS.items():
        v = getattr(a, flag, None)
        if v is not None:
            sections[section][name] = v
    for section, values in parse_set(getattr(a, "set", None)).items():
        sections[section].update(values)
    for k, v in forced.items():
        section, _, name = k.rpartition(".")
        sections[section][name] = v
    return from_dict(base)


def print_events(run, quiet: bool = False, report: bool = True):
    from ..experiment import BatchSaved, Evaluated, Finished, KDStep, Started, SynthStep

    cfg = run.cfg
    total = int(60 * cfg.budget_minutes) if cfg.budget_minutes else cfg.rounds
    unit = "s" if cfg.budget_minutes else "round"
    bar = tqdm(total=total, unit=unit, disable=quiet, dynamic_ncols=True)
    finished = None
    for ev in run.events():
        if isinstance(ev, Started):
            bar.write(f"{'resumed' if ev.resumed else 'started'} {cfg.method} at round {ev.round}, bank "
                      f"{ev.bank_size} images, {ev.kd_steps} KD steps" + (f"; {ev.note}" if ev.note else ""))
        elif isinstance(ev, SynthStep) and ev.losses:
            bar.set_postfix_str(" ".join(f"{k}={v:.3g}" for k, v in ev.losses.items()) + f" {ev.it_per_s:.1f}it/s")
        elif isinstance(ev, KDStep):
            bar.set_postfix_str(f"kd={ev.losses['kd_student']:.3g} lr={ev.lr:.3g} {ev.images_per_s:.0f}img/s")
        elif isinstance(ev, Evaluated):
            h = f", h {ev.head_acc:.2f}%" if ev.head_acc is not None else ""
            bar.write(f"round {ev.round}, {ev.kd_steps} KD steps, {ev.elapsed_s / 60:.1f} min: "
                      f"student {ev.student_acc:.2f}%{h}")
        elif isinstance(ev, Finished):
            finished = ev
        if isinstance(ev, (BatchSaved, KDStep, Evaluated)) or isinstance(ev, Finished):
            bar.n = min(total, int(run.progress.elapsed_s) if cfg.budget_minutes else run.progress.round)
            bar.refresh()
    bar.close()
    if not report:
        return finished
    acc = f"student {finished.student_acc:.2f}%" if finished.student_acc is not None else "no evaluation"
    h = f", h {finished.head_acc:.2f}%" if finished.head_acc is not None else ""
    p = run.progress
    print(f"finished ({finished.reason}) after {finished.round} rounds, {finished.elapsed_s / 60:.1f} min, bank "
          f"{finished.bank_size} images: {acc}{h}; outputs in {run.out}")
    print(f"compute ({run.precision}): synthesis {p.synth_s:.0f} s, KD {p.kd_s:.0f} s ({p.kd_steps} steps, "
          f"{p.kd_student:,} student passes), evaluation {p.eval_s:.0f} s (outside the budget); result.json has "
          f"the sample-passes")
    return finished


def command_run(a, **forced) -> int:
    from ..experiment import CHECKPOINT, Run

    out = Path(a.out)
    resume_cfg = str(out / "config.yaml") if a.resume and (out / CHECKPOINT).exists() else None
    cfg = build_run_config(a, resume_cfg, **forced)
    run = Run(cfg, out, resume=a.resume)
    try:
        print_events(run, quiet=a.quiet or not run.dist.is_main, report=run.dist.is_main)
    finally:
        if run.dist.enabled:
            import torch.distributed as dist
            dist.destroy_process_group()
    return 0


def command_synth(a) -> int:
    return command_run(a, **{"distill.steps_per_round": 0, "eval_every": 0})


def command_distill(a) -> int:
    a.method = a.method or "ifhe"
    return command_run(a, bank=a.bank)


def command_export(a) -> int:
    from ..bank import open_bank

    n = open_bank(a.bank).export_png(a.out)
    print(f"exported {n} images to {a.out}/<class>/")
    return 0
