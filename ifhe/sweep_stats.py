"""The statistics of a sweep, from its finished cells' summaries (pure functions of dicts, no files but the
results.json `load_results` reads): whether the cells ran on one machine (by their calibrations), per-variant
means with 95% t intervals over seeds, paired differences with tests and the verdict on the paper's claims, and
the mean curves with bands. `ifhe.stats` has the interval and test functions; `ifhe.sweep_report` writes tables."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .errors import IfheError
from .cpu import machine_label
from .machine import DEFAULT_TOLERANCE, calibration_seconds, relative_difference, same_machine
from .paper import ABLATION_PAIRS, NOTES as PAPER_NOTES, PAIR_ARCHS, pair_figures
from .stats import mean_interval, paired_difference, t_quantile, verdict

# the paper's headline pair (WRN40-2 -> WRN16-1 on CIFAR-10): the column beside pairs the paper has not run
HEADLINE_PAIR = (*PAIR_ARCHS[0], "cifar10")


# ---- machines -----------------------------------------------------------------------------------------------

def cell_id(s: dict) -> str:
    return s.get("id") or f"{s['pair']}/{s['variant']}/seed{s['seed']}"


def calibration_text(cal) -> str:
    v = calibration_seconds(cal)
    return f"{v:.3f} s" if v is not None else "not recorded"


def check_machines(summaries: list[dict], tolerance: float = DEFAULT_TOLERANCE, allow_mixed: bool = False) -> dict:
    """Whether the cells ran on one machine, judged by their calibrations (`machine.same_machine`).

    The reference is the first cell's calibration. A cell is off when its calibration, or any calibration it ran
    under before a resume, differs from the reference by more than `tolerance`, or is missing while others are
    recorded. Off cells raise IfheError listing them, unless `allow_mixed`; then the result groups the cells by
    machine (M1 is the reference's) so that tables can say which cell ran where. Cells recorded before
    calibrations existed (none has one) pass with `recorded` False."""
    ids = [cell_id(s) for s in summaries]
    cals = [calibration_seconds(s.get("calibration")) for s in summaries]
    if all(c is None for c in cals):
        return {"recorded": False, "reference": None, "reference_cell": None, "machines": [], "cell_machine": {},
                "off": [], "mixed": False, "tolerance": tolerance}
    ref_i = next(i for i, c in enumerate(cals) if c is not None) if cals[0] is None else 0
    ref = summaries[ref_i]
    off = []
    for s, cid, c in zip(summaries, ids, cals):
        under = [c] + [calibration_seconds(h.get("calibration")) for h in s.get("calibrations") or []]
        bad = [u for u in under if u is None or not same_machine(ref.get("calibration"), u, tolerance)]
        if bad:
            worst = "not recorded" if any(u is None for u in bad) else \
                f"{max(bad, key=lambda u: relative_difference(u, ref['calibration'])):.3f} s"
            off.append(f"{cid}: calibration {worst} ({machine_label(s.get('machine'))})")
    if off and not allow_mixed:
        raise IfheError(
            f"cells from different machines: the table's reference is {ids[ref_i]} at "
            f"{calibration_text(ref.get('calibration'))} ({machine_label(ref.get('machine'))}); these differ by more "
            f"than {100 * tolerance:.0f}% (or ran partly elsewhere): " + "; ".join(off) +
            ". Rerun them on the reference's kind of machine, or pass --allow-mixed-machines to tabulate them "
            "with each cell's machine named")
    machines: list[dict] = []
    cell_machine: dict[str, str] = {}
    for s, cid, c in zip(summaries, ids, cals):
        if c is None:
            cell_machine[cid] = "?"
            continue
        m = next((m for m in machines if same_machine(m["calibration_s"], c, tolerance)), None)
        if m is None:
            m = {"id": f"M{len(machines) + 1}", "calibration_s": c, "calibration": s.get("calibration"),
                 "machine": s.get("machine"), "label": machine_label(s.get("machine"), threads_of(s)), "cells": []}
            machines.append(m)
        m["cells"].append(cid)
        under = [calibration_seconds(h.get("calibration")) for h in s.get("calibrations") or []]
        within = all(u is not None and same_machine(c, u, tolerance) for u in under)
        cell_machine[cid] = m["id"] if within else m["id"] + "*"
    return {"recorded": True, "reference": ref.get("calibration"), "reference_cell": ids[ref_i],
            "reference_invocation": ref.get("invocation"),
            "machines": machines, "cell_machine": cell_machine, "off": off, "mixed": bool(off),
            "tolerance": tolerance}


def threads_of(s: dict) -> int | None:
    return (s.get("config") or {}).get("threads") or (s.get("calibration") or {}).get("threads")


def time_unit(summaries: list[dict]) -> str:
    """How the budgets were measured, from the runs' own configs (threads may differ between sweeps)."""
    threads = sorted({s["config"].get("threads") for s in summaries if s.get("config")} - {None})
    t = "/".join(map(str, threads)) if threads else "all cores'"
    bf16 = any(s["config"].get("precision") == "bf16" for s in summaries if s.get("config"))
    return f"CPU time per thread, {t} thread{'s' if t != '1' else ''}{', bf16 forward passes' if bf16 else ''}"


def pairs_and_variants(summaries: list[dict]) -> tuple[list[str], list[str]]:
    return list(dict.fromkeys(s["pair"] for s in summaries)), list(dict.fromkeys(s["variant"] for s in summaries))


def paper_column(pair: str | None = None) -> tuple[str, dict, dict]:
    """The paper's column a sweep's pair (`<dataset>_<teacher arch>-<student arch>`) is compared with, as (label,
    figures, notes): the same architectures where the paper has them, else the headline pair's, WRN40-2 -> WRN16-1
    on CIFAR-10. The notes (and the ablation baselines) are the headline column's only."""
    if pair:
        teacher, _, student = pair.rpartition("-")
        dataset, _, arch = teacher.partition("_")
        found = pair_figures(arch, student, dataset)
        if found and (arch, student, dataset) != HEADLINE_PAIR:
            return (*found, {})
    return (*pair_figures(*HEADLINE_PAIR), PAPER_NOTES)


def paper_figure(variant: str, pair: str | None = None):
    return paper_column(pair)[1].get(variant)


def variant_stats(summaries: list[dict]) -> list[dict]:
    """Per (pair, variant): seeds, and mean / std / 95% t interval of the student's and h's top-1, rounds,
    KD steps and bank size over the seeds."""
    pairs, variants = pairs_and_variants(summaries)
    rows = []
    for p in pairs:
        for v in variants:
            cells = sorted((s for s in summaries if s["pair"] == p and s["variant"] == v), key=lambda s: s["seed"])
            if not cells:
                continue
            row = {"pair": p, "variant": v, "seeds": [s["seed"] for s in cells], "n": len(cells),
                   "paper": paper_figure(v, p), "paper_note": paper_column(p)[2].get(v)}
            for key in ("student_acc", "head_acc", "rounds", "kd_steps", "bank_size"):
                row[key] = mean_interval([s.get(key) for s in cells]).as_dict()
            rows.append(row)
    return rows


def paper_claim(a: str, b: str, pair: str | None = None) -> tuple[int, str] | None:
    """The sign the paper claims for A - B on `pair`'s paper column (`paper_column`) and a sentence saying so,
    where it reports both."""
    # the ablation table's baselines count only beside the column that has the ablations (the headline pair's)
    ablations = ABLATION_PAIRS if paper_column(pair)[2] else {}
    pa, pb = ablations.get((a, b)) or (paper_figure(a, pair), paper_figure(b, pair))
    if (b, a) in ablations:
        pb, pa = ablations[(b, a)]
    if pa is None or pb is None or pa == pb:
        return None
    sign = 1 if pa > pb else -1
    return sign, f"{a} {'>' if sign > 0 else '<'} {b} ({pa} vs {pb})"


def paired_differences(summaries: list[dict], comparisons: list[tuple[str, str]],
                       machines: dict | None = None) -> list[dict]:
    """For each pair of variants (A, B) and teacher-student pair: the student's top-1 A - B over the seeds both
    ran (`stats.paired_difference`: mean, 95% t interval, paired t test, exact sign-flip test), and the verdict
    on the paper's claim where the paper reports both. With `machines` from `check_machines`, a seed whose two
    cells ran on different machines is left out (and named)."""
    cm = (machines or {}).get("cell_machine") or {}
    pairs, _ = pairs_and_variants(summaries)
    rows = []
    for p in pairs:
        by = {}
        for s in summaries:
            if s["pair"] == p:
                by.setdefault(s["variant"], {})[s["seed"]] = s
        for a, b in comparisons:
            if a not in by or b not in by:
                continue
            excluded = []
            xa, xb = {}, {}
            for seed in sorted(set(by[a]) & set(by[b])):
                ma, mb = cm.get(cell_id(by[a][seed])), cm.get(cell_id(by[b][seed]))
                if cm and (ma != mb or "*" in (ma or "") or ma == "?"):
                    excluded.append(seed)
                    continue
                xa[seed], xb[seed] = by[a][seed].get("student_acc"), by[b][seed].get("student_acc")
            d = paired_difference(xa, xb)
            claim = paper_claim(a, b, p)
            rows.append({"pair": p, "a": a, "b": b, "n": len(d.seeds), **d.as_dict(),
                         "excluded_seeds": excluded,
                         "claim": claim[1] if claim else None,
                         "verdict": verdict(d.diff, 0.0, claim[0]) if claim else None})
    return rows


def across_sweeps(a: list[dict], b: list[dict], keys: tuple[str, ...] = ("student_acc", "head_acc")) -> list[dict]:
    """Two sweeps that differ in one setting (e.g. `--precision fp32` and `bf16` at equal steps): per (pair,
    variant) both ran and per metric in `keys`, each sweep's mean with its 95% t interval over seeds, the paired
    difference B - A over the seeds both ran, and whether the two agree: `overlap` when the two intervals overlap,
    `within` when each mean lies inside the other's interval, `zero_in_diff` when the paired interval holds 0."""
    def index(summaries):
        by = {}
        for s in summaries:
            by.setdefault((s["pair"], s["variant"]), {})[s["seed"]] = s
        return by
    ia, ib = index(a), index(b)
    rows = []
    for key in [k for k in ia if k in ib]:
        for metric in keys:
            xa = {seed: s.get(metric) for seed, s in ia[key].items()}
            xb = {seed: s.get(metric) for seed, s in ib[key].items()}
            ma, mb = mean_interval(list(xa.values())), mean_interval(list(xb.values()))
            d = paired_difference(xb, xa)
            finite = all(math.isfinite(v) for v in (ma.low, ma.high, mb.low, mb.high))
            rows.append({"pair": key[0], "variant": key[1], "metric": metric,
                         "a": ma.as_dict(), "b": mb.as_dict(), **d.as_dict(),
                         "overlap": finite and ma.low <= mb.high and mb.low <= ma.high,
                         "within": finite and ma.contains(mb.estimate) and mb.contains(ma.estimate),
                         "zero_in_diff": math.isfinite(d.diff.low) and d.diff.contains(0.0)})
    return rows


def curve_bands(summaries: list[dict], points: int = 60) -> list[dict]:
    """Per (pair, variant): the mean student curve over seeds on a common time grid (each seed's curve linearly
    interpolated over the span all seeds cover), with the min-max over seeds and a 95% t interval per point.
    One seed: its own points, no band."""
    pairs, variants = pairs_and_variants(summaries)
    out = []
    for p in pairs:
        for v in variants:
            curves = []
            for s in summaries:
                if s["pair"] == p and s["variant"] == v and s.get("curve"):
                    pts = sorted((c["elapsed_s"], c["student_acc"]) for c in s["curve"]
                                 if c.get("student_acc") is not None and c.get("elapsed_s") is not None)
                    if pts:
                        curves.append((np.array([x for x, _ in pts]), np.array([y for _, y in pts])))
            if not curves:
                continue
            n = len(curves)
            if n == 1:
                xs, ys = curves[0]
                out.append({"pair": p, "variant": v, "n": 1, "minutes": (xs / 60).tolist(), "mean": ys.tolist(),
                            "min": ys.tolist(), "max": ys.tolist(), "low": None, "high": None})
                continue
            lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
            grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi])
            ys = np.stack([np.interp(grid, x, y) for x, y in curves])
            mean = ys.mean(0)
            half = t_quantile(n - 1) * ys.std(0, ddof=1) / math.sqrt(n)
            out.append({"pair": p, "variant": v, "n": n, "minutes": (grid / 60).tolist(), "mean": mean.tolist(),
                        "min": ys.min(0).tolist(), "max": ys.max(0).tolist(),
                        "low": (mean - half).tolist(), "high": (mean + half).tolist()})
    return out


def analyze(summaries: list[dict], budget_minutes: float | None = None,
            comparisons: list[tuple[str, str]] | None = None, allow_mixed: bool = False,
            tolerance: float = DEFAULT_TOLERANCE, planned: list[str] | None = None,
            sweep: dict | None = None) -> dict:
    """Everything `results.json` holds besides the cells: machines, per-variant intervals, paired differences,
    curve bands. Raises IfheError on mixed machines unless `allow_mixed`."""
    machines = check_machines(summaries, tolerance, allow_mixed)
    _, variants = pairs_and_variants(summaries)
    if comparisons is None:
        comparisons = [(v, variants[0]) for v in variants[1:]]
    if budget_minutes is None:
        budgets = {(s.get("config") or {}).get("budget_minutes") for s in summaries} - {None}
        budget_minutes = budgets.pop() if len(budgets) == 1 else None
    ref = next((s for s in summaries if cell_id(s) == machines["reference_cell"]), None)
    finished = {cell_id(s) for s in summaries}
    return {"format": "ifhe-sweep-results/2", "budget_minutes": budget_minutes,
            "machine": {"label": machine_label(ref.get("machine"), threads_of(ref)) if ref else
                        "machine not recorded", "info": ref.get("machine") if ref else None,
                        "calibration": machines["reference"]},
            "machines": machines, "time_unit": time_unit(summaries) if summaries else None,
            "variants": variant_stats(summaries),
            "paired": paired_differences(summaries, comparisons, machines if machines["mixed"] else None),
            "comparisons": [list(c) for c in comparisons],
            "curves": curve_bands(summaries),
            "missing": [c for c in (planned or []) if c not in finished],
            "sweep": sweep}


def load_results(path: str | os.PathLike) -> dict:
    """A sweep's results.json as written by `write_results`; an older one (a bare list of cell summaries) is
    analysed on reading, machines not checked (they were not recorded)."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        res = analyze(data, allow_mixed=True)
        res["cells"] = data
        res["legacy"] = True
        return res
    if not isinstance(data, dict) or "cells" not in data:
        raise IfheError(f"{path}: not a sweep's results.json")
    return data
