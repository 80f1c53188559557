"""The `ifhe` command. User mistakes print one line and exit with code 2; nothing prints a traceback."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields

from .errors import IfheError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(2, f"ifhe: error: {message}\n")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder with <dataset>-{train,test}.npz or torchvision files, or an .npz; "
                                  "default $IFHE_DATA, then torchvision's loader")


def _add_precision(p: argparse.ArgumentParser, default: str | None = None) -> None:
    from .config import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help="forward passes of synthesis and KD; bf16 about halves a step on CPUs with AVX512-BF16 "
                        "and on recent GPUs (losses stay fp32)")


def _cmd_train_teacher(a) -> int:
    from .device import set_cpu_threads
    from .train import TrainConfig, train_classifier
    from .zoo import publish, read_manifest

    set_cpu_threads(a.threads)
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(a).items() if k in names and v is not None})
    result = train_classifier(cfg, a.out, data=a.data, resume=a.resume, device=a.device)
    print(f"test accuracy {result['test_acc']:.2f}% after {result['epochs_done']:.2f} epochs")
    if a.publish and result["finished"]:
        recipe = "ifhe train-teacher " + " ".join(shlex.quote(x) for x in a.argv if x != "--resume")
        epochs = cfg.epochs
        earlier = read_manifest().get(cfg.init_from) if cfg.init_from else None
        if earlier:  # a fine-tuning stage of a zoo model: keep the whole history
            recipe, epochs = f"{earlier['recipe']} && {recipe}", earlier["epochs"] + cfg.epochs
        entry = publish(result["model"], a.publish, cfg.dataset, result["test_acc"], epochs, recipe, role=a.role)
        print(f"published {a.publish}: {entry['file']} sha256 {entry['sha256'][:12]}")
    return 0


def _cmd_evaluate(a) -> int:
    from .data import load_split
    from .device import pick_device, set_cpu_threads
    from .evaluation import evaluate
    from .zoo import attach_dataset, load_model, load_teacher

    set_cpu_threads(a.threads)
    dev = pick_device(a.device)
    if a.model.endswith(".safetensors"):
        model, meta = load_model(a.model, a.arch, device=dev)
        model = attach_dataset(model, a.dataset or meta.get("dataset") or "cifar10")
    else:
        model = load_teacher(a.model, dev)
    test = load_split(model.dataset, "test", a.data)
    acc = evaluate(model, test, model.normalizer, dev)
    print(f"{a.model}: top-1 {acc:.2f}% on {len(test)} real {model.dataset} test images")
    return 0


def _cmd_zoo(a) -> int:
    from .zoo import read_manifest

    if a.publish_head:
        return _publish_head(a)
    for name, e in read_manifest().items():
        head = e.get("head")
        extra = f"  h {head['test_accuracy']:.2f}% ({head['file']})" if head else ""
        print(f"{name:24s} {e['arch']:10s} {e['dataset']:9s} {e['test_accuracy']:6.2f}%  {e['epochs']} epochs{extra}")
    return 0


def _publish_head(a) -> int:
    """Measure a run's h on the real test set with its teacher, then ship it with that teacher."""
    import torch

    from .checkpoint import load_tensors, load_weights_into, read_meta
    from .data import load_split
    from .distill import evaluate_head
    from .heads import HeterogeneityHead
    from .zoo import load_teacher, publish_head

    if not a.teacher:
        raise IfheError("--publish-head needs --teacher (the zoo teacher whose features the head reads)")
    meta = read_meta(a.publish_head)
    teacher = load_teacher(a.teacher)
    head = HeterogeneityHead(meta["in_features"], meta["num_classes"], meta["hidden"])
    load_weights_into(head, load_tensors(a.publish_head)[0], str(a.publish_head))
    test = load_split(teacher.dataset, "test", a.data)
    acc = evaluate_head(head.eval(), teacher, test, teacher.normalizer, torch.device("cpu"), tuple(meta["stages"]))
    record = publish_head(a.teacher, a.publish_head, acc, a.recipe or f"ifhe zoo --publish-head {a.publish_head}")
    print(f"h of {a.publish_head}: top-1 {acc:.2f}% on {len(test)} real test images -> pretrained/{record['file']}")
    return 0


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


def _parse_set(items: list[str]) -> dict:
    import yaml
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise IfheError(f"--set {item!r}: expected key=value, e.g. synth.lr_g=0.01")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        section, _, name = key.rpartition(".")
        if section not in ("", "synth", "distill"):
            raise IfheError(f"--set {key}: sections are synth. and distill.")
        out.setdefault(section, {})[name] = value
    return out


def build_run_config(a, resume_from: str | None = None, **forced):
    """preset(method, scale) < --config file (or the resumed run's own config) < flags < --set < forced."""
    from .config import from_dict, read_config_file, to_dict

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
    for section, values in _parse_set(getattr(a, "set", None)).items():
        sections[section].update(values)
    for k, v in forced.items():
        section, _, name = k.rpartition(".")
        sections[section][name] = v
    return from_dict(base)


def _print_events(run, quiet: bool = False, report: bool = True):
    from tqdm import tqdm

    from .experiment import BatchSaved, Evaluated, Finished, KDStep, Started, SynthStep

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
    print(f"finished ({finished.reason}) after {finished.round} rounds, {finished.elapsed_s / 60:.1f} min, bank "
          f"{finished.bank_size} images: {acc}{h}; outputs in {run.out}")
    return finished


def _cmd_run(a, **forced) -> int:
    from pathlib import Path

    from .experiment import CHECKPOINT, Run

    out = Path(a.out)
    resume_cfg = str(out / "config.yaml") if a.resume and (out / CHECKPOINT).exists() else None
    cfg = build_run_config(a, resume_cfg, **forced)
    run = Run(cfg, out, resume=a.resume)
    try:
        _print_events(run, quiet=a.quiet or not run.dist.is_main, report=run.dist.is_main)
    finally:
        if run.dist.enabled:
            import torch.distributed as dist
            dist.destroy_process_group()
    return 0


def _cmd_synth(a) -> int:
    return _cmd_run(a, **{"distill.steps_per_round": 0, "eval_every": 0})


def _cmd_distill(a) -> int:
    a.method = a.method or "ifhe"
    return _cmd_run(a, bank=a.bank)


def _cmd_export(a) -> int:
    from .bank import open_bank

    n = open_bank(a.bank).export_png(a.out)
    print(f"exported {n} images to {a.out}/<class>/")
    return 0


def _add_run_args(p: argparse.ArgumentParser) -> None:
    from .config import METHODS, SCALES

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
    _add_precision(p)
    p.add_argument("--quiet", action="store_true")
    _add_data(p)


def _cmd_demo(a) -> int:
    import os
    import subprocess
    from pathlib import Path

    app = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"
    if not app.exists():
        raise IfheError(f"the demo app is not installed next to the package ({app}); run from a source checkout")
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(a.port),
           "--server.headless", str(a.headless).lower(), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # no polling of the source tree while runs use the cores
    env = dict(os.environ)
    if a.data:
        env["IFHE_DATA"] = a.data
    print(f"ifhe demo: http://localhost:{a.port}")
    # Ctrl-C, SIGTERM: the server gets the signal and stops its runs (each saves its checkpoint) before it exits;
    # this process waits for that and exits with the server's code (subprocess.call would kill it after 0.25 s)
    import signal
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _cmd_features(a) -> int:
    from .config import make_config
    from .device import set_cpu_threads
    from .embedding import metrics_markdown, report_header
    from .experiment import load_run_teacher
    from .features import bank_set, feature_report, h_stages_of, real_set, write_report

    set_cpu_threads(a.threads)
    teacher = load_run_teacher(make_config(teacher=a.teacher, teacher_arch=a.teacher_arch), "cpu")
    sets, configs = [], []
    for item in a.sets or []:
        name, _, path = item.rpartition("=")
        s, cfg = bank_set(path, name or None)
        if s.name == "real" or any(s.name == x.name for x in sets):
            raise IfheError(f"--sets: two sets are called {s.name!r}; name them (NAME=FOLDER)")
        sets.append(s)
        configs.append(cfg)
    real = real_set(teacher.dataset, a.real) if a.real else None
    report = feature_report(teacher, sets, real, a.stage, h_stages=h_stages_of(configs), teacher_name=a.teacher,
                            labels=a.labels, n=a.n, window=a.window, n_boot=a.bootstrap, seed=a.seed,
                            n_round_windows=a.round_windows, classes=teacher.classes,
                            progress=lambda msg: print(f"  {msg}", flush=True))
    paths = write_report(report, a.out, "ifhe features " + " ".join(shlex.quote(x) for x in a.argv))
    print(report_header(report) + "\n" + metrics_markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_reproduce(a) -> int:
    import os
    import signal
    import subprocess
    from pathlib import Path

    from .data import load_split
    from .device import pick_device, set_cpu_threads
    from .machine import calibrate, machine_info, machine_label
    from .reproduce import (LOCKED_RC, CellLock, _Done, child_command, describe_holder, finished_summary,
                            join_invocation, lock_holder, parse_comparisons, plan, read_sweep, run_cell, run_cells,
                            start_invocation, write_results)
    from .zoo import available, read_manifest

    out = Path(a.out)
    if a.jobs < 1:
        raise IfheError(f"--jobs must be >= 1, got {a.jobs}")
    if a.jobs > 1 and a.threads is None:
        raise IfheError(f"--jobs {a.jobs} runs {a.jobs} cells at once: give each its --threads "
                        f"(e.g. --jobs 2 --threads 1 on 2 cores)")
    cells = plan(a.table, a.methods, a.seeds, available())
    comparisons = parse_comparisons(a.compare, a.methods)
    settings = {"table": a.table, "budget_minutes": a.budget_minutes, "threads": a.threads,
                "precision": a.precision, "eval_every": a.eval_every, "eval_images": a.eval_images,
                "set": list(a.set or []), "data": a.data}
    sets = _parse_set(a.set)
    overrides = {"eval_images": a.eval_images, "eval_every": a.eval_every, "threads": a.threads,
                 "precision": a.precision, **sets.get("", {}), "synth": sets.get("synth", {}),
                 "distill": sets.get("distill", {})}
    ids = [c.id for c in cells]

    def tables() -> int:
        summaries = [s for s in (finished_summary(c, out) for c in cells) if s is not None]
        if not summaries:
            raise IfheError(f"no finished cell of this sweep in {out}")
        paths = write_results(summaries, out, a.budget_minutes, comparisons, a.allow_mixed_machines,
                              planned=ids, sweep=read_sweep(out))
        print(Path(paths["md"]).read_text())
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        return 0

    if a.report_only:
        return tables()
    if a.only_cell is not None and a.only_cell not in ids:
        raise IfheError(f"--only-cell {a.only_cell!r}: not a cell of this sweep; its cells: {', '.join(ids)}")
    set_cpu_threads(a.threads)
    if a.invocation is not None:
        inv = join_invocation(out, a.invocation, settings)
    else:
        device = pick_device(None).type
        print(f"calibrating: a WRN-16-2 training step at batch 128 on {device}, "
              f"{a.threads or 'all'} thread(s) ...", flush=True)
        cal = calibrate(a.threads, device=device)
        inv = start_invocation(out, settings, a.argv, machine_info(), cal, a.allow_mixed_machines, jobs=a.jobs)
        print(f"invocation {inv['index']} of {out}: {machine_label(inv['machine'], a.threads)}; calibration "
              f"{cal['step_s']:.3f} s per step", flush=True)

    final_tests: dict = {}

    def final_test(cell):
        dataset = read_manifest().get(cell.teacher, {}).get("dataset") or "cifar10"
        if dataset not in final_tests:
            final_tests[dataset] = (load_split(dataset, "test", a.data)
                                    if a.data or os.environ.get("IFHE_DATA") else None)
        return final_tests[dataset]

    def run_here(cell) -> int:
        lock = CellLock(cell.lock_path(out))
        if not lock.acquire():
            print(f"{cell.id}: being run by {describe_holder(lock_holder(lock.path))}", flush=True)
            return LOCKED_RC
        try:
            s = run_cell(cell, out, a.budget_minutes, a.data, overrides, final_test_set=final_test(cell),
                         invocation=inv)
        finally:
            lock.release()
        acc = f"{s['student_acc']:.2f}%" if s["student_acc"] is not None else "not evaluated"
        print(f"{cell.id}: student {acc} after {s['rounds']} rounds, {s['kd_steps']} KD steps, bank "
              f"{s['bank_size']}", flush=True)
        return 0

    if a.only_cell is not None:
        return run_here(next(c for c in cells if c.id == a.only_cell))

    if a.jobs == 1:
        def start(cell):
            try:
                return _Done(run_here(cell))
            except Exception as e:  # one failed cell does not stop the others; rerunning resumes it
                print(f"ifhe: error in {cell.id}: {e}", file=sys.stderr, flush=True)
                return _Done(1)
    else:
        def start(cell):
            return subprocess.Popen(child_command(cell, settings, out, inv["index"], a.allow_mixed_machines))

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate) if a.jobs > 1 else None
    try:
        failed = run_cells(cells, out, a.jobs, start)
    except KeyboardInterrupt:
        print("ifhe: interrupted; rerun the same command to resume the sweep (finished cells are kept, "
              "unfinished ones resume from their checkpoints)", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    missing = [c.id for c in cells if finished_summary(c, out) is None]
    if missing:
        print(f"ifhe: {len(missing)} cell(s) not finished ({', '.join(missing)}"
              f"{'; failed: ' + ', '.join(failed) if failed else ''}); rerun the same command to resume them, "
              f"or --report-only to tabulate the finished ones", file=sys.stderr)
        return 1
    return tables()


def build_parser() -> argparse.ArgumentParser:
    from .config import SCHEDULES, SWA_BN

    p = _Parser(prog="ifhe", description="Data-free knowledge distillation by model inversion (IFHE and baselines)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train-teacher", help="supervised training on real data (teachers, scratch students)")
    t.add_argument("--arch", default="wrn16_2")
    t.add_argument("--dataset", default="cifar10")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", dest="batch_size", type=int)
    t.add_argument("--max-lr", dest="max_lr", type=float)
    t.add_argument("--weight-decay", dest="weight_decay", type=float)
    t.add_argument("--label-smoothing", dest="label_smoothing", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--init-from", dest="init_from", help="start from these weights (zoo name or .safetensors)")
    t.add_argument("--schedule", choices=SCHEDULES,
                   help="one_cycle (default): warm-up then cosine; swa: constant --max-lr, the weights at the end "
                        "of every epoch averaged (a fine-tuning stage after --init-from)")
    t.add_argument("--swa-bn", dest="swa_bn", choices=SWA_BN,
                   help="BN statistics of the SWA model: average (default, with the weights) or recompute (on the "
                        "augmented training images)")
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true", help="continue the run in --out after a kill")
    t.add_argument("--publish", metavar="NAME", help="when finished, add to pretrained/ under NAME")
    t.add_argument("--role", choices=("teacher", "student"), default="teacher",
                   help="how --publish lists it: a teacher (default), or a scratch-trained student to compare against")
    t.add_argument("--device")
    t.add_argument("--threads", type=int)
    _add_precision(t)
    _add_data(t)
    t.set_defaults(func=_cmd_train_teacher)

    e = sub.add_parser("evaluate", help="top-1 accuracy of a zoo model or .safetensors file on real test data")
    e.add_argument("model", help="zoo name (see `ifhe zoo`) or a .safetensors file")
    e.add_argument("--arch")
    e.add_argument("--dataset")
    e.add_argument("--device")
    e.add_argument("--threads", type=int)
    _add_data(e)
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("run", help="synthesize and distill (any method), resumable")
    _add_run_args(r)
    r.set_defaults(func=_cmd_run)
    sy = sub.add_parser("synth", help="synthesize images into a bank only (no distillation)")
    _add_run_args(sy)
    sy.set_defaults(func=_cmd_synth)
    di = sub.add_parser("distill", help="distill a student from an existing bank")
    _add_run_args(di)
    di.add_argument("--bank", required=True, help="folder of an image bank (e.g. runs/x/bank)")
    di.set_defaults(func=_cmd_distill)
    ex = sub.add_parser("export", help="write a bank as a PNG ImageFolder")
    ex.add_argument("--bank", required=True)
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=_cmd_export)

    fe = sub.add_parser("features", help="heterogeneity of the teacher's intermediate features: metrics with "
                                         "intervals, t-SNE maps, metrics against round")
    fe.add_argument("--teacher", default="cifar10_wrn16_2")
    fe.add_argument("--teacher-arch", dest="teacher_arch")
    fe.add_argument("--real", help="folder/.npz with real test images (labelled by their class; the shared map is "
                                   "fitted on them, and they give the real-vs-real floor)")
    fe.add_argument("--sets", nargs="*", help="run or bank folders of synthesized images, optionally NAME=FOLDER")
    fe.add_argument("--stage", nargs="+", help="h (h's input: its stages pooled and concatenated) and/or the "
                                               "teacher's stages; default: h and the last block (block3 on WRN)")
    fe.add_argument("--labels", choices=("target", "predicted"), default="target",
                    help="label synthesized images by their target t (real: true class), or every image by the "
                         "teacher's prediction (the other labelling stays as a secondary column)")
    fe.add_argument("--window", default="auto", help="which images of each bank: auto (the most recent rounds "
                                                     "that hold --n images), all, or last:K (the last K rounds)")
    fe.add_argument("--n", type=int, default=1000, help="images per set, real included (smaller if a window or "
                                                        "half the real images hold fewer; the report says so)")
    fe.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws of every 95%% interval")
    fe.add_argument("--round-windows", dest="round_windows", type=int, default=5,
                    help="consecutive windows of each bank for the metric-vs-round curve (0: none)")
    fe.add_argument("--seed", type=int, default=0)
    fe.add_argument("--threads", type=int)
    fe.add_argument("--out", required=True)
    fe.set_defaults(func=_cmd_features)

    rp = sub.add_parser("reproduce", help="sweep methods under equal time budgets; tables with intervals, curves")
    rp.add_argument("--table", default="cifar10")
    rp.add_argument("--methods", nargs="+", default=["deepinversion", "cmi", "ifhe"],
                    help="variants: methods, ifhe-a0 / ifhe-a0.5 / ifhe-a1 (alpha ablation), dafl+ifhe, dfq+ifhe")
    rp.add_argument("--budget-minutes", dest="budget_minutes", type=float, default=20.0)
    rp.add_argument("--seeds", type=int, default=1)
    rp.add_argument("--eval-every", dest="eval_every", type=int, default=250, help="KD steps between curve points")
    rp.add_argument("--eval-images", dest="eval_images", type=int, default=2000,
                    help="test images per curve point (the final figure uses the whole test set)")
    rp.add_argument("--threads", type=int, help="torch threads of each cell (and of the calibration step)")
    rp.add_argument("--jobs", type=int, default=1,
                    help="cells run at the same time, each in its own process with --threads threads "
                         "(e.g. --jobs 2 --threads 1 on 2 cores)")
    rp.add_argument("--compare", action="append", metavar="A:B",
                    help="also report the paired difference A - B (every variant is compared with the first "
                         "one listed anyway)")
    rp.add_argument("--allow-mixed-machines", dest="allow_mixed_machines", action="store_true",
                    help="tabulate cells whose calibrations differ by more than 20%% (each cell then names its "
                         "machine), and let this machine join a sweep started on a different one")
    rp.add_argument("--report-only", dest="report_only", action="store_true",
                    help="write table.md, results.json and curves from the finished cells; run nothing")
    rp.add_argument("--only-cell", dest="only_cell", metavar="PAIR/VARIANT/seedK",
                    help="run just this cell (what each process of --jobs does)")
    rp.add_argument("--invocation", type=int, help=argparse.SUPPRESS)  # set by --jobs for its processes
    rp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a setting for every cell, e.g. synth.iterations=100 (recorded with the sweep)")
    _add_precision(rp, "fp32")
    rp.add_argument("--out", default="results")
    _add_data(rp)
    rp.set_defaults(func=_cmd_reproduce)

    dm = sub.add_parser("demo", help="start the Streamlit demo in the browser")
    dm.add_argument("--port", type=int, default=8501)
    dm.add_argument("--headless", action="store_true", help="do not open a browser window")
    _add_data(dm)
    dm.set_defaults(func=_cmd_demo)

    z = sub.add_parser("zoo", help="list the shipped pretrained models")
    z.add_argument("--publish-head", metavar="HEAD", help="ship a run's head.safetensors with its teacher "
                   "(synth.h_init=pretrained then starts h from it); needs --teacher")
    z.add_argument("--teacher", help="the zoo teacher whose features the head reads")
    z.add_argument("--recipe", help="how the head was made, kept in the manifest")
    _add_data(z)
    z.set_defaults(func=_cmd_zoo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    try:
        return args.func(args)
    except IfheError as e:
        print(f"ifhe: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable or full output folder, vanished files: the OS names the path
        where = f"{e.filename}: " if e.filename else ""
        print(f"ifhe: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ifhe: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
