"""The report of a sweep: table.md (the comparison with the paper, intervals over seeds, paired differences and
verdicts, every cell and its machine), results.json and the curves (curves.png, curves.html), from the finished
cells' summaries and their statistics (`ifhe.sweep_stats`)."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import plotly.graph_objects as go

from . import catalog
from .config import reference_kd_passes
from .fileio import atomic_write_text, json_safe
from .machine import DEFAULT_TOLERANCE
from .stats import Interval
from .sweep_stats import (paper_column, analyze, calibration_text, cell_id, curve_bands,
                          pairs_and_variants, time_unit)


def _mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _iv(d: dict | None, digits: int = 2) -> str:
    """'63.35 [61.02, 65.68]' from an Interval's dict (NaN may have become None in JSON)."""
    if not d:
        return "–"
    f = {k: (float("nan") if d.get(k) is None else d[k]) for k in ("estimate", "low", "high", "std")}
    return Interval(f["estimate"], f["low"], f["high"], d.get("n", 0), f["std"], d.get("method", "t")).text(digits)


def _num(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def _pair_label(pair: str, summaries: list[dict]) -> str:
    s = next((s for s in summaries if s["pair"] == pair), None)
    cell = (s or {}).get("cell") or {}
    teacher, student = cell.get("teacher"), cell.get("student")
    if not teacher:
        teacher, _, student = pair.rpartition("-")
    return f"{teacher.split('_', 1)[-1]} → {student}"


def _dataset_of(summaries: list[dict]) -> str:
    ds = {s.get("dataset") or (s.get("cell") or {}).get("teacher", "cifar10").split("_", 1)[0] for s in summaries}
    return "/".join(sorted(d.upper().replace("CIFAR", "CIFAR-") for d in ds))


def machine_statement(analysis: dict) -> str:
    m = analysis["machines"]
    if not m["recorded"]:
        return ("**Machine:** not recorded (cells run before sweeps recorded their machine and calibration); "
                "compare these figures only with figures of the same sweep.")
    cal = m["reference"] or {}
    unit = "CPU seconds per thread" if cal.get("clock", "cpu per thread").startswith("cpu") else "wall seconds"
    k = m.get("reference_invocation")
    when = f"invocation {k} of the sweep" if k is not None else "the sweep"
    text = (f"**Machine:** {analysis['machine']['label']}. **Calibration:** {calibration_text(cal)} per fixed "
            f"WRN-16-2 training step at batch 128 (fp32, {unit}), measured at the start of {when}, which "
            f"finished the first cell; every cell below ran within {100 * m['tolerance']:.0f}% of it.")
    if m["mixed"]:
        text = (f"**Mixed machines** (`--allow-mixed-machines`): cells ran on {len(m['machines'])} machines by "
                f"their calibrations, " + "; ".join(f"{x['id']} = {x['label']}, {calibration_text(x['calibration_s'])}"
                                                   for x in m["machines"]) +
                ". The cell table names each cell's machine (* = resumed across machines, ? = not recorded); a "
                "row mixing machines is marked †; paired differences use only seeds whose two cells ran on "
                "the same machine. Do not read the means of marked rows as one machine's figure.")
    return text


def table_markdown(summaries: list[dict], zoo: dict[str, dict], budget_minutes: float,
                   analysis: dict | None = None) -> str:
    """table.md: the machine, the comparison with the paper, per-variant intervals, paired differences, cells."""
    if analysis is None:
        analysis = analyze(summaries, budget_minutes)
    lines = [machine_statement(analysis), ""]
    lines += _paper_table(summaries, zoo, budget_minutes, analysis)
    lines += _variants_table(summaries, analysis)
    lines += _paired_table(summaries, analysis)
    lines += _cells_table(summaries, analysis)
    if analysis.get("missing"):
        lines += ["", f"Not finished yet ({len(analysis['missing'])} cells, not in this table): "
                      + ", ".join(analysis["missing"]) + "."]
    return "\n".join(lines) + "\n"


def _teacher_accuracy(pair: str, summaries: list[dict], zoo: dict[str, dict]) -> str:
    """The shipped teacher's accuracy, if it is the teacher the cells ran with (a teacher replaced since is named by
    its checksum: the manifest no longer holds its accuracy)."""
    entry = zoo.get(pair.rpartition("-")[0], {})
    used = {s.get("teacher_sha256") for s in summaries if s["pair"] == pair} - {None}
    if used and used != {entry.get("sha256")}:
        return "sha256 " + ", ".join(sorted(u[:12] for u in used)) + " (since replaced)"
    return str(entry.get("test_accuracy", "–"))


def _paper_table(summaries: list[dict], zoo: dict[str, dict], budget_minutes: float, analysis: dict) -> list[str]:
    """Our mean ± std per variant and pair next to the paper's figure (rows marked † mix machines)."""
    pairs, variants = pairs_and_variants(summaries)
    cm = analysis["machines"]["cell_machine"]
    mixed_row = {}
    for s in summaries:
        mixed_row.setdefault((s["pair"], s["variant"]), set()).add(cm.get(cell_id(s), ""))
    # one paper column per distinct paper pair our pairs sit beside (the same architectures where the paper has them)
    columns = list({label: (figures, notes) for label, figures, notes in (paper_column(p) for p in pairs)}.items())
    head = "| | " + " | ".join(f"{_pair_label(p, summaries)} (ours)" for p in pairs)
    head += "".join(f" | paper, {label}" for label, _ in columns) + " |"
    lines = [head, "|---" * (len(pairs) + len(columns) + 1) + "|"]

    def paper_cells(key: str) -> str:
        return "".join(f" | {figures.get(key, notes.get(key, '–'))}" for _, (figures, notes) in columns) + " |"

    teacher_row = ["teacher"] + [_teacher_accuracy(p, summaries, zoo) for p in pairs]
    lines.append("| " + " | ".join(teacher_row) + paper_cells("teacher"))
    scratch = []
    for p in pairs:
        teacher, student = p.rpartition("-")[0], p.rpartition("-")[2]
        scratch.append(str(zoo.get(f"{teacher.split('_', 1)[0]}_{student}", {}).get("test_accuracy", "–")))
    lines.append("| student from scratch (real data) | " + " | ".join(scratch) + paper_cells("student (scratch)"))
    for v in variants:
        cells = []
        for p in pairs:
            accs = [s["student_acc"] for s in summaries if s["variant"] == v and s["pair"] == p]
            ms = mixed_row.get((p, v), set())
            mark = " †" if analysis["machines"]["mixed"] and (len(ms) > 1 or any("*" in m or m == "?" for m in ms)) \
                else ""
            cells.append(_mean_std(accs) + (f" (n={len(accs)})" if len(accs) > 1 else "") + mark)
        lines.append(f"| {v} | " + " | ".join(cells) + paper_cells(v))
    n_seeds = len({s["seed"] for s in summaries})
    n_images = {s.get("final_test_images") for s in summaries} - {None}
    images = f"all {n_images.pop():,} images" if len(n_images) == 1 else "the test images"
    lines.append("")
    rounds = {s.get("rounds") for s in summaries}
    if summaries and all(s.get("reason") == "rounds" for s in summaries) and len(rounds) == 1:
        # an equal-steps sweep (e.g. fp32 against bf16): its time budget is a ceiling that never bound
        after = f"{rounds.pop()} rounds per run (equal steps: the {budget_minutes:g}-minute budget did not bind)"
    else:
        after = f"{budget_minutes:g} minutes of training time per run ({time_unit(summaries)}; evaluations excluded)"
    lines.append(f"Student top-1 (%) on the real {_dataset_of(summaries)} test set ({images}) after {after}, "
                 f"mean ± std over {n_seeds} seed(s).")
    return lines


def _variants_table(summaries: list[dict], analysis: dict) -> list[str]:
    lines = ["", "### Per variant over seeds: mean, standard deviation, 95% t interval", "",
             "| pair | variant | seeds | student top-1 mean | std | 95% interval | h top-1 mean [95%] | "
             "rounds mean [95%] | KD steps mean [95%] |", "|---|---|---|---|---|---|---|---|---|"]
    for r in analysis["variants"]:
        st = r["student_acc"]
        interval = f"[{_num(st.get('low'))}, {_num(st.get('high'))}]" if st.get("low") is not None and \
            math.isfinite(st.get("low")) else "–"
        lines.append(f"| {_pair_label(r['pair'], summaries)} | {r['variant']} | {r['n']} | "
                     f"{_num(st.get('estimate'))} | {_num(st.get('std'))} | {interval} | {_iv(r['head_acc'])} | "
                     f"{_iv(r['rounds'], 1)} | {_iv(r['kd_steps'], 0)} |")
    return lines


def _paired_table(summaries: list[dict], analysis: dict) -> list[str]:
    if not analysis["paired"]:
        return []
    lines = ["", "### Paired differences of the student's top-1 (points), on the seeds both ran", "",
             "| pair | A − B | seeds | mean difference | 95% interval | paired t test p | sign-flip p | "
             "paper's claim | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for d in analysis["paired"]:
        diff = d["diff"]
        interval = f"[{_num(diff.get('low'))}, {_num(diff.get('high'))}]" if diff.get("low") is not None \
            and math.isfinite(diff["low"]) else "–"
        seeds = ",".join(map(str, d["seeds"])) or "none"
        if d.get("excluded_seeds"):
            seeds += f" (left out, other machine: {','.join(map(str, d['excluded_seeds']))})"
        lines.append(f"| {_pair_label(d['pair'], summaries)} | {d['a']} − {d['b']} | {seeds} | "
                     f"{_num(diff.get('estimate'))} | {interval} | {_p(d.get('t_p'))} | "
                     f"{_p(d.get('sign_flip_p'))} | {d.get('claim') or '–'} | {d.get('verdict') or '–'} |")
    return lines + ["", "The interval is Student's t over the per-seed differences; the sign-flip test is exact "
                        "over all 2^n sign assignments (with 3 seeds its smallest possible p is 0.25). A verdict is "
                        "'reproduced' only when the whole interval lies on the paper's side of zero."]


def _cells_table(summaries: list[dict], analysis: dict) -> list[str]:
    cm = analysis["machines"]["cell_machine"]
    lines = ["", "### Cells", "",
             "| pair | variant | seed | student top-1 | h top-1 | rounds | KD steps | bank | synthesis s | KD s | "
             "share of the reference run's KD sample-passes | precision | calibration | machine |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {_pair_label(s['pair'], summaries)} | {s['variant']} | {s['seed']} | "
                     f"{_num(s.get('student_acc'))} | {_num(s.get('head_acc'))} | {s.get('rounds', '–')} | "
                     f"{s.get('kd_steps', '–')} | {s.get('bank_size', '–')} | {_compute_cells(s)} | "
                     f"{s.get('precision') or (s.get('config') or {}).get('precision', '–')} | "
                     f"{calibration_text(s.get('calibration'))} | {cm.get(cell_id(s), '–')} |")
    return lines


def _compute_cells(s: dict) -> str:
    """Synthesis seconds | KD seconds | the share of the reference run's student sample-passes (cells written
    before runs counted their compute show dashes for the seconds)."""
    c = s.get("compute") or {}
    cfg = s.get("config") or {}
    ref = c.get("reference_kd_student") or reference_kd_passes(cfg.get("method", ""))
    # cells from before the accounting: their KD passes are their KD steps times the KD batch
    passes = c.get("kd_student", s.get("kd_steps", 0) * (cfg.get("distill") or {}).get("batch_size", 0))
    share = f"{100 * passes / ref:.2f}%" if ref and passes else "–"
    return f"{_num(c.get('synth_s'), 0)} | {_num(c.get('kd_s'), 0)} | {share}"


def write_curves(summaries: list[dict], out: Path, bands: list[dict] | None = None) -> dict[str, Path]:
    """Mean student curve per variant over seeds with its min-max band (curves.png, curves.html)."""
    import matplotlib  # here, not at the top: the Agg backend is chosen when a file is drawn, not on import
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = curve_bands(summaries) if bands is None else bands
    many_pairs = len({b["pair"] for b in bands}) > 1
    fig_p = go.Figure()
    f, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, b in enumerate(bands):
        colour = matplotlib.colors.to_hex(colours[i % len(colours)])
        r, g, b_ = (int(255 * c) for c in matplotlib.colors.to_rgb(colour))
        label = f"{b['variant']}" + (f" ({b['pair']})" if many_pairs else "") + f", n={b['n']}"
        ax.plot(b["minutes"], b["mean"], marker="." if b["n"] == 1 else None, color=colour, label=label)
        if b["n"] > 1:
            ax.fill_between(b["minutes"], b["min"], b["max"], color=colour, alpha=0.2, linewidth=0)
            fig_p.add_trace(go.Scatter(x=b["minutes"] + b["minutes"][::-1], y=b["max"] + b["min"][::-1],
                                       fill="toself", mode="lines", line=dict(width=0),
                                       fillcolor=f"rgba({r}, {g}, {b_}, 0.2)", name=f"{label} min-max",
                                       hoverinfo="skip",
                                       showlegend=False, legendgroup=label))
        fig_p.add_trace(go.Scatter(x=b["minutes"], y=b["mean"], mode="lines" if b["n"] > 1 else "lines+markers",
                                   line=dict(color=colour), name=label, legendgroup=label))
    ax.set_xlabel(f"training time (min of {time_unit(summaries)}; evaluation excluded)")
    ax.set_ylabel("student top-1 on real test images (%)")
    if any(b["n"] > 1 for b in bands):
        ax.set_title("mean over seeds; band: min–max over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    f.tight_layout()
    paths = {"png": out / "curves.png", "html": out / "curves.html"}
    f.savefig(paths["png"], dpi=110)
    plt.close(f)
    fig_p.update_layout(xaxis_title="training time (min)", yaxis_title="student top-1 (%)",
                        title="mean over seeds; band: min–max over seeds")
    paths["html"].write_text(fig_p.to_html(include_plotlyjs=True, full_html=True))
    return paths


def write_results(summaries: list[dict], out: Path, budget_minutes: float,
                  comparisons: list[tuple[str, str]] | None = None, allow_mixed: bool = False,
                  tolerance: float = DEFAULT_TOLERANCE, planned: list[str] | None = None,
                  sweep: dict | None = None) -> dict[str, Path]:
    """table.md, results.json, curves.png/html from finished cells' summaries (refused on mixed machines unless
    `allow_mixed`, before anything is written)."""
    analysis = analyze(summaries, budget_minutes, comparisons, allow_mixed, tolerance, planned, sweep)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_curves(summaries, out, analysis["curves"])
    paths["md"] = out / "table.md"
    atomic_write_text(paths["md"], table_markdown(summaries, catalog.read_manifest(), budget_minutes, analysis))
    paths["json"] = out / "results.json"
    atomic_write_text(paths["json"], json.dumps(json_safe({**analysis, "cells": summaries}), indent=1))
    return paths
