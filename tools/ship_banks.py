"""Ship the comparison of intermediate features: finished runs' banks -> a committed folder (`ifhe.feature_banks`)
that the Feature space page opens on without making a bank or computing anything.

    python tools/ship_banks.py --teacher cifar10_wrn16_2 --real $IFHE_DATA --threads 1 \\
        --sweep results/sweep-g --variants deepinversion cmi ifhe --out results/shipped/feature-banks
    python tools/ship_banks.py --teacher NAME --runs RUN [RUN ...] --out DIR     # any finished run folders

Each run folder (`bank/`, `config.yaml`, `result.json`, `metrics.jsonl`; a sweep's cells live under
`<sweep>/runs/<pair>/<variant>/seed<k>/`) becomes one bank of the report: its images from the same share of its run's
rounds as every other's (`--window`, default the last quarter), all at one n (`--n`, the smallest window lowers
it), compressed as uint8 .npz. The report (metrics per bank, per method over its seeds, the claims, both kinds of
t-SNE map, metrics against the share of the run) is computed here, once, and written beside the banks with every
bank's provenance: teacher (name, sha256), method, seed, its run's rounds and budget, the rounds its images come
from, and the command that made the run. A run that recorded another teacher checksum is refused; the whole
folder must stay under `--max-mb`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ifhe import catalog  # noqa: E402
from ifhe.checkpoint import sha256_file  # noqa: E402
from ifhe.device import set_cpu_threads  # noqa: E402
from ifhe.errors import IfheError  # noqa: E402
from ifhe.feature_banks import BankRecord, folder_size, write_comparison  # noqa: E402
from ifhe.feature_metrics import DEFAULT_WINDOW, rounds_span, run_rounds, window_indices  # noqa: E402
from ifhe.features import bank_set, feature_report, h_stages_of, real_set, run_result  # noqa: E402
from ifhe.cpu import machine_label  # noqa: E402
from ifhe.machine import machine_info  # noqa: E402
from ifhe.methods import METHOD_LABELS  # noqa: E402
from ifhe.zoo import resolve_teacher  # noqa: E402

DEFAULT_N = 450               # 10 sets (9 banks and real) x 450 x 3,072 bytes: about 13.8 MB before compression
MAX_MB = 15.0


def sweep_runs(sweep: Path, variants: list[str] | None, pair: str | None) -> list[Path]:
    """The finished cells of a sweep: <sweep>/runs/<pair>/<variant>/seed<k>, in variant then seed order."""
    pairs = sorted(p for p in (sweep / "runs").iterdir() if p.is_dir()) if (sweep / "runs").is_dir() else []
    if pair:
        pairs = [p for p in pairs if p.name == pair]
    if len(pairs) != 1:
        raise IfheError(f"{sweep}/runs holds {len(pairs)} pair(s) ({', '.join(p.name for p in pairs) or 'none'}): "
                        f"name one with --pair")
    found = [d for d in sorted(pairs[0].iterdir()) if d.is_dir() and (not variants or d.name in variants)]
    if variants:
        found.sort(key=lambda d: variants.index(d.name))
    return [s for d in found for s in sorted(d.glob("seed*")) if s.is_dir()]


def recorded_sha(run: Path) -> str | None:
    """The teacher checksum the run recorded (a sweep cell's summary.json, the run's result.json or the app's
    status.json), or None."""
    for name in ("summary.json", "result.json", "status.json"):
        try:
            sha = json.loads((run / name).read_text()).get("teacher_sha256")
        except (OSError, ValueError, AttributeError):
            continue
        if sha:
            return sha
    return None


def made_by(run: Path) -> str:
    """The command that made a run: its sweep's (sweep.json, up to four folders above it) and the cell, or the
    run's own config."""
    for up in list(run.parents)[:4]:
        try:
            sweep = json.loads((up / "sweep.json").read_text())
        except (OSError, ValueError):
            continue
        return f"{sweep.get('command', 'ifhe reproduce')} (cell {run.relative_to(up / 'runs').as_posix()})"
    return f"ifhe run --config {run / 'config.yaml'}"


def bank_record(run: Path, s, cfg: dict, teacher_sha: str, window: str, n: int) -> BankRecord:
    """The provenance of one run's bank; refuses a run made with another teacher."""
    sha = recorded_sha(run)
    if sha and sha != teacher_sha:
        raise IfheError(f"{run}: made with teacher sha256 {sha[:12]}, not {teacher_sha[:12]}: not comparable")
    rounds = run_rounds(s.rounds, s.total_rounds)
    idx, _ = window_indices(s.rounds, window, n, s.total_rounds)
    return BankRecord(s.name, f"{cfg.get('method', 'bank')}-seed{s.seed}.npz", str(cfg.get("method")), s.group,
                      s.seed, len(idx), rounds_span(s.rounds[idx], rounds), rounds, cfg.get("budget_minutes"),
                      run.as_posix(), made_by(run), head=s.head, alpha=(cfg.get("synth") or {}).get("alpha"),
                      teacher_sha256=sha)


def load_runs(runs: list[Path], teacher_name: str, teacher_sha: str, window: str, n: int, allow_unfinished: bool):
    sets, configs, records = [], [], []
    for run in runs:
        if not (run / "bank").is_dir():
            raise IfheError(f"{run}: no bank/ folder")
        if not run_result(run / "bank") and not allow_unfinished:
            raise IfheError(f"{run}: no result.json: the run has not finished (--allow-unfinished ships it anyway)")
        s, cfg = bank_set(run)
        if Path(str(cfg.get("teacher"))).name != Path(teacher_name).name:
            raise IfheError(f"{run}: its teacher is {cfg.get('teacher')!r}, not {teacher_name!r}")
        s.name = f"{METHOD_LABELS.get(cfg.get('method'), s.name)} s{s.seed}"
        sets.append(s)
        configs.append(cfg)
        records.append(bank_record(run, s, cfg, teacher_sha, window, n))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise IfheError(f"two runs of one method and seed: {names}")
    return sets, configs, records


def ship(a) -> Path:
    set_cpu_threads(a.threads)
    teacher = resolve_teacher(a.teacher, a.teacher_arch)
    sha = catalog.sha256_of(teacher) or (sha256_file(a.teacher) if Path(a.teacher).is_file() else None)
    if not sha:
        raise IfheError(f"{a.teacher}: no checksum known for this teacher")
    runs = [Path(r) for r in a.runs] if a.runs else sweep_runs(Path(a.sweep), a.variants, a.pair)
    if not runs:
        raise IfheError("no run folders to ship")
    sets, configs, records = load_runs(runs, a.teacher, sha, a.window, a.n, a.allow_unfinished)
    real = real_set(teacher.dataset, a.real) if a.real else None
    report = feature_report(teacher, sets, real, a.stage, h_stages=h_stages_of(configs), teacher_name=a.teacher,
                            n=a.n, window=a.window, n_boot=a.bootstrap, seed=a.seed, classes=teacher.classes,
                            progress=lambda msg: print(f"  {msg}", flush=True))
    out = Path(a.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    info = {"name": Path(a.teacher).name, "sha256": sha, "arch": getattr(teacher, "arch", None),
            "dataset": teacher.dataset}
    made = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_label(machine_info(), a.threads)}
    write_comparison(tmp, report, {s.name: s for s in sets} | ({"real": real} if real else {}), records, info,
                     "python tools/ship_banks.py " + " ".join(sys.argv[1:] if a.argv is None else a.argv), made=made)
    size = folder_size(tmp) / 1e6
    if size > a.max_mb:
        shutil.rmtree(tmp)
        raise IfheError(f"{size:.1f} MB for {len(sets)} banks at n = {report.n}: over --max-mb {a.max_mb:g}; "
                        f"lower --n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"wrote {out}: {len(sets)} banks of {report.n} images from {report.window}, {size:.1f} MB")
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="cifar10_wrn16_2")
    ap.add_argument("--teacher-arch", dest="teacher_arch")
    ap.add_argument("--real", help="folder/.npz with real test images (the shared map is fitted on them)")
    ap.add_argument("--runs", nargs="*", help="finished run folders (each with bank/, config.yaml, result.json)")
    ap.add_argument("--sweep", help="a sweep folder: its cells <sweep>/runs/<pair>/<variant>/seed<k>")
    ap.add_argument("--pair", help="the sweep's pair (needed when it ran several)")
    ap.add_argument("--variants", nargs="*", help="the sweep's variants to ship (default all)")
    ap.add_argument("--window", default=DEFAULT_WINDOW, help="the same share of each run: share:F (the last F) "
                                                             "or share:A-B")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="images per bank (and real)")
    ap.add_argument("--stage", nargs="+", help="default: the penultimate layer (primary), then h's input")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-mb", dest="max_mb", type=float, default=MAX_MB)
    ap.add_argument("--allow-unfinished", action="store_true", help="ship runs without a result.json (not for "
                                                                    "results/shipped/)")
    ap.add_argument("--out", default=str(ROOT / "results" / "shipped" / "feature-banks"))
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    a.argv = argv
    if not a.runs and not a.sweep:
        parser().error("give --runs or --sweep")
    try:
        ship(a)
    except IfheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
