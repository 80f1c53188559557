import json

import pytest

from tiny_settings import TINY_RUN
from ifhe.errors import IfheError
from ifhe.reproduce import Cell, plan, run_cell, table_markdown, write_results

OVERRIDES = {"synth": TINY_RUN["synth"], "distill": TINY_RUN["distill"], "eval_every": 3, "log_every": 1,
             "checkpoint_seconds": 0}


def test_sweep_resumes_and_writes_table(tiny_teacher, tiny_cifar, tmp_path):
    from ifhe.data import load_split
    from ifhe.experiment import Run, SynthStep
    from ifhe.config import make_config
    test = load_split("cifar10", "test", tiny_cifar)
    cells = [Cell("cifar10_tiny", "wrn16_1", "ifhe", 0), Cell("cifar10_tiny", "wrn16_1", "cmi", 0)]
    first = run_cell(cells[0], tmp_path, 0.03, None, OVERRIDES, teacher=tiny_teacher, test_set=test)
    assert first["reason"] == "budget" and first["curve"] and first["student_acc"] is not None
    stamp = (cells[0].folder(tmp_path) / "summary.json").stat().st_mtime_ns
    # the second cell is "killed" after its first checkpoint
    cfg = make_config("cmi", "cpu", synth=TINY_RUN["synth"], distill=TINY_RUN["distill"], teacher="cifar10_tiny",
                      budget_minutes=0.03, rounds=10 ** 6, eval_every=3, log_every=1, checkpoint_seconds=0)
    events = Run(cfg, cells[1].folder(tmp_path), teacher=tiny_teacher, test_set=test).events()
    for ev in events:
        if isinstance(ev, SynthStep) and ev.round == 1:
            break
    events.close()
    summaries = [run_cell(c, tmp_path, 0.03, None, OVERRIDES, teacher=tiny_teacher, test_set=test,
                          final_test_set=test) for c in cells]
    assert (cells[0].folder(tmp_path) / "summary.json").stat().st_mtime_ns == stamp  # finished cell skipped
    assert summaries[0] == first
    second = summaries[1]
    assert second["rounds"] >= 1 and second["final_test_images"] == len(test)
    rounds = [json.loads(l)["round"] for l in (cells[1].folder(tmp_path) / "metrics.jsonl").read_text().splitlines()]
    assert rounds == list(range(len(rounds)))
    paths = write_results(summaries, tmp_path / "out", 0.03)
    md = paths["md"].read_text()
    assert "| ifhe |" in md and "| cmi |" in md and "91.8" in md and "90.01" in md
    assert paths["png"].stat().st_size > 1000 and json.loads(paths["json"].read_text())[1]["variant"] == "cmi"


def test_table_mean_and_std():
    s = [{"pair": "cifar10_wrn16_2-wrn16_1", "variant": "ifhe", "seed": i, "student_acc": a,
          "config": {"threads": 1}} for i, a in enumerate([50.0, 52.0])]
    md = table_markdown(s, {"cifar10_wrn16_2": {"test_accuracy": 91.0}}, 20)
    assert "51.00 ± 1.41" in md and "| teacher | 91.0 |" in md
    assert "CPU time per thread, 1 thread;" in md


def test_plan_rejects_unknowns():
    with pytest.raises(IfheError, match="unknown variant"):
        plan("cifar10", ["ifhe", "gan9000"], 1, ["cifar10_wrn16_2"])
    with pytest.raises(IfheError, match="no teacher"):
        plan("cifar10", ["ifhe"], 1, [])
    cells = plan("cifar10", ["ifhe", "cmi"], 2, ["cifar10_wrn16_2"])
    assert len(cells) == 4 and cells[0].pair == "cifar10_wrn16_2-wrn16_1"
