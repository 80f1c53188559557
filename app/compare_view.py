"""Tables for the Compare page, from run folders (pure functions of RunInfo lists)."""
from __future__ import annotations

from . import paper
from .runs import RunInfo, arch_of_teacher


def arch_label(arch: str | None) -> str:
    if not arch:
        return "?"
    a = arch.replace("_bn", "")
    if a.startswith("wrn"):
        depth, width = a[3:].split("_")
        return f"WRN{depth}-{width}"
    if a.startswith("resnet"):
        return f"ResNet{a[6:]}"
    return a.upper()


def runs_frame(runs: list[RunInfo]):
    import pandas as pd
    return pd.DataFrame([r.summary() for r in runs])


def _dataset(run: RunInfo) -> str:
    t = run.teacher
    if t.endswith(".safetensors"):
        from ifhe.checkpoint import read_meta
        try:
            return read_meta(t).get("dataset") or "cifar10"
        except Exception:
            return "cifar10"
    from ifhe.zoo import read_manifest
    return read_manifest().get(t, {}).get("dataset", "cifar10")


def _pair(run: RunInfo) -> str:
    return f"{arch_label(arch_of_teacher(run.teacher))}/{arch_label(run.student)}"


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


def measured_table(runs: list[RunInfo], dataset: str):
    """Rows like the paper's (Teacher, then methods), one column per teacher/student pair we ran."""
    import pandas as pd
    cells: dict[str, dict[str, float]] = {}
    teachers: dict[str, float] = {}
    for r in runs:
        if r.final_acc is None or _dataset(r) != dataset:
            continue
        label = next((row for row, m in paper.ROW_METHOD.items() if m == r.method), None)
        if label is None:
            label = r.method  # deepinversion, fast: not in the paper's table, shown under their own names
        pair = _pair(r)
        col = cells.setdefault(pair, {})
        col[label] = max(col.get(label, float("-inf")), float(r.final_acc))
        if not r.teacher.endswith(".safetensors"):
            from ifhe.zoo import read_manifest
            acc = read_manifest().get(r.teacher, {}).get("test_accuracy")
            if acc is not None:
                teachers[pair] = acc
    if not cells:
        return None
    rows = ["Teacher"] + [r for r in paper.ROWS if r not in ("Teacher", "Student")]
    rows += sorted({k for c in cells.values() for k in c if k not in rows})
    data = {pair: [teachers.get(pair) if row == "Teacher" else cells[pair].get(row) for row in rows]
            for pair in cells}
    return pd.DataFrame(data, index=rows)
