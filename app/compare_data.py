"""The Compare page's data: tables (pandas) and figures (plotly) from run folders (pure functions of RunInfo
lists), and from the results.json of `ifhe reproduce` sweeps (intervals over seeds, paired differences, curves with
bands)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from pathlib import Path

from ifhe import paper
from ifhe.catalog import teacher_info
from ifhe.sweep_stats import analyze, load_results
from ifhe.sweep_report import machine_statement

from .catalog import arch_label, current_cells, run_record, stale_reason
from .runs import RunInfo, find_sweeps


def runs_frame(runs: list[RunInfo]):
    return pd.DataFrame([r.summary() for r in runs])


def _dataset(run: RunInfo) -> str:
    return teacher_info(run.teacher).get("dataset") or "cifar10"


def _pair(run: RunInfo) -> str:
    return f"{arch_label(teacher_info(run.teacher).get('arch'))}/{arch_label(run.student)}"


def alpha_points(runs: list[RunInfo]) -> dict[str, list[tuple[float, float]]]:
    """For each teacher/student pair: (α, best final accuracy) of IFHE runs, sorted by α."""
    best: dict[str, dict[float, float]] = {}
    for r in runs:
        if r.method != "ifhe" or r.final_acc is None:
            continue
        alpha = float(r.synth.get("alpha", 0.0))
        d = best.setdefault(_pair(r), {})
        d[alpha] = max(d.get(alpha, float("-inf")), float(r.final_acc))
    return {pair: sorted(d.items()) for pair, d in best.items()}


def current_run(run: RunInfo) -> bool:
    """Whether a run's figure is of the zoo's teacher now and its method's current preset (`catalog.stale_reason`)."""
    rec = run_record(run.path) or {}
    return not stale_reason(run.teacher, rec.get("teacher_sha256"), run.method, run.config)


def measured_table(runs: list[RunInfo], dataset: str):
    """Rows like the paper's (Teacher, then methods), one column per teacher/student pair we ran with the zoo's
    teacher and the current presets."""
    cells: dict[str, dict[str, float]] = {}
    teachers: dict[str, float] = {}
    for r in runs:
        if r.final_acc is None or _dataset(r) != dataset or not current_run(r):
            continue
        label = next((row for row, m in paper.ROW_METHOD.items() if m == r.method), None)
        if label is None:
            label = r.method  # deepinversion, fast: not in the paper's table, shown under their own names
        pair = _pair(r)
        col = cells.setdefault(pair, {})
        col[label] = max(col.get(label, float("-inf")), float(r.final_acc))
        acc = teacher_info(r.teacher).get("test_accuracy")   # shipped teachers only
        if acc is not None:
            teachers[pair] = acc
    if not cells:
        return None
    rows = ["Teacher"] + [r for r in paper.ROWS if r not in ("Teacher", "Student")]
    rows += sorted({k for c in cells.values() for k in c if k not in rows})
    data = {pair: [teachers.get(pair) if row == "Teacher" else cells[pair].get(row) for row in rows]
            for pair in cells}
    return pd.DataFrame(data, index=rows)


# ---- sweeps of `ifhe reproduce`: seeds, intervals, paired differences, curves with bands --------------------

BANDS = {"min–max over seeds": ("min", "max"), "95% t interval of the mean": ("low", "high")}


def read_sweep_results(path) -> dict:
    """results.json of a sweep (older ones, a bare list of cells, are analysed on reading), with only the cells made
    with the zoo's teacher now and the current presets (the others counted by reason under "left_out"; the sweep
    analysed again over the kept ones when some were left out)."""
    res = load_results(path)
    kept, left_out = current_cells(res.get("cells"), res, Path(path).parent / "sweep.json")
    if left_out:
        planned = [c for c in res.get("missing") or []]
        comparisons = [tuple(c) for c in res.get("comparisons") or []] or None
        res = {**res, **analyze(kept, res.get("budget_minutes"), comparisons, allow_mixed=True, planned=planned),
               "cells": kept} if kept else {**res, "variants": [], "paired": [], "curves": [], "cells": []}
    return {**res, "left_out": left_out}


def current_sweeps(roots) -> tuple[list[tuple[str, Path]], list[str]]:
    """The sweeps holding a cell of the zoo's teacher now and the current presets, and those left out (in words)."""
    kept, out = [], []
    for label, path in find_sweeps(roots):
        try:
            res = load_results(path)
        except Exception:  # listed, so that the page says what is wrong with it
            kept.append((label, path))
            continue
        cells, left_out = current_cells(res.get("cells"), res, Path(path).parent / "sweep.json")
        if cells:
            kept.append((label, path))
        else:
            out.append(f"{label} ({'; '.join(f'{k} cell(s): {why}' for why, k in left_out.items()) or 'no cells'})")
    return kept, out


def _f(x):
    return None if x is None else float(x)


def variants_frame(res: dict):
    rows = []
    for r in res.get("variants", []):
        st_, h = r.get("student_acc") or {}, r.get("head_acc") or {}
        rows.append({"pair": r["pair"], "variant": r["variant"], "n": r["n"],
                     "seeds": ",".join(map(str, r.get("seeds", []))),
                     "student mean": _f(st_.get("estimate")), "std": _f(st_.get("std")),
                     "95% low": _f(st_.get("low")), "95% high": _f(st_.get("high")),
                     "h mean": _f(h.get("estimate")), "rounds": _f((r.get("rounds") or {}).get("estimate")),
                     "KD steps": _f((r.get("kd_steps") or {}).get("estimate")),
                     "paper": r.get("paper")})
    return pd.DataFrame(rows)


def paired_frame(res: dict):
    rows = []
    for d in res.get("paired", []):
        diff = d.get("diff") or {}
        rows.append({"pair": d["pair"], "A − B": f"{d['a']} − {d['b']}", "n": d.get("n"),
                     "seeds": ",".join(map(str, d.get("seeds", []))),
                     "mean difference": _f(diff.get("estimate")), "95% low": _f(diff.get("low")),
                     "95% high": _f(diff.get("high")), "t test p": _f(d.get("t_p")),
                     "sign-flip p": _f(d.get("sign_flip_p")), "paper's claim": d.get("claim") or "",
                     "verdict": d.get("verdict") or "",
                     "left out (other machine)": ",".join(map(str, d.get("excluded_seeds") or []))})
    return pd.DataFrame(rows)


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    return f"rgba({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)}, {alpha})"


def bands_figure(res: dict, band: str = "min–max over seeds"):
    """Mean student accuracy over training time per variant, with a band (BANDS) where a variant has seeds."""
    lo_key, hi_key = BANDS[band]
    curves = res.get("curves", [])
    many = len({c["pair"] for c in curves}) > 1
    fig = go.Figure()
    for i, c in enumerate(curves):
        colour = _PALETTE[i % len(_PALETTE)]
        name = c["variant"] + (f" ({c['pair']})" if many else "") + f", n={c['n']}"
        x = c["minutes"]
        lo, hi = c.get(lo_key), c.get(hi_key)
        if c["n"] > 1 and lo and hi and all(v is not None for v in lo + hi):
            fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", mode="lines",
                                     line=dict(width=0), fillcolor=_rgba(colour, 0.2), hoverinfo="skip",
                                     showlegend=False, legendgroup=name, name=f"{name} band"))
        fig.add_trace(go.Scatter(x=x, y=c["mean"], mode="lines" if c["n"] > 1 else "lines+markers",
                                 line=dict(color=colour), name=name, legendgroup=name))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=10, b=10),
                      xaxis_title="training time (min, evaluations excluded)",
                      yaxis_title="student top-1 (%), mean over seeds", legend=dict(orientation="h", y=-0.25))
    return fig


def means_figure(res: dict):
    """Each variant's mean final accuracy with its 95% t interval as an error bar."""
    fig = go.Figure()
    for pair in dict.fromkeys(r["pair"] for r in res.get("variants", [])):
        rows = [r for r in res["variants"] if r["pair"] == pair]
        est = [_f(r["student_acc"].get("estimate")) for r in rows]
        hi = [None if r["student_acc"].get("high") is None else r["student_acc"]["high"] - e
              for r, e in zip(rows, est)]
        lo = [None if r["student_acc"].get("low") is None else e - r["student_acc"]["low"]
              for r, e in zip(rows, est)]
        fig.add_trace(go.Scatter(x=[r["variant"] for r in rows], y=est, mode="markers", name=pair,
                                 error_y=dict(type="data", symmetric=False, array=[h or 0 for h in hi],
                                              arrayminus=[x or 0 for x in lo])))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="student top-1 (%)",
                      legend=dict(orientation="h", y=-0.3))
    return fig


def machine_text(res: dict) -> str:
    """What table.md says about the machine(s), for the page."""
    if not res.get("machines"):
        return "**Machine:** not recorded."
    return machine_statement(res)
