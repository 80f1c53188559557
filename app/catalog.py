"""What the pages offer to choose from, read without importing torch: the teacher/student pairs (every shipped
teacher with each student architecture, and the paper's pairs) and the figures measured for a pair (run folders
and sweep results).

The Synthesize page is the first page a user sees; importing torch (2-3 s here) before drawing it made the first
page take 7-10 s. The shipped models, their roles and the architecture names come from the engine's torch-free
catalogue (`ifhe.catalog`); what is here is the app's own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ifhe.catalog import ARCHITECTURES, default_teacher, read_manifest, teachers  # noqa: F401 (the pages' names)
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

@dataclass(frozen=True)
class Figure:
    method: str
    student_acc: float
    source: str           # "run <folder>" or "sweep <label>, n seeds"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _run_figures(runs_dir: Path) -> dict[tuple[str, str], list[Figure]]:
    """From the run folders directly under `runs_dir`: result.json (written when a run ends), else config.yaml
    and the app's status.json."""
    out: dict[tuple[str, str], list[Figure]] = {}
    if not runs_dir.is_dir():
        return out
    for run in runs_dir.iterdir():
        if run.is_symlink() or not run.is_dir():
            continue
        res = _read_json(run / "result.json") or {}
        if not isinstance(res, dict) or not res.get("teacher"):
            status = _read_json(run / "status.json")
            if not isinstance(status, dict) or not (run / "config.yaml").is_file():
                continue
            try:
                cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
            except Exception:
                continue
            if not isinstance(cfg, dict):
                continue
            res = {"teacher": cfg.get("teacher"), "student": cfg.get("student"), "method": cfg.get("method"),
                   "student_acc": status.get("student_acc")}
        acc = res.get("student_acc")
        if isinstance(acc, (int, float)) and res.get("student") and res.get("method"):
            key = (str(res["teacher"]), str(res["student"]))
            out.setdefault(key, []).append(Figure(str(res["method"]), float(acc), f"run {run.name}"))
    return out


def _sweep_figures(roots) -> dict[tuple[str, str], list[Figure]]:
    """From the results.json of `ifhe reproduce` sweeps: each variant's mean over its seeds."""
    out: dict[tuple[str, str], list[Figure]] = {}
    for label, path in find_sweeps(roots):
        data = _read_json(path)
        cells = data.get("cells") if isinstance(data, dict) else data
        groups: dict[tuple[str, str, str], list[float]] = {}
        for c in cells if isinstance(cells, list) else []:
            if not isinstance(c, dict) or not isinstance(c.get("cell"), dict):
                continue
            cell, acc = c["cell"], c.get("student_acc")
            if isinstance(acc, (int, float)) and cell.get("teacher") and cell.get("student") and cell.get("variant"):
                groups.setdefault((str(cell["teacher"]), str(cell["student"]), str(cell["variant"])), []).append(acc)
        for (teacher, student, variant), accs in groups.items():
            n = len(accs)
            out.setdefault((teacher, student), []).append(
                Figure(variant, sum(accs) / n, f"sweep {label}, {'mean of ' if n > 1 else ''}{n} seed{'s' * (n > 1)}"))
    return out


def measured(runs_dir, result_roots=()) -> dict[tuple[str, str], list[Figure]]:
    """Final student accuracies measured for each (teacher zoo name, student architecture): the best run per
    method and every sweep variant, best first."""
    found = _run_figures(Path(runs_dir))
    for key, figs in _sweep_figures(result_roots).items():
        found.setdefault(key, []).extend(figs)
    out = {}
    for key, figs in found.items():
        best_runs: dict[str, Figure] = {}
        sweeps = []
        for f in figs:
            if f.source.startswith("run "):
                if f.method not in best_runs or f.student_acc > best_runs[f.method].student_acc:
                    best_runs[f.method] = f
            else:
                sweeps.append(f)
        out[key] = sorted(list(best_runs.values()) + sweeps, key=lambda f: -f.student_acc)
    return out
