"""Sweeps of runs under equal wall-clock budgets, resumable cell by cell, summarised as tables and curves.

A cell is (teacher-student pair, method variant, seed); its run lives in <out>/runs/<pair>/<variant>/seed<k>.
A finished cell leaves summary.json and is skipped by a rerun; an unfinished one is resumed from its
checkpoint. Run time excludes evaluations and counts CPU time per thread (see experiment._Clock), so every
method gets the same training time even when other work shares the machine.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import atomic_write_text
from .config import make_config, to_dict
from .errors import IfheError
from .jsonl import JsonlLog

# name -> (method preset, synth overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "deepinversion": ("deepinversion", {}), "adi": ("adi", {}), "dafl": ("dafl", {}), "zskt": ("zskt", {}),
    "dfq": ("dfq", {}), "cmi": ("cmi", {}), "fast": ("fast", {}), "ifhe": ("ifhe", {}),
    "ifhe-a0": ("ifhe", {"alpha": 0.0}), "ifhe-a0.5": ("ifhe", {"alpha": 0.5}), "ifhe-a1": ("ifhe", {"alpha": 1.0}),
    "dafl+ifhe": ("dafl", {"alpha": 0.5}), "dfq+ifhe": ("dfq", {"alpha": 0.5}),
}

# The paper's CIFAR-10 table (WRN40-2 -> WRN16-1 column) and ablations, for side-by-side display.
PAPER_CIFAR10_WRN40_2_WRN16_1 = {"teacher": 94.87, "student (scratch)": 91.12, "dafl": 65.71, "zskt": 83.74,
                                 "adi": 83.04, "dfq": 86.14, "cmi": 90.01, "ifhe": 91.80, "ifhe-a0": 91.23,
                                 "ifhe-a0.5": 91.80, "ifhe-a1": 91.66, "dafl+ifhe": 69.18}
PAPER_NOTES = {"deepinversion": "ADI row (DeepInversion with its adaptive term): 83.04",
               "dafl+ifhe": "ablation table: DAFL 66.43 -> 69.18", "dfq+ifhe": "ablation table: DFQ 84.86 -> 85.96"}

TABLES = {"cifar10": [("cifar10_wrn16_2", "wrn16_1"), ("cifar10_wrn40_2", "wrn16_1"),
                      ("cifar10_wrn40_2", "wrn40_1"), ("cifar10_wrn40_2", "wrn16_2")]}


@dataclass(frozen=True)
class Cell:
    teacher: str
    student: str
    variant: str
    seed: int

    @property
    def pair(self) -> str:
        return f"{self.teacher}-{self.student}"

    def folder(self, out: Path) -> Path:
        return out / "runs" / self.pair / self.variant / f"seed{self.seed}"


def plan(table: str, variants: list[str], seeds: int, available: list[str]) -> list[Cell]:
    if table not in TABLES:
        raise IfheError(f"--table {table!r}: known tables: {', '.join(TABLES)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise IfheError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if seeds < 1:
        raise IfheError(f"--seeds must be >= 1, got {seeds}")
    pairs = [(t, s) for t, s in TABLES[table] if t in available]
    if not pairs:
        raise IfheError(f"no teacher of table {table} is in the zoo; train one with `ifhe train-teacher --publish`")
    return [Cell(t, s, v, seed) for t, s in pairs for v in variants for seed in range(seeds)]


def run_cell(cell: Cell, out: Path, budget_minutes: float, data: str | None, overrides: dict | None = None,
             teacher=None, test_set=True, final_test_set=None, on_event=None) -> dict:
    """Run (or resume, or skip) one cell; returns its summary."""
    from .evaluation import evaluate
    from .experiment import CHECKPOINT, Run, run_to_end

    folder = cell.folder(out)
    summary_path = folder / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    method, synth = VARIANTS[cell.variant]
    o = dict(overrides or {})
    cfg = make_config(method, "cpu", synth={**synth, **o.pop("synth", {})}, distill=o.pop("distill", {}),
                      teacher=cell.teacher, student=cell.student, seed=cell.seed, budget_minutes=budget_minutes,
                      rounds=10 ** 6, data=data, **{"clock": "cpu", **o})
    run = Run(cfg, folder, resume=(folder / CHECKPOINT).exists(), teacher=teacher, test_set=test_set)
    fin = run_to_end(run, on_event)
    final_acc = fin.student_acc
    if final_test_set is not None:
        final_acc = evaluate(run.student, final_test_set, run.teacher.normalizer, run.device)
    curve = [{"elapsed_s": r["elapsed_s"], "student_acc": r["student_acc"], "head_acc": r.get("head_acc")}
             for r in JsonlLog(folder / "metrics.jsonl").read() if r.get("student_acc") is not None]
    summary = {"cell": cell.__dict__, "variant": cell.variant, "pair": cell.pair, "seed": cell.seed,
               "student_acc": final_acc, "head_acc": fin.head_acc, "rounds": fin.round,
               "kd_steps": run.progress.kd_steps, "bank_size": fin.bank_size, "elapsed_s": fin.elapsed_s,
               "reason": fin.reason, "config": to_dict(run.cfg), "curve": curve,
               "final_test_images": len(final_test_set) if final_test_set is not None else None}
    atomic_write_text(summary_path, json.dumps(summary, indent=1))
    return summary


def _mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _time_unit(summaries: list[dict]) -> str:
    """How the budgets were measured, from the runs' own configs (threads may differ between sweeps)."""
    threads = sorted({s["config"].get("threads") for s in summaries if s.get("config")} - {None})
    t = "/".join(map(str, threads)) if threads else "all cores'"
    bf16 = any(s["config"].get("precision") == "bf16" for s in summaries if s.get("config"))
    return f"CPU time per thread, {t} thread{'s' if t != '1' else ''}{', bf16 forward passes' if bf16 else ''}"


def table_markdown(summaries: list[dict], zoo: dict[str, dict], budget_minutes: float) -> str:
    pairs = list(dict.fromkeys(s["pair"] for s in summaries))
    variants = list(dict.fromkeys(s["variant"] for s in summaries))
    head = "| | " + " | ".join(f"{p.split('-')[0].split('_', 1)[1]} → {p.split('-')[1]} (ours)" for p in pairs)
    head += " | paper, WRN40-2 → WRN16-1 |"
    lines = [head, "|---" * (len(pairs) + 2) + "|"]
    teacher_row = ["teacher"] + [f"{zoo.get(p.split('-')[0], {}).get('test_accuracy', '–')}" for p in pairs]
    lines.append("| " + " | ".join(teacher_row) + f" | {PAPER_CIFAR10_WRN40_2_WRN16_1['teacher']} |")
    scratch = []
    for p in pairs:
        dataset, student = p.split("-")[0].split("_", 1)[0], p.split("-")[1]
        scratch.append(str(zoo.get(f"{dataset}_{student}", {}).get("test_accuracy", "–")))
    lines.append("| student from scratch (real data) | " + " | ".join(scratch) +
                 f" | {PAPER_CIFAR10_WRN40_2_WRN16_1['student (scratch)']} |")
    for v in variants:
        cells = [_mean_std([s["student_acc"] for s in summaries if s["variant"] == v and s["pair"] == p])
                 for p in pairs]
        paper = PAPER_CIFAR10_WRN40_2_WRN16_1.get(v, PAPER_NOTES.get(v, "–"))
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {paper} |")
    n_seeds = len({s["seed"] for s in summaries})
    lines.append("")
    lines.append(f"Student top-1 (%) on the real CIFAR-10 test set (all 10,000 images) after {budget_minutes:g} "
                 f"minutes of training time per run ({_time_unit(summaries)}; evaluations excluded), "
                 f"mean ± std over {n_seeds} seed(s).")
    return "\n".join(lines) + "\n"


def write_curves(summaries: list[dict], out: Path) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    fig_p = go.Figure()
    f, ax = plt.subplots(figsize=(7, 4.2))
    for s in summaries:
        if not s["curve"]:
            continue
        xs = [c["elapsed_s"] / 60 for c in s["curve"]]
        ys = [c["student_acc"] for c in s["curve"]]
        label = f"{s['variant']} ({s['pair']}, seed {s['seed']})"
        ax.plot(xs, ys, marker=".", label=label)
        fig_p.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label))
    ax.set_xlabel(f"training time (min of {_time_unit(summaries)}; evaluation excluded)")
    ax.set_ylabel("student top-1 on real test images (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    f.tight_layout()
    paths = {"png": out / "curves.png", "html": out / "curves.html"}
    f.savefig(paths["png"], dpi=110)
    plt.close(f)
    fig_p.update_layout(xaxis_title="training time (min)", yaxis_title="student top-1 (%)")
    paths["html"].write_text(fig_p.to_html(include_plotlyjs=True, full_html=True))
    return paths


def write_results(summaries: list[dict], out: Path, budget_minutes: float) -> dict[str, Path]:
    from .zoo import read_manifest

    out.mkdir(parents=True, exist_ok=True)
    paths = write_curves(summaries, out)
    paths["md"] = out / "table.md"
    paths["md"].write_text(table_markdown(summaries, read_manifest(), budget_minutes))
    paths["json"] = out / "results.json"
    atomic_write_text(paths["json"], json.dumps(summaries, indent=1))
    return paths
