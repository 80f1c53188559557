"""`ifhe features`: heterogeneity of the teacher's intermediate features for banks of synthesized images (and real
ones): metrics with intervals, t-SNE maps, metrics against round, written as report.html, PNGs, CSV and Markdown."""
from __future__ import annotations

from ..errors import IfheError
from ..feature_metrics import DEFAULT_WINDOW
from .common import command_line


def register(sub) -> None:
    fe = sub.add_parser("features", help="heterogeneity of the teacher's intermediate features: metrics with "
                                         "intervals, t-SNE maps, metrics against round")
    fe.add_argument("--teacher", default="cifar10_wrn16_2")
    fe.add_argument("--teacher-arch", dest="teacher_arch")
    fe.add_argument("--real", help="folder/.npz with real test images (labelled by their class; the shared map is "
                                   "fitted on them, and they give the real-vs-real floor)")
    fe.add_argument("--sets", nargs="*", help="run or bank folders of synthesized images, optionally NAME=FOLDER")
    fe.add_argument("--stage", nargs="+", help="the teacher's stages and/or h (h's input: its stages pooled and "
                                               "concatenated, what L_H optimises); the first that is not h is the "
                                               "primary one the verdicts rest on; default: penultimate, then h")
    fe.add_argument("--labels", choices=("target", "predicted"), default="target",
                    help="label synthesized images by their target t (real: true class), or every image by the "
                         "teacher's prediction (the other labelling stays as a secondary column)")
    fe.add_argument("--window", default=DEFAULT_WINDOW,
                    help="which images of each bank: share:F (the last fraction F of each run's rounds, default "
                         f"{DEFAULT_WINDOW}) or share:A-B, matched by the share of the run; all; auto (the most "
                         "recent rounds that hold --n images) or last:K (the last K rounds)")
    fe.add_argument("--n", type=int, default=1000, help="images per set, real included (smaller if a window or "
                                                        "half the real images hold fewer; the report says so)")
    fe.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws of every 95%% interval")
    fe.add_argument("--round-windows", dest="round_windows", type=int, default=5,
                    help="windows of equal shares of each run for the metric-vs-share curve (0: none)")
    fe.add_argument("--seed", type=int, default=0)
    fe.add_argument("--threads", type=int)
    fe.add_argument("--out", required=True)
    fe.set_defaults(func=command)


def command(a) -> int:
    from ..device import set_cpu_threads
    from ..feature_view import markdown, report_header
    from ..features import feature_report, h_stages_of, real_set, report_tables, write_report
    from ..zoo import resolve_teacher

    set_cpu_threads(a.threads)
    teacher = resolve_teacher(a.teacher, a.teacher_arch)
    sets, configs = bank_sets(a.sets)
    real = real_set(teacher.dataset, a.real) if a.real else None
    report = feature_report(teacher, sets, real, a.stage, h_stages=h_stages_of(configs), teacher_name=a.teacher,
                            labels=a.labels, n=a.n, window=a.window, n_boot=a.bootstrap, seed=a.seed,
                            n_round_windows=a.round_windows, classes=teacher.classes,
                            progress=lambda msg: print(f"  {msg}", flush=True))
    paths = write_report(report, a.out, command_line("features", a.argv))
    print(report_header(report) + "".join(f"\n**{title}**\n\n" + markdown(t) for title, t in report_tables(report)))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def bank_sets(items: list[str] | None) -> tuple[list, list[dict]]:
    """The image sets of --sets (FOLDER or NAME=FOLDER) and their runs' configs; names must differ (unnamed
    banks of one method that differ by seed are told apart by it: 'ifhe s1')."""
    from ..features import bank_set

    sets, configs, named = [], [], []
    for item in items or []:
        name, _, path = item.rpartition("=")
        s, cfg = bank_set(path, name or None)
        sets.append(s)
        configs.append(cfg)
        named.append(bool(name))
    names = [s.name for s in sets]
    for s, given in zip(sets, named):
        if not given and names.count(s.name) > 1 and s.seed is not None:
            s.name = f"{s.name} s{s.seed}"
    names = [s.name for s in sets]
    for s in sets:
        if s.name == "real" or names.count(s.name) > 1:
            raise IfheError(f"--sets: two sets are called {s.name!r}; name them (NAME=FOLDER)")
    return sets, configs

