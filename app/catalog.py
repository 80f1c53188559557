"""What the pages offer to choose from, read without importing torch: the teacher/student pairs (every shipped
teacher with each student architecture, and the paper's pairs) and the figures measured for a pair (run folders
and sweep results), only those of the zoo's teacher now and the current presets.

The Synthesize page is the first page a user sees; importing torch (2-3 s here) before drawing it made the first
page take 7-10 s. The shipped models, their roles and the architecture names come from the engine's torch-free
catalogue (`ifhe.catalog`); what is here is the app's own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from ifhe.catalog import ARCHITECTURES, default_teacher, read_manifest, teachers  # noqa: F401 (the pages' names)
from ifhe.config import make_config, to_dict
from ifhe.cpu import same_cpu_kind
from ifhe.methods import variants
from ifhe.paper import PAIR_ARCHS

from .runs import find_sweeps


def arch_label(arch: str | None) -> str:
    """wrn40_2 -> WRN40-2, resnet18 -> ResNet18, vgg11_bn -> VGG11 (the paper's way of writing them)."""
    if not arch:
        return "?"
    a = arch.replace("_bn", "")
    if a.startswith("wrn"):
        depth, width = a[3:].split("_")
        return f"WRN{depth}-{width}"
    if a.startswith("resnet"):
        return f"ResNet{a[6:]}"
    return a.upper()


def teacher_label(name: str) -> str:
    e = read_manifest().get(name, {})
    acc = e.get("test_accuracy")
    arch = arch_label(e.get("arch"))
    return f"{name} ({arch}, {acc:.1f}% test)" if acc is not None else f"{name} ({arch})"


# ---- teacher/student pairs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """A teacher/student pair the Synthesize page offers: a shipped teacher with a student architecture, or one of
    the paper's pairs whose teacher is not shipped (`teacher` None: upload one or train it)."""

    teacher: str | None
    teacher_arch: str
    student: str
    paper: bool

    @property
    def value(self) -> str:
        """The picker's value: zoo:<teacher>:<student>, or paper:<teacher arch>:<student>."""
        return f"zoo:{self.teacher}:{self.student}" if self.teacher else f"paper:{self.teacher_arch}:{self.student}"

    @property
    def title(self) -> str:
        return f"{arch_label(self.teacher_arch)} → {arch_label(self.student)}"


UPLOAD = "upload"   # the picker's value for "a teacher of my own"


def pairs(dataset: str) -> list[Pair]:
    """Every shipped teacher of `dataset` (best first) with each student architecture (the paper's students
    first), then the paper's pairs whose teacher architecture is not shipped."""
    entries = read_manifest()
    out = []
    for name in teachers(dataset):
        t_arch = entries[name].get("arch", "?")
        paper_students = [s for t, s in PAIR_ARCHS if t == t_arch]
        for s in paper_students + [a for a in ARCHITECTURES if a not in paper_students]:
            out.append(Pair(name, t_arch, s, s in paper_students))
    shipped_archs = {p.teacher_arch for p in out}
    out += [Pair(None, t, s, True) for t, s in PAIR_ARCHS if t not in shipped_archs]
    return out


def parse_pair(value: str) -> tuple[str, str | None]:
    """(teacher, student) for the form from a picker value: teacher is a zoo name, UPLOAD, or paper:<arch>."""
    if value == UPLOAD:
        return UPLOAD, None
    kind, teacher, student = value.split(":", 2)
    return (teacher if kind == "zoo" else f"paper:{teacher}"), student


def pair_value(teacher: str | None, student: str) -> str:
    if teacher == UPLOAD or not teacher:
        return UPLOAD
    if teacher.startswith("paper:"):
        return f"paper:{teacher[6:]}:{student}"
    return f"zoo:{teacher}:{student}"


def train_command(arch: str, dataset: str) -> str:
    """How to make a missing teacher: train it, then it is shipped under the name the pair picker looks for."""
    name = f"{dataset}_{arch}"
    return (f"ifhe train-teacher --arch {arch} --dataset {dataset} --epochs 200 --out runs/teachers/{name} "
            f"--publish {name}")


# ---- figures measured for a pair ---------------------------------------------------------------------------
# Shown only when made with the teacher the zoo ships now (its manifest checksum, as the run or the sweep recorded
# it: a figure that does not record it is unknown and left out) and with the method's current preset (every
# setting the run recorded under synth and distill equals the preset's, with the sweep variant's own changes).

@dataclass(frozen=True)
class Figure:
    method: str
    student_acc: float
    source: str           # "run <folder>" or "sweep <label>"
    n: int = 1            # seeds (runs) behind the figure
    low: float | None = None
    high: float | None = None
    minutes: float | None = None
    threads: int | None = None       # torch threads of each run: a budget is minutes of CPU time per thread
    kd_share: float = 0.0            # the budget rule the run used (0: the preset's own KD steps per round)
    precision: str | None = None     # what was asked for (auto, fp32, bf16)
    machine: dict | None = None      # the machine the figure was measured on, as the run or the sweep recorded it

    def budget_text(self) -> str:
        """'10 min on 2 cores' / '20 min'."""
        if not self.minutes:
            return ""
        return f"{self.minutes:g} min" + (f" on {self.threads} cores" if self.threads and self.threads > 1 else "")

    def text(self) -> str:
        """'ifhe 48.5% [27.0, 70.0] (sweep results/sweep-a, 3 seeds, 20 min)' or '... (one run: run x)'."""
        budget = f", {self.budget_text()}" if self.minutes else ""
        if self.kd_share:
            budget += f", KD share {self.kd_share:g}"
        if self.n > 1 and self.low is not None and self.high is not None:
            return (f"{self.method} {self.student_acc:.1f}% [{self.low:.1f}, {self.high:.1f}] ({self.source}, "
                    f"{self.n} seeds{budget})")
        return f"{self.method} {self.student_acc:.1f}% (one run: {self.source}{budget})"


@dataclass
class Measured:
    """The figures of one (teacher, student) pair, seeded sweeps first, and how many were left out and why."""

    figures: list = field(default_factory=list)
    left_out: dict = field(default_factory=dict)      # reason -> count


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def teacher_checksum(teacher: str | None) -> str | None:
    """The sha256 of the zoo's teacher of that name now (None: not a shipped teacher)."""
    return read_manifest().get(str(teacher), {}).get("sha256") if teacher else None


@lru_cache(maxsize=64)
def preset_settings(variant: str) -> dict | None:
    """The synth and distill settings of a method or sweep variant's current CPU preset (None: unknown)."""
    spec = variants().get(variant)
    if spec is None:
        return None
    method, synth = spec
    d = to_dict(make_config(method, "cpu", synth=synth))
    return {"synth": d["synth"], "distill": d["distill"]}


# How a budget is split between synthesis and KD is the run's budget rule (README "Budgets"), not the preset's: a
# figure made under the rule stays current, and says which share it used.
BUDGET_RULE = {"distill": ("kd_share",)}
# the longest budget the Distill page opens on (the "a student worth showing in ten minutes"); figures of
# longer runs are named beside it
DEFAULT_MINUTES = 10.0


def _differs(recorded, preset) -> bool:
    if isinstance(recorded, (list, tuple)) or isinstance(preset, (list, tuple)):
        return list(recorded or []) != list(preset or [])
    if isinstance(recorded, (int, float)) and isinstance(preset, (int, float)) and not isinstance(recorded, bool):
        return abs(recorded - preset) > 1e-9 * max(1.0, abs(preset))
    return recorded != preset


def stale_reason(teacher: str | None, sha: str | None, variant: str | None, config: dict | None) -> str:
    """Why a figure is not one of this teacher and the current preset ('' when it is)."""
    current = teacher_checksum(teacher)
    if not sha:
        return "the teacher's checksum was not recorded"
    if sha != current:
        return "made with another version of the teacher"
    preset = preset_settings(str(variant))
    if preset is None or not isinstance(config, dict) or not all(config.get(k) for k in ("synth", "distill")):
        return "settings not recorded or not a preset"
    for section, values in preset.items():
        recorded = config.get(section) or {}
        rule = BUDGET_RULE.get(section, ())
        if any(k in recorded and k not in rule and _differs(recorded[k], v) for k, v in values.items()):
            return "made with other settings than the current preset"
    return ""


def run_record(run: Path) -> dict | None:
    """A run folder's figure as the engine (result.json) or the app (status.json, config.yaml) left it: teacher,
    student, method, student_acc, teacher_sha256, config; None without one."""
    res = _read_json(run / "result.json")
    status = _read_json(run / "status.json")
    res = res if isinstance(res, dict) else {}
    status = status if isinstance(status, dict) else {}
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else None
    except Exception:
        cfg = None
    cfg = cfg if isinstance(cfg, dict) else {}
    if not res.get("teacher") and not (status and cfg):
        return None
    return {"teacher": res.get("teacher") or cfg.get("teacher"), "student": res.get("student") or cfg.get("student"),
            "method": res.get("method") or cfg.get("method"),
            "student_acc": res.get("student_acc", status.get("student_acc")),
            "teacher_sha256": res.get("teacher_sha256") or status.get("teacher_sha256"), "config": cfg,
            "minutes": cfg.get("budget_minutes")}


def _run_settings(config: dict | None, machine: dict | None = None, threads: int | None = None) -> dict:
    """A figure's threads, budget rule, precision asked for and machine, from what its run recorded (a run folder
    records no machine; a sweep cell does)."""
    config = config if isinstance(config, dict) else {}
    share = (config.get("distill") or {}).get("kd_share") or 0.0
    return {"threads": threads or config.get("threads"), "kd_share": float(share),
            "precision": config.get("precision"), "machine": machine}


def _run_figures(runs_dir: Path, out: dict) -> None:
    """Figures of the run folders directly under `runs_dir` (the best run per method is kept later)."""
    if not runs_dir.is_dir():
        return
    for run in runs_dir.iterdir():
        if run.is_symlink() or not run.is_dir():
            continue
        rec = run_record(run)
        if rec is None or not isinstance(rec["student_acc"], (int, float)) or not rec["student"] or not rec["method"]:
            continue
        m = out.setdefault((str(rec["teacher"]), str(rec["student"])), Measured())
        why = stale_reason(rec["teacher"], rec["teacher_sha256"], rec["method"], rec["config"])
        if why:
            m.left_out[why] = m.left_out.get(why, 0) + 1
            continue
        m.figures.append(Figure(str(rec["method"]), float(rec["student_acc"]), f"run {run.name}",
                                minutes=rec["minutes"], **_run_settings(rec["config"])))


def sweep_teacher_sha(data: dict, sweep_json: Path, teacher: str) -> str | None:
    """The teacher checksum a whole sweep recorded (results.json or sweep.json: a string, or name -> sha256)."""
    for doc in (data, _read_json(sweep_json) or {}):
        sha = doc.get("teacher_sha256") if isinstance(doc, dict) else None
        if isinstance(sha, dict):
            sha = sha.get(teacher)
        if sha:
            return sha
    return None


def current_cells(cells: list, data: dict, sweep_json: Path) -> tuple[list, dict]:
    """The cells of a sweep made with the zoo's teacher now and the current presets, and the others' reasons."""
    kept, left_out = [], {}
    for c in cells if isinstance(cells, list) else []:
        if not isinstance(c, dict) or not isinstance(c.get("cell"), dict):
            continue
        cell = c["cell"]
        sha = c.get("teacher_sha256") or sweep_teacher_sha(data, sweep_json, str(cell.get("teacher")))
        why = stale_reason(cell.get("teacher"), sha, cell.get("variant"), c.get("config"))
        if why:
            left_out[why] = left_out.get(why, 0) + 1
        else:
            kept.append(c)
    return kept, left_out


def _sweep_figures(roots, out: dict) -> None:
    """Each current variant of every `ifhe reproduce` sweep: its mean over seeds, with the sweep's own t interval
    when every seed it analysed is current."""
    for label, path in find_sweeps(roots):
        data = _read_json(path)
        cells = data.get("cells") if isinstance(data, dict) else data
        kept, left_out = current_cells(cells, data if isinstance(data, dict) else {}, path.parent / "sweep.json")
        analysed = {(v.get("pair"), v.get("variant")): v for v in (data.get("variants") or [])} \
            if isinstance(data, dict) else {}
        groups: dict[tuple, list] = {}
        for c in kept:
            cell, acc = c["cell"], c.get("student_acc")
            if isinstance(acc, (int, float)) and cell.get("teacher") and cell.get("student"):
                groups.setdefault((str(cell["teacher"]), str(cell["student"]), str(cell["variant"]),
                                   c.get("pair")), []).append(c)
        for (teacher, student, variant, pair), cs in groups.items():
            m = out.setdefault((teacher, student), Measured())
            m.figures.append(_variant_figure(variant, cs, analysed.get((pair, variant)), f"sweep {label}"))
        for (teacher, student) in {(str(c["cell"].get("teacher")), str(c["cell"].get("student")))
                                   for c in (cells if isinstance(cells, list) else []) if isinstance(c, dict)
                                   and isinstance(c.get("cell"), dict)}:
            m = out.setdefault((teacher, student), Measured())
            for why, k in left_out.items():
                m.left_out[why] = m.left_out.get(why, 0) + k


def _variant_figure(variant: str, cells: list, analysed: dict | None, source: str) -> Figure:
    accs = [float(c["student_acc"]) for c in cells]
    first = cells[0]
    minutes = (first.get("config") or {}).get("budget_minutes")
    settings = _run_settings(first.get("config"), first.get("machine"), first.get("threads"))
    acc = (analysed or {}).get("student_acc") or {}
    if analysed and analysed.get("n") == len(accs) and acc.get("low") is not None:
        return Figure(variant, float(acc["estimate"]), source, len(accs), acc["low"], acc["high"], minutes,
                      **settings)
    if len(accs) > 1:   # some seeds left out: the interval of those kept (scipy only on this rare path)
        from ifhe.stats import mean_interval
        iv = mean_interval(accs)
        return Figure(variant, iv.estimate, source, len(accs), iv.low, iv.high, minutes, **settings)
    return Figure(variant, accs[0], source, 1, minutes=minutes, **settings)


def measured(runs_dir, result_roots=()) -> dict[tuple[str, str], Measured]:
    """Final student accuracies measured for each (teacher zoo name, student architecture) with the zoo's teacher
    and the current presets: seeded sweeps first (with n and the interval), then single runs (a sweep's one seed,
    or the best run folder per method); with the count of figures left out and why."""
    found: dict[tuple[str, str], Measured] = {}
    _run_figures(Path(runs_dir), found)
    _sweep_figures(result_roots, found)
    for m in found.values():
        best_runs: dict[str, Figure] = {}
        sweeps = []
        for f in m.figures:
            if f.source.startswith("run "):
                if f.method not in best_runs or f.student_acc > best_runs[f.method].student_acc:
                    best_runs[f.method] = f
            else:
                sweeps.append(f)
        m.figures = sorted(list(best_runs.values()) + sweeps, key=lambda f: (f.n < 2, -f.student_acc))
    return found


def measured_best(m: Measured | None, here: dict, max_minutes: float | None = DEFAULT_MINUTES
                  ) -> tuple[Figure, bool] | None:
    """The best figure of a sweep (seeded, a preset as shipped, under a time budget) for a pair: the one measured
    on this kind of machine when there is one (True), else the best measured elsewhere (False); None without any.
    Only budgets up to `max_minutes` compete (the shortest measured if none is that short; None: every budget),
    so the page opens on what a newcomer can wait for, not on an hour-long run. A sweep's mean over more seeds is
    preferred to a single seed only through its value: figures are ranked by their mean, each shown with its n."""
    sweeps = [f for f in (m.figures if m else []) if f.source.startswith("sweep ") and f.minutes]
    if not sweeps:
        return None
    here_kind = [f for f in sweeps if same_cpu_kind(f.machine, here)]
    pool = here_kind or sweeps
    if max_minutes is not None:
        pool = [f for f in pool if f.minutes <= max_minutes] or \
            [f for f in pool if f.minutes == min(g.minutes for g in pool)]
    return max(pool, key=lambda f: f.student_acc), bool(here_kind)


def sweep_command(source: str) -> str:
    """The command that reproduces a sweep figure: 'sweep results/sweep-g' -> 'bash tools/sweeps.sh g'."""
    folder = source.removeprefix("sweep ").rstrip("/")
    name = folder.rsplit("/", 1)[-1]
    return f"bash tools/sweeps.sh {name[6:]}" if name.startswith("sweep-") else f"ifhe reproduce --report --out {folder}"

