import json
import subprocess
import sys

import pytest
import torch

from tiny_settings import TINY_RUN
from ifhe.checkpoint import load_state
from ifhe.config import METHODS, make_config
from ifhe.errors import DivergenceError, IfheError
from ifhe.experiment import Checkpointed, Evaluated, Finished, Run, SynthStep, run_to_end


def cfg(method="ifhe", **over):
    kw = {**TINY_RUN, "rounds": 3, "eval_every": 6, **over}
    kw["synth"] = {**TINY_RUN["synth"], **over.get("synth", {})}
    kw["distill"] = {**TINY_RUN["distill"], **over.get("distill", {})}
    return make_config(method, "cpu", teacher="cifar10_wrn16_2", **{k: v for k, v in kw.items()
                                                                     if k not in ("synth", "distill")},
                       synth=kw["synth"], distill=kw["distill"])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_end_to_end_on_real_cifar10(method, shipped_teacher, tiny_cifar, tmp_path):
    from ifhe.data import load_split
    test = load_split("cifar10", "test", tiny_cifar)
    fin = run_to_end(Run(cfg(method), tmp_path, teacher=shipped_teacher, test_set=test))
    assert isinstance(fin, Finished) and fin.reason == "rounds" and fin.round == 3
    assert 0 <= fin.student_acc <= 100 and fin.bank_size == 24
    assert (tmp_path / "student.safetensors").exists()
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]


def _weights(run):
    return {k: v.clone() for k, v in run.student.state_dict().items()}


def test_killed_run_resumes_exactly(tiny_teacher, tmp_path):
    full = Run(cfg(rounds=4), tmp_path / "full", teacher=tiny_teacher, test_set=None)
    run_to_end(full)
    cut = Run(cfg(rounds=4), tmp_path / "cut", teacher=tiny_teacher, test_set=None)
    events = cut.events()
    for ev in events:  # "kill" mid-way through round 2, after round 1's checkpoint
        if isinstance(ev, SynthStep) and ev.round == 2 and ev.iteration == 2:
            break
    events.close()
    with pytest.raises(IfheError, match="--resume"):
        Run(cfg(rounds=4), tmp_path / "cut", teacher=tiny_teacher, test_set=None)
    resumed = Run(cfg(rounds=4), tmp_path / "cut", resume=True, teacher=tiny_teacher, test_set=None)
    assert resumed.progress.round == 2 and len(resumed.bank) == 16
    fin = run_to_end(resumed)
    assert fin.round == 4 and fin.bank_size == 32
    a, b = _weights(full), _weights(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    rounds = [json.loads(l)["round"] for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2, 3]
    shards = sorted(p.name for p in (tmp_path / "cut" / "bank").glob("r0_*.safetensors"))
    assert shards == [f"r0_{i:06d}.safetensors" for i in range(4)]


def test_divergence_names_the_term_and_keeps_checkpoint(tiny_teacher, tmp_path):
    c = cfg("ifhe", rounds=5, synth={"lr_g": 1e30, "lr_z": 1e30})
    run = Run(c, tmp_path, teacher=tiny_teacher, test_set=None)
    with pytest.raises(DivergenceError, match=r"loss term .*'(bns|H|adv|total)'.*non-finite"):
        run_to_end(run)
    if (tmp_path / "checkpoint.safetensors").exists():
        load_state(tmp_path / "checkpoint.safetensors")


def test_live_weights_and_stop(tiny_teacher, tmp_path):
    run = Run(cfg("ifhe", rounds=50), tmp_path, teacher=tiny_teacher, test_set=None)
    seen = []
    for ev in run.events():
        if isinstance(ev, SynthStep) and ev.losses:
            seen.append(set(ev.losses))
            if len(seen) == 2:
                run.set_weights(alpha=0.0)
            if len(seen) == 6:
                run.request_stop()
        if isinstance(ev, Finished):
            assert ev.reason == "stopped"
    assert "H" in seen[0] and "H" not in seen[-1]


def test_budget_stops_run(tiny_teacher, tmp_path):
    fin = run_to_end(Run(cfg("ifhe", rounds=10_000, budget_minutes=0.05), tmp_path, teacher=tiny_teacher,
                         test_set=None))
    assert fin.reason == "budget" and fin.elapsed_s >= 3


def test_distill_from_existing_bank(tiny_teacher, tmp_path):
    run_to_end(Run(cfg("ifhe", rounds=2), tmp_path / "a", teacher=tiny_teacher, test_set=None))
    run = Run(cfg("ifhe", rounds=2, bank=str(tmp_path / "a" / "bank")), tmp_path / "b", teacher=tiny_teacher,
              test_set=None)
    fin = run_to_end(run)
    assert fin.bank_size == 16 and run.progress.kd_steps == 6


def test_cli_run_resume_and_export(shipped_teacher, tiny_cifar, tmp_path):
    base = [sys.executable, "-m", "ifhe"]
    args = ["run", "--method", "dfq", "--rounds", "4", "--synth-batch", "8", "--kd-batch", "8", "--set",
            "synth.commit_every=1", "--data", str(tiny_cifar), "--out", str(tmp_path / "r"), "--quiet"]
    r = subprocess.run(base + args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "finished (rounds) after 4 rounds" in r.stdout and "student" in r.stdout
    r = subprocess.run(base + ["run", "--rounds", "6", "--resume", "--out", str(tmp_path / "r"), "--quiet",
                               "--data", str(tiny_cifar)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "after 6 rounds" in r.stdout
    r = subprocess.run(base + ["export", "--bank", str(tmp_path / "r" / "bank"), "--out", str(tmp_path / "png")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "exported 48 images" in r.stdout


def test_round_source_distills_on_the_rounds_own_batch(tiny_teacher, tmp_path):
    run = Run(cfg("zskt", rounds=2, distill={"steps_per_round": 3, "batch_size": 4}), tmp_path,
              teacher=tiny_teacher, test_set=None)
    seen, draw = [], run._from_round_batch

    def spy():
        x = draw()
        seen.append((x, run._round_batch.clone()))
        return x

    run._from_round_batch = spy
    run_to_end(run)
    assert len(seen) == 6 and not torch.equal(seen[0][1], seen[-1][1])  # a new batch each round
    for x, batch in seen:
        assert x.shape[0] == 4 and all((batch == row).flatten(1).all(1).any() for row in x)
