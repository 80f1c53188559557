import json
import os
import subprocess
import sys

import pytest

from tiny_settings import TINY_RUN
from ifhe.errors import IfheError
from ifhe.locks import CellLock, lock_holder
from ifhe.reproduce import (Cell, _Done, child_command, finished_summary, join_invocation, parse_comparisons, plan,
                            run_cell, run_cells, start_invocation)
from ifhe.sweep_report import table_markdown, write_results
from ifhe.sweep_stats import analyze, check_machines, load_results
from ifhe.stats import mean_interval, paired_difference

OVERRIDES = {"synth": TINY_RUN["synth"], "distill": TINY_RUN["distill"], "eval_every": 3, "log_every": 1,
             "checkpoint_seconds": 0}
PAIR = "cifar10_wrn16_2-wrn16_1"
SETTINGS = {"table": "cifar10", "budget_minutes": 20.0, "threads": 1, "precision": "fp32", "eval_every": 250,
            "eval_images": 2000, "set": [], "data": None}
MACHINE = {"cpu_model": "Test CPU", "logical_cores": 2, "usable_cores": 2, "avx512_bf16": True}


def _cal(step_s: float) -> dict:
    return {"step_s": step_s, "wall_s": step_s, "threads": 1, "clock": "cpu per thread"}


def _invocation(index: int, step_s: float, cpu="Test CPU") -> dict:
    return {"index": index, "machine": {**MACHINE, "cpu_model": cpu}, "calibration": _cal(step_s)}


def fake(variant: str, seed: int, acc: float, step_s: float | None = 0.8, curve=None, earlier=()) -> dict:
    """A cell summary as run_cell writes it, without running anything."""
    cal = _cal(step_s) if step_s is not None else None
    return {"cell": {"teacher": "cifar10_wrn16_2", "student": "wrn16_1", "variant": variant, "seed": seed},
            "id": f"{PAIR}/{variant}/seed{seed}", "pair": PAIR, "variant": variant, "seed": seed,
            "student_acc": acc, "head_acc": acc + 30, "rounds": 10 + seed, "kd_steps": 500 + 50 * seed,
            "bank_size": 640, "elapsed_s": 1200.0, "config": {"threads": 1, "budget_minutes": 20.0},
            "curve": curve if curve is not None else
            [{"elapsed_s": 60.0 * k, "student_acc": acc * k / 20} for k in (2, 10, 20)],
            "final_test_images": 10000, "dataset": "cifar10",
            "machine": MACHINE if cal else None, "calibration": cal,
            "calibrations": [{"invocation": 0, "calibration": _cal(s)} for s in earlier] +
            ([{"invocation": len(earlier), "calibration": cal}] if cal else [])}


def sweep_of(accs_a, accs_b, a="cmi", b="ifhe", **kw) -> list[dict]:
    return [fake(a, i, x, **kw) for i, x in enumerate(accs_a)] + [fake(b, i, x, **kw) for i, x in enumerate(accs_b)]


# ---- running and resuming -----------------------------------------------------------------------------------

def test_sweep_resumes_and_writes_table(tiny_teacher, synthetic_cifar, tmp_path):
    from ifhe.data import load_split
    from ifhe.experiment import Run, SynthStep
    from ifhe.config import make_config
    test = load_split("cifar10", "test", synthetic_cifar)
    cells = [Cell("cifar10_tiny", "wrn16_1", "ifhe", 0), Cell("cifar10_tiny", "wrn16_1", "cmi", 0)]
    first = run_cell(cells[0], tmp_path, 0.03, None, OVERRIDES, teacher=tiny_teacher, test_set=test,
                     invocation=_invocation(0, 0.8))
    assert first["reason"] == "budget" and first["curve"] and first["student_acc"] is not None
    assert first["calibration"]["step_s"] == 0.8 and first["machine"]["cpu_model"] == "Test CPU"
    assert first["invocation"] == 0 and [h["invocation"] for h in first["calibrations"]] == [0]
    kept = cells[0].record_path(tmp_path)
    assert json.loads(kept.read_text()) == first  # kept outside runs/, which git ignores
    stamp = kept.stat().st_mtime_ns
    # the second cell is "killed" after its first checkpoint, in invocation 0
    cfg = make_config("cmi", "cpu", synth=TINY_RUN["synth"], distill=TINY_RUN["distill"], teacher="cifar10_tiny",
                      budget_minutes=0.03, rounds=10 ** 6, eval_every=3, log_every=1, checkpoint_seconds=0)
    folder = cells[1].folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "invocations.json").write_text(json.dumps([{"invocation": 0, "calibration": _cal(0.8)}]))
    events = Run(cfg, folder, teacher=tiny_teacher, test_set=test).events()
    for ev in events:
        if isinstance(ev, SynthStep) and ev.round == 1:
            break
    events.close()
    # invocation 1 (another machine of the same kind) finishes it; the finished cell is skipped
    summaries = [run_cell(c, tmp_path, 0.03, None, OVERRIDES, teacher=tiny_teacher, test_set=test,
                          final_test_set=test, invocation=_invocation(1, 0.85)) for c in cells]
    assert kept.stat().st_mtime_ns == stamp and summaries[0] == first
    second = summaries[1]
    assert second["rounds"] >= 1 and second["final_test_images"] == len(test)
    assert second["invocation"] == 1 and [h["invocation"] for h in second["calibrations"]] == [0, 1]
    rounds = [json.loads(l)["round"] for l in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rounds == list(range(len(rounds)))
    paths = write_results(summaries, tmp_path / "out", 0.03)
    md = paths["md"].read_text()
    assert "| ifhe |" in md and "| cmi |" in md and "91.8" in md and "90.01" in md
    assert "Test CPU" in md and "0.800 s" in md
    data = json.loads(paths["json"].read_text())
    assert paths["png"].stat().st_size > 1000 and data["cells"][1]["variant"] == "cmi"
    assert data["paired"][0]["a"] == "cmi" and data["paired"][0]["b"] == "ifhe"
    # a committed record is enough: without runs/ the cell still counts as finished
    import shutil
    shutil.rmtree(tmp_path / "runs")
    assert finished_summary(cells[1], tmp_path) == second


def test_run_cells_two_at_a_time_waits_for_a_held_cell_and_reports_failures(tmp_path):
    cells = plan("cifar10", ["cmi", "ifhe"], 2, ["cifar10_wrn16_2"])
    cells[0].record_path(tmp_path).parent.mkdir(parents=True)
    cells[0].record_path(tmp_path).write_text(json.dumps(fake("cmi", 0, 50.0)))  # finished earlier
    held = CellLock(cells[1].lock_path(tmp_path))
    assert held.acquire()  # "another invocation" runs this one
    running, peak, started = set(), [0], []

    class Handle:
        def __init__(self, cell):
            self.cell, self.polls = cell, 0
            running.add(cell)
            peak[0] = max(peak[0], len(running))
            started.append(cell.id)

        def poll(self):
            self.polls += 1
            if self.polls < 3:
                return None
            running.discard(self.cell)
            if self.cell.variant == "ifhe" and self.cell.seed == 1:
                return 1  # fails
            self.cell.record_path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
            self.cell.record_path(tmp_path).write_text(json.dumps(fake(self.cell.variant, self.cell.seed, 50.0)))
            if self.cell == cells[2]:
                held.release()  # the other invocation gives its cell up unfinished
            return 0

        def terminate(self):
            pass

    log = []
    failed = run_cells(cells, tmp_path, 2, Handle, poll_s=0.001, wait_s=0.001, log=log.append)
    assert cells[0].id not in started                           # finished: skipped
    assert peak[0] == 2                                         # two at a time
    assert started.index(cells[1].id) > started.index(cells[2].id)  # run here once its holder let go
    assert failed == {cells[3].id: 1}
    assert any("being run by pid" in line for line in log)
    assert [finished_summary(c, tmp_path) is not None for c in cells] == [True, True, True, False]
    # in-process handles: an exit status at once
    assert run_cells(cells[3:], tmp_path, 1, lambda c: _Done(1), log=log.append) == \
        {cells[3].id: 1}


def test_cell_lock(tmp_path):
    path = tmp_path / "runs" / "x" / "seed0.lock"
    a, b = CellLock(path), CellLock(path)
    assert a.acquire() and not b.acquire()
    assert lock_holder(path)["pid"] == os.getpid()
    a.release()
    assert not path.exists() and lock_holder(path) is None
    assert b.acquire()
    b.release()
    # a stale lock: the file of a process that died, pid dead, nobody holds it
    path.write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": "elsewhere"}))
    assert lock_holder(path) is None
    with CellLock(path):
        assert lock_holder(path)["pid"] == os.getpid()
    # a process that holds it, then is killed: the lock is free again
    code = (f"import sys, time; sys.path.insert(0, {str(os.getcwd())!r}); from ifhe.locks import CellLock; "
            f"l = CellLock({str(path)!r}); assert l.acquire(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert lock_holder(path)["pid"] == p.pid and not CellLock(path).acquire()
    finally:
        p.kill()
        p.wait()
    assert path.exists() and lock_holder(path) is None
    c = CellLock(path)
    assert c.acquire() and json.loads(path.read_text())["pid"] == os.getpid()
    c.release()


def test_sweep_record_refuses_other_settings_and_other_machines(tmp_path):
    first = start_invocation(tmp_path, SETTINGS, ["--seeds", "3"], MACHINE, _cal(0.80), jobs=2)
    assert first["index"] == 0
    second = start_invocation(tmp_path, SETTINGS, ["--seeds", "3"], MACHINE, _cal(0.90))  # +12.5%: same kind
    assert second["index"] == 1
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["calibration"]["step_s"] == 0.80 and len(sweep["invocations"]) == 2
    assert sweep["invocations"][0]["jobs"] == 2 and sweep["command"] == "ifhe reproduce --seeds 3"
    with pytest.raises(IfheError, match="budget_minutes=20.0"):
        start_invocation(tmp_path, {**SETTINGS, "budget_minutes": 10.0}, [], MACHINE, _cal(0.8))
    with pytest.raises(IfheError, match="allow-mixed-machines"):
        start_invocation(tmp_path, SETTINGS, [], {**MACHINE, "cpu_model": "Slow CPU"}, _cal(2.8))
    third = start_invocation(tmp_path, SETTINGS, [], MACHINE, _cal(2.8), allow_mixed=True)
    assert third["index"] == 2
    assert join_invocation(tmp_path, 1, SETTINGS)["calibration"]["step_s"] == 0.90
    with pytest.raises(IfheError, match="no such invocation"):
        join_invocation(tmp_path, 7, SETTINGS)


def test_child_command_runs_one_cell_under_the_invocation(tmp_path):
    cell = Cell("cifar10_wrn16_2", "wrn16_1", "dafl+ifhe", 2)
    cmd = child_command(cell, {**SETTINGS, "set": ["synth.iterations=3"]}, tmp_path, 4)
    assert cmd[1:4] == ["-m", "ifhe", "reproduce"]
    assert cmd[cmd.index("--only-cell") + 1] == f"{PAIR}/dafl+ifhe/seed2"
    assert cmd[cmd.index("--invocation") + 1] == "4" and cmd[cmd.index("--threads") + 1] == "1"
    assert cmd[cmd.index("--seeds") + 1] == "3" and cmd[cmd.index("--set") + 1] == "synth.iterations=3"
    from ifhe.cli import build_parser
    a = build_parser().parse_args(cmd[3:])
    assert a.only_cell == cell.id and a.invocation == 4 and a.budget_minutes == 20.0 and a.jobs == 1


# ---- tables -------------------------------------------------------------------------------------------------

def test_table_mean_and_std():
    s = [{"pair": "cifar10_wrn16_2-wrn16_1", "variant": "ifhe", "seed": i, "student_acc": a,
          "config": {"threads": 1}} for i, a in enumerate([50.0, 52.0])]
    md = table_markdown(s, {"cifar10_wrn16_2": {"test_accuracy": 91.0}}, 20)
    assert "51.00 ± 1.41" in md and "| teacher | 91.0 |" in md
    assert "CPU time per thread, 1 thread;" in md
    assert "Machine:** not recorded" in md


def test_each_pair_sits_beside_the_papers_column_for_its_architectures():
    from ifhe.paper import TABLE
    from ifhe.sweep_stats import paper_claim
    vgg, ours = "cifar10_vgg11_bn-resnet18", "cifar10_wrn16_2-wrn16_1"
    s = [{"pair": p, "variant": v, "seed": i, "student_acc": a, "config": {"threads": 2}, "teacher_sha256": "ab" * 32}
         for p in (vgg, ours) for v in ("ifhe", "cmi") for i, a in enumerate([30.0, 32.0])]
    zoo = {"cifar10_vgg11_bn": {"test_accuracy": 90.1, "sha256": "cd" * 32},
           "cifar10_wrn16_2": {"test_accuracy": 91.0, "sha256": "ab" * 32}}
    md = table_markdown(s, zoo, 10)
    head = next(l for l in md.splitlines() if l.startswith("| | "))
    assert head.endswith("| paper, VGG11 → ResNet18 | paper, WRN40-2 → WRN16-1 |")
    vgg_col = {row: TABLE["cifar10"][row][3] for row in ("Teacher", "CMI", "IFHE")}
    assert f"| ifhe | 31.00 ± 1.41 (n=2) | 31.00 ± 1.41 (n=2) | {vgg_col['IFHE']} | 91.8 |" in md
    # the VGG cells ran with a teacher the zoo has since replaced: its checksum, not the new model's accuracy
    assert "| teacher | sha256 abababababab (since replaced) | 91.0 |" in md and "90.1" not in md
    assert paper_claim("ifhe", "cmi", vgg)[1] == f"ifhe > cmi ({vgg_col['IFHE']} vs {vgg_col['CMI']})"
    assert paper_claim("ifhe", "cmi", ours)[1] == "ifhe > cmi (91.8 vs 90.01)"
    assert paper_claim("ifhe", "ifhe-a0", vgg) is None       # the ablations are the headline pair's only
    assert paper_claim("ifhe", "ifhe-a0", ours)[1] == "ifhe > ifhe-a0 (91.8 vs 91.23)"
    from ifhe.sweep_stats import variant_stats     # the notes explain the headline column's figures only
    notes = {(r["pair"], r["variant"]): r["paper_note"] for r in variant_stats(s)}
    assert notes[(vgg, "cmi")] is None and "one-stage script" in notes[(ours, "cmi")]


def test_an_equal_steps_sweep_says_rounds_not_a_budget_that_never_bound():
    s = [{"pair": "cifar10_wrn16_2-wrn16_1", "variant": "ifhe", "seed": i, "student_acc": a, "rounds": 30,
          "reason": "rounds", "config": {"threads": 1}} for i, a in enumerate([50.0, 52.0])]
    md = table_markdown(s, {}, 1000)
    assert "after 30 rounds per run (equal steps: the 1000-minute budget did not bind)" in md
    assert "1000 minutes of training time" not in md
    s[1]["reason"] = "budget"  # one cell stopped by its budget: the table speaks of the budget
    assert "1000 minutes of training time per run" in table_markdown(s, {}, 1000)


def test_intervals_and_paired_differences_by_seed(tmp_path):
    cmi, ifhe = [55.0, 57.0, 60.0], [60.0, 61.0, 66.0]
    s = sweep_of(cmi, ifhe)
    s.append(fake("ifhe", 5, 70.0))  # a seed cmi did not run: in ifhe's interval, not in the pairing
    res = analyze(s, 20, parse_comparisons(["ifhe:cmi"], ["cmi", "ifhe"]))
    v = {r["variant"]: r for r in res["variants"]}
    want = mean_interval(ifhe + [70.0]).as_dict()
    assert v["ifhe"]["student_acc"] == pytest.approx(want) and v["ifhe"]["n"] == 4
    assert v["cmi"]["kd_steps"]["estimate"] == pytest.approx(550.0)
    assert [(d["a"], d["b"]) for d in res["paired"]] == [("ifhe", "cmi")]  # the default and the flag coincide
    d = res["paired"][0]
    expect = paired_difference(dict(enumerate(ifhe)), dict(enumerate(cmi)))
    assert d["seeds"] == [0, 1, 2] and d["diff"]["estimate"] == pytest.approx(expect.diff.estimate)
    assert d["diff"]["low"] == pytest.approx(expect.diff.low) and d["t_p"] == pytest.approx(expect.t_p)
    assert d["sign_flip_p"] == pytest.approx(0.25)  # 3 seeds, all the same sign
    assert d["claim"].startswith("ifhe > cmi") and d["verdict"] == "reproduced"  # 5.0 [2.52, 7.48]
    paths = write_results(s, tmp_path, 20, parse_comparisons(["ifhe:cmi"], ["cmi", "ifhe"]),
                          planned=[x["id"] for x in s] + [f"{PAIR}/cmi/seed5"])
    md = paths["md"].read_text()
    assert "0.800 s per fixed WRN-16-2 training step at batch 128" in md and "Test CPU, 2 cores" in md
    iv = mean_interval(cmi)
    assert f"| cmi | 3 | {iv.estimate:.2f} | {iv.std:.2f} | [{iv.low:.2f}, {iv.high:.2f}] |" in md
    assert f"| ifhe − cmi | 0,1,2 | {expect.diff.estimate:.2f} | [{expect.diff.low:.2f}, {expect.diff.high:.2f}]" in md
    assert "| 0.250 | ifhe > cmi (91.8 vs 90.01) | reproduced |" in md
    assert "Not finished yet (1 cells" in md and f"{PAIR}/cmi/seed5" in md
    data = json.loads(paths["json"].read_text())
    assert data["machine"]["calibration"]["step_s"] == 0.8 and data["machine"]["info"]["cpu_model"] == "Test CPU"
    band = next(b for b in data["curves"] if b["variant"] == "cmi")
    assert band["n"] == 3 and band["minutes"][0] == pytest.approx(2.0) and band["minutes"][-1] == pytest.approx(20.0)
    assert band["mean"][-1] == pytest.approx(sum(cmi) / 3)
    assert band["min"][-1] == 55.0 and band["max"][-1] == 60.0 and band["low"][-1] < 55.0 < 60.0 < band["high"][-1]
    assert load_results(paths["json"])["paired"][0]["verdict"] == "reproduced"


def test_mixed_calibrations_are_refused_unless_allowed(tmp_path):
    s = sweep_of([55.0, 57.0, 60.0], [60.0, 61.0, 66.0])
    slow = next(x for x in s if x["variant"] == "ifhe" and x["seed"] == 2)
    slow.update(calibration=_cal(1.2), machine={**MACHINE, "cpu_model": "Slow CPU"},
                calibrations=[{"invocation": 1, "calibration": _cal(1.2)}])
    resumed = next(x for x in s if x["variant"] == "cmi" and x["seed"] == 1)  # started here, finished on Slow
    resumed["calibrations"] = [{"invocation": 0, "calibration": _cal(0.8)}, {"invocation": 1, "calibration": _cal(1.2)}]
    with pytest.raises(IfheError) as e:
        write_results(s, tmp_path, 20)
    msg = str(e.value)
    assert f"{PAIR}/ifhe/seed2: calibration 1.200 s (Slow CPU" in msg and f"{PAIR}/cmi/seed1" in msg
    assert f"{PAIR}/cmi/seed0:" not in msg and "--allow-mixed-machines" in msg
    assert not (tmp_path / "table.md").exists()
    machines = check_machines(s, allow_mixed=True)
    assert [m["id"] for m in machines["machines"]] == ["M1", "M2"]
    cm = machines["cell_machine"]
    assert cm[f"{PAIR}/ifhe/seed2"] == "M2" and cm[f"{PAIR}/cmi/seed1"] == "M1*" and cm[f"{PAIR}/cmi/seed0"] == "M1"
    paths = write_results(s, tmp_path, 20, allow_mixed=True)
    md = paths["md"].read_text()
    assert "**Mixed machines**" in md and "M2 = Slow CPU" in md
    assert "| cmi | 57.33 ± 2.52 (n=3) † |" in md
    assert "| wrn16_2 → wrn16_1 | ifhe | 2 | 66.00 | 96.00 | 12 | 600 | 640 | – | – | – | – | 1.200 s | M2 |" in md
    d = json.loads(paths["json"].read_text())["paired"][0]
    assert d["seeds"] == [0] and d["excluded_seeds"] == [1, 2]  # never a difference across machines
    # cells recorded before calibrations existed: nothing to check, and the table says so
    legacy = sweep_of([55.0], [60.0], step_s=None)
    assert "Machine:** not recorded" in table_markdown(legacy, {}, 20)
    with pytest.raises(IfheError, match="not recorded"):
        check_machines(legacy + [fake("fast", 0, 50.0)])


def test_report_only_and_errors_through_the_cli(tmp_path, capsys):
    from ifhe.cli import main
    from ifhe.catalog import available
    if "cifar10_wrn16_2" not in available():
        pytest.skip("no cifar10_wrn16_2 in the zoo")
    args = ["reproduce", "--methods", "cmi", "ifhe", "--seeds", "3", "--budget-minutes", "20", "--out", str(tmp_path)]
    assert main(args + ["--jobs", "2"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert main(args + ["--compare", "ifhe:dafl"]) == 2
    assert "dafl is not in --methods" in capsys.readouterr().err
    assert main(args + ["--report-only"]) == 2
    assert "no finished cell" in capsys.readouterr().err
    for x in sweep_of([55.0, 57.0, 60.0], [60.0, 61.0, 66.0]):
        c = Cell("cifar10_wrn16_2", "wrn16_1", x["variant"], x["seed"])
        c.record_path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
        c.record_path(tmp_path).write_text(json.dumps(x))
    assert main(args + ["--report-only"]) == 0
    assert "| ifhe − cmi | 0,1,2 |" in (tmp_path / "table.md").read_text()
    rec = Cell("cifar10_wrn16_2", "wrn16_1", "ifhe", 1).record_path(tmp_path)
    rec.write_text(json.dumps(fake("ifhe", 1, 61.0, step_s=2.0)))
    assert main(args + ["--report-only"]) == 2
    assert "cells from different machines" in capsys.readouterr().err
    assert main(args + ["--report-only", "--allow-mixed-machines"]) == 0
    assert main(args + ["--only-cell", "nope"]) == 2
    assert "not a cell of this sweep" in capsys.readouterr().err


def test_plan_rejects_unknowns():
    with pytest.raises(IfheError, match="unknown variant"):
        plan("cifar10", ["ifhe", "gan9000"], 1, ["cifar10_wrn16_2"])
    with pytest.raises(IfheError, match="no teacher"):
        plan("cifar10", ["ifhe"], 1, [])
    cells = plan("cifar10", ["ifhe", "cmi"], 2, ["cifar10_wrn16_2"])
    assert len(cells) == 4 and cells[0].pair == "cifar10_wrn16_2-wrn16_1"
    # a newly shipped teacher does not add cells to a documented command's table; it has its own table
    assert plan("cifar10", ["ifhe", "cmi"], 2, ["cifar10_wrn16_2", "cifar10_wrn40_2"]) == cells
    paper = plan("cifar10-paper", ["ifhe"], 1, ["cifar10_wrn16_2", "cifar10_wrn40_2"])
    assert [c.pair for c in paper] == ["cifar10_wrn40_2-wrn16_1", "cifar10_wrn40_2-wrn40_1", "cifar10_wrn40_2-wrn16_2"]
    assert [(c.variant, c.seed) for c in cells] == [("ifhe", 0), ("cmi", 0), ("ifhe", 1), ("cmi", 1)]
    assert parse_comparisons(["cmi:ifhe"], ["ifhe", "cmi", "dafl"]) == [("cmi", "ifhe"), ("dafl", "ifhe")]
    assert parse_comparisons(["dafl:cmi"], ["ifhe", "cmi", "dafl"])[-1] == ("dafl", "cmi")
    with pytest.raises(IfheError, match="A:B"):
        parse_comparisons(["ifhe"], ["ifhe", "cmi"])


def _prec_cell(variant, seed, acc, precision, rounds=30, kd_steps=300):
    return {"id": f"p/{variant}/seed{seed}", "pair": "p", "variant": variant, "seed": seed, "student_acc": acc,
            "head_acc": acc + 10, "rounds": rounds, "kd_steps": kd_steps, "precision": precision, "threads": 1}


def test_across_sweeps_pairs_by_seed_and_says_whether_they_agree():
    from ifhe.sweep_stats import across_sweeps
    a = [_prec_cell("ifhe", s, x, "fp32") for s, x in enumerate([50.0, 52.0, 54.0])]
    b = [_prec_cell("ifhe", s, x, "bf16") for s, x in enumerate([51.0, 52.5, 53.0])]
    b += [_prec_cell("cmi", 0, 60.0, "bf16")]  # only in B: no row
    rows = [r for r in across_sweeps(a, b) if r["metric"] == "student_acc"]
    assert [(r["variant"], r["seeds"]) for r in rows] == [("ifhe", [0, 1, 2])]
    r = rows[0]
    assert r["diff"]["estimate"] == pytest.approx((1.0 + 0.5 - 1.0) / 3)
    assert r["a"]["estimate"] == pytest.approx(52.0) and r["b"]["estimate"] == pytest.approx(52.1666, abs=1e-3)
    assert r["overlap"] and r["within"] and r["zero_in_diff"]
    far = [_prec_cell("ifhe", s, x, "bf16") for s, x in enumerate([70.0, 71.0, 72.5])]
    r = [r for r in across_sweeps(a, far) if r["metric"] == "student_acc"][0]
    assert not r["overlap"] and not r["within"] and not r["zero_in_diff"]


def test_compare_sweeps_refuses_cells_at_unequal_steps(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
    from compare_sweeps import main as compare
    for name, prec, rounds in (("a", "fp32", 30), ("b", "bf16", 30), ("c", "bf16", 29)):
        d = tmp_path / name
        d.mkdir()
        cells = [_prec_cell("ifhe", s, 50.0 + s + (name == "b"), prec, rounds) for s in range(3)]
        (d / "results.json").write_text(json.dumps({"cells": cells}))
    assert compare([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out.md")]) == 0
    text = (tmp_path / "out.md").read_text()
    assert "precision fp32" in text and "precision bf16" in text and "| p | ifhe | student_acc |" in text
    assert json.loads((tmp_path / "out.json").read_text())[0]["diff"]["estimate"] == pytest.approx(1.0)
    with pytest.raises(IfheError, match="equal steps"):
        compare([str(tmp_path / "a"), str(tmp_path / "c")])
