"""`ifhe features`: heterogeneity of the teacher's intermediate features for banks of synthesized images (and real
ones): metrics with intervals, t-SNE maps, metrics against round, written as report.html, PNGs, CSV and Markdown."""
from __future__ import annotations

from ..errors import IfheError
from .common import command_line


def register(sub) -> None:
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
    fe.set_defaults(func=command)


def command(a) -> int:
    from ..device import set_cpu_threads
    from ..feature_report import metrics_markdown, report_header
    from ..features import feature_report, h_stages_of, real_set, write_report
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
    print(report_header(report) + "\n" + metrics_markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def bank_sets(items: list[str] | None) -> tuple[list, list[dict]]:
    """The image sets of --sets (FOLDER or NAME=FOLDER) and their runs' configs; names must differ."""
    from ..features import bank_set

    sets, configs = [], []
    for item in items or []:
        name, _, path = item.rpartition("=")
        s, cfg = bank_set(path, name or None)
        if s.name == "real" or any(s.name == x.name for x in sets):
            raise IfheError(f"--sets: two sets are called {s.name!r}; name them (NAME=FOLDER)")
        sets.append(s)
        configs.append(cfg)
    return sets, configs

