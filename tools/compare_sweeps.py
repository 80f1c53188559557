"""Two sweeps that differ in one setting, cell by cell: per method, each sweep's mean with its 95% t interval over
seeds, the paired difference B - A, and whether they agree (`ifhe.sweep_stats.across_sweeps`). Made for the
precision evidence: the same cells at equal steps (`--set rounds=30`, no time budget) in fp32 and in bf16.

    python tools/compare_sweeps.py results/sweep-prec-fp32 results/sweep-prec-bf16 \\
        --out results/precision/equal-steps.md

Refuses a pair of sweeps whose matched cells did not run the same rounds and KD steps (then the comparison
would not be at equal steps).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ifhe.errors import IfheError  # noqa: E402
from ifhe.sweep_stats import across_sweeps, cell_id, load_results  # noqa: E402


def steps(cell: dict) -> tuple:
    return cell.get("rounds"), cell.get("kd_steps")


def unequal_steps(a: list[dict], b: list[dict]) -> list[str]:
    """Matched cells (same id) whose rounds or KD steps differ."""
    steps_b = {cell_id(s): steps(s) for s in b}
    return [cell_id(s) for s in a if cell_id(s) in steps_b and steps(s) != steps_b[cell_id(s)]]


def settings_of(cells: list[dict]) -> str:
    prec = sorted({str(s.get("precision")) for s in cells})
    threads = sorted({str(s.get("threads")) for s in cells})
    return f"precision {'/'.join(prec)}, threads {'/'.join(threads)}, {len(cells)} cells"


def markdown(rows: list[dict], name_a: str, name_b: str, a: list[dict], b: list[dict]) -> str:
    def iv(d):
        return f"{d['estimate']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"
    lines = [f"A = `{name_a}` ({settings_of(a)}); B = `{name_b}` ({settings_of(b)}). 95% t intervals over seeds; "
             "B - A paired by seed.", "",
             "| pair | method | metric | A | B | B - A | t p | seeds | intervals overlap | each mean in the other's "
             "interval | 0 in B - A |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['variant']} | {r['metric']} | {iv(r['a'])} | {iv(r['b'])} | "
                     f"{iv(r['diff'])} | {r['t_p']:.2f} | {len(r['seeds'])} | {'yes' if r['overlap'] else 'no'} | "
                     f"{'yes' if r['within'] else 'no'} | {'yes' if r['zero_in_diff'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="sweep folder (or its results.json)")
    ap.add_argument("b", help="sweep folder (or its results.json)")
    ap.add_argument("--out", help="write the table here (and the rows as .json beside it)")
    args = ap.parse_args(argv)
    cells = []
    for p in (args.a, args.b):
        path = Path(p)
        path = path / "results.json" if path.is_dir() else path
        if not path.exists():
            raise IfheError(f"{path}: no results.json (has the sweep written its table?)")
        cells.append(load_results(path)["cells"])
    off = unequal_steps(*cells)
    if off:
        raise IfheError("not at equal steps (rounds or KD steps differ): " + ", ".join(off))
    rows = across_sweeps(*cells)
    if not rows:
        raise IfheError("the two sweeps share no (pair, method)")
    text = markdown(rows, args.a, args.b, *cells)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except IfheError as e:
        print(f"compare_sweeps: error: {e}", file=sys.stderr)
        sys.exit(2)
