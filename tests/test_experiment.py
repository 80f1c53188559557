import json
import subprocess
import sys

import pytest
import torch

from tiny_settings import TINY_RUN
from ifhe.checkpoint import load_state
from ifhe.config import METHODS, make_config
from ifhe.errors import DivergenceError, IfheError
from ifhe.experiment import Finished, Run, SynthStep, run_to_end


def cfg(method="ifhe", **over):
    kw = {**TINY_RUN, "rounds": 3, "eval_every": 6, **over}
    kw["synth"] = {**TINY_RUN["synth"], **over.get("synth", {})}
    kw["distill"] = {**TINY_RUN["distill"], **over.get("distill", {})}
    return make_config(method, "cpu", teacher="cifar10_wrn16_2", **{k: v for k, v in kw.items()
                                                                     if k not in ("synth", "distill")},
                       synth=kw["synth"], distill=kw["distill"])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_end_to_end_on_real_cifar10(method, shipped_teacher, tiny_cifar, tmp_path):
    # real images on purpose: every method is promised to run end to end on real CIFAR-10 with the shipped teacher
    from ifhe.data import load_split
    test = load_split("cifar10", "test", tiny_cifar)
    fin = run_to_end(Run(cfg(method), tmp_path, teacher=shipped_teacher, test_set=test))
    assert isinstance(fin, Finished) and fin.reason == "rounds" and fin.round == 3 and fin.bank_size == 24
    # the reported accuracy is the exported student's on these real images, recomputed independently
    from ifhe.evaluation import evaluate
    from ifhe.zoo import resolve_teacher
    student = resolve_teacher(str(tmp_path / "student.safetensors"))
    assert evaluate(student, test, student.normalizer, torch.device("cpu")) == pytest.approx(fin.student_acc)
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records if not r.get("final")] == [0, 1, 2]
    result = json.loads((tmp_path / "result.json").read_text())
    assert records[-1] == result and result["student_acc"] == fin.student_acc and result["test_images"] == 200


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
    records = [json.loads(l) for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2, 3, 4] and records[-1]["final"]
    shards = sorted(p.name for p in (tmp_path / "cut" / "bank").glob("r0_*.safetensors"))
    assert shards == [f"r0_{i:06d}.safetensors" for i in range(4)]


def test_divergence_names_the_term_and_says_no_checkpoint_was_written(tiny_teacher, tmp_path):
    c = cfg("ifhe", rounds=5, synth={"lr_g": 1e30, "lr_z": 1e30})
    run = Run(c, tmp_path, teacher=tiny_teacher, test_set=None)
    with pytest.raises(DivergenceError, match=r"loss term .*'(bns|H|adv|total)'.*non-finite.*no checkpoint"):
        run_to_end(run)
    assert not (tmp_path / "checkpoint.safetensors").exists()


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


def test_budget_is_kept_to_one_step_and_compute_is_counted(tiny_teacher, tmp_path):
    """Long rounds (12 synthesis iterations, 12 KD steps): the run still stops within one step of its budget, and
    result.json counts the seconds and sample-passes of what it did."""
    over = {"synth": {"iterations": 12}, "distill": {"steps_per_round": 12}}
    run = Run(cfg("ifhe", rounds=10_000, budget_minutes=0.08, clock="wall", **over), tmp_path, teacher=tiny_teacher,
              test_set=None)
    fin = run_to_end(run)
    p = run.progress
    assert fin.reason == "budget" and p.round >= 1
    step = (p.synth_s + p.kd_s) / max(1, p.synth_render // 8 + p.kd_steps)   # mean seconds a step
    first_round = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["elapsed_s"]
    # the first round always completes (a run needs a student); after it the budget binds within a step
    assert 60 * 0.08 <= fin.elapsed_s <= max(60 * 0.08, first_round) + 3 * step + 0.5
    result = json.loads((tmp_path / "result.json").read_text())
    c = result["compute"]
    assert c["synth_render"] == p.synth_render > 0 and c["kd_student"] == 8 * p.kd_steps
    assert c["synth_teacher"] == c["synth_render"] and c["synth_student"] == c["synth_render"]  # IFHE's L_adv
    assert c["kd_teacher"] == c["kd_student"] and c["synth_s"] > 0 and c["kd_s"] >= 0
    assert c["share_of_reference_kd"] == pytest.approx(c["kd_student"] / c["reference_kd_student"], abs=1e-6)
    assert result["precision"] == "fp32" and result["precision_requested"] == "auto"  # conftest pins auto to fp32


def test_kd_share_fixes_the_kd_steps_a_round_from_the_first_kd_round(tiny_teacher, tmp_path):
    run = Run(cfg("ifhe", rounds=4, distill={"kd_share": 0.5, "steps_per_round": 1}), tmp_path,
              teacher=tiny_teacher, test_set=None)
    run_to_end(run)
    cap = run.progress.kd_step_cap
    assert cap is not None and cap >= 1 and run.progress.kd_steps == 4 * cap
    with pytest.raises(IfheError, match="kd_share"):
        cfg("dfq", distill={"kd_share": 0.5})


def test_precision_auto_decides_once_and_is_recorded(tiny_teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("IFHE_PRECISION_AUTO", "bf16")
    run = Run(cfg("ifhe", rounds=1, precision="auto"), tmp_path, teacher=tiny_teacher, test_set=None)
    run_to_end(run)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["precision"] == "bf16" and result["precision_requested"] == "auto"
    monkeypatch.setenv("IFHE_PRECISION_AUTO", "fp32")   # a resumed run keeps what it started with
    resumed = Run(cfg("ifhe", rounds=2, precision="auto"), tmp_path, resume=True, teacher=tiny_teacher,
                  test_set=None)
    assert resumed.precision == "bf16"


def test_precision_probe_picks_the_faster_and_caches_it(tmp_path, monkeypatch):
    from ifhe.precision import choose_precision

    monkeypatch.delenv("IFHE_PRECISION_AUTO", raising=False)
    monkeypatch.setenv("IFHE_CACHE", str(tmp_path))
    calls = []

    def probe(p):
        calls.append(p)
        return {"fp32": 1.0, "bf16": 0.95}[p]   # bf16 not 10% faster: the exact arithmetic stays
    assert choose_precision("auto", torch.device("cpu"), probe, "x")[0] == "fp32"
    assert choose_precision("auto", torch.device("cpu"), probe, "x")[1]["how"] == "cached probe" and len(calls) == 2
    assert choose_precision("auto", torch.device("cpu"), lambda p: {"fp32": 1.0, "bf16": 0.5}[p], "y")[0] == "bf16"
    assert choose_precision("fp32", torch.device("cpu"), None, "z") == ("fp32", {"how": "requested"})


def test_distill_from_existing_bank(tiny_teacher, tmp_path):
    run_to_end(Run(cfg("ifhe", rounds=2), tmp_path / "a", teacher=tiny_teacher, test_set=None))
    run = Run(cfg("ifhe", rounds=2, bank=str(tmp_path / "a" / "bank")), tmp_path / "b", teacher=tiny_teacher,
              test_set=None)
    fin = run_to_end(run)
    assert fin.bank_size == 16 and run.progress.kd_steps == 6


def test_cli_run_resume_and_export(shipped_teacher, synthetic_cifar, tmp_path):
    base = [sys.executable, "-m", "ifhe"]
    args = ["run", "--method", "dfq", "--rounds", "4", "--synth-batch", "8", "--kd-batch", "8", "--set",
            "synth.commit_every=1", "--data", str(synthetic_cifar), "--out", str(tmp_path / "r"), "--quiet"]
    r = subprocess.run(base + args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "finished (rounds) after 4 rounds" in r.stdout and "student" in r.stdout
    r = subprocess.run(base + ["run", "--rounds", "6", "--resume", "--out", str(tmp_path / "r"), "--quiet",
                               "--data", str(synthetic_cifar)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "after 6 rounds" in r.stdout
    r = subprocess.run(base + ["export", "--bank", str(tmp_path / "r" / "bank"), "--out", str(tmp_path / "png")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "exported 48 images" in r.stdout


@pytest.mark.parametrize("method, updated", [("zskt", True), ("dafl", False)])
def test_gan_style_students_learn_from_their_rounds_own_float_batch(tiny_teacher, tmp_path, method, updated):
    """ZSKT's student learns from the round's z through the *updated* generator (loaders.py), DAFL's from the
    very batch the generator step scored (DAFL-train.py); both as floats, never the uint8 bank copy."""
    run = Run(cfg(method, rounds=2, distill={"steps_per_round": 3, "batch_size": 4}), tmp_path,
              teacher=tiny_teacher, test_set=None)
    seen, draw = [], run._from_round_batch

    def spy():
        x = draw()
        seen.append((x, run._round_images.clone(), run.synth.kept_batch()[0].clone()))
        return x

    run._from_round_batch = spy
    run_to_end(run)
    assert len(seen) == 6 and not torch.equal(seen[0][1], seen[-1][1])  # a new batch each round
    for x, batch, scored in seen:
        assert x.dtype == torch.float32 and x.shape[0] == 4
        assert all((batch == row).flatten(1).all(1).any() for row in x)
        assert torch.equal(batch, scored) != updated


def test_fast_warmup_has_no_kd_and_its_schedule_waits(tiny_teacher, tmp_path):
    run = Run(cfg("fast", rounds=10, warmup=0.3), tmp_path, teacher=tiny_teacher, test_set=None)
    kd_rounds, adv_rounds = set(), set()
    for ev in run.events():
        if isinstance(ev, SynthStep) and ev.losses and "adv" in ev.losses:
            adv_rounds.add(ev.round)
        if ev.kind == "kd":
            kd_rounds.add(ev.round)
            assert ev.round > 3 or ev.lr == pytest.approx(run.cfg.distill.lr)
    assert kd_rounds == set(range(3, 10)) and adv_rounds == set(range(3, 10))
    assert run.progress.kd_steps == 7 * 3


def test_synthesis_only_ifhe_trains_h_and_says_so(tiny_teacher, tmp_path):
    from ifhe.bank import open_bank
    run = Run(cfg("ifhe", rounds=3, distill={"steps_per_round": 0, "head_steps": 4}), tmp_path,
              teacher=tiny_teacher, test_set=None)
    before = [p.detach().clone() for p in run.head.parameters()]
    agree = [ev.metrics["h_agree"] for ev in run.events() if isinstance(ev, SynthStep) and ev.metrics]
    assert run.progress.kd_steps == 0 and run.progress.head_updates == 12
    assert any(not torch.equal(a, b) for a, b in zip(before, run.head.parameters()))
    assert agree and all(0.0 <= a <= 1.0 for a in agree)
    bank = open_bank(tmp_path / "bank")
    assert "alone, 4 steps a round" in bank.meta["head_training"]
    assert [r["h_updates"] for r in bank.records()] == [0, 4, 8]
    assert [r["round"] for r in bank.records()] == [0, 1, 2]


def test_two_runs_in_threads_give_the_images_of_one_alone(tiny_teacher, tmp_path):
    """Each run draws from its own random streams: a second run started beside it changes nothing."""
    import threading
    from ifhe.bank import open_bank

    def go(name, seed):
        run_to_end(Run(cfg("ifhe", rounds=3, seed=seed), tmp_path / name, teacher=tiny_teacher, test_set=None))

    go("alone", 0)
    threads = [threading.Thread(target=go, args=(n, s)) for n, s in (("a", 0), ("b", 0), ("c", 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = open_bank(tmp_path / "alone" / "bank").images
    assert torch.equal(open_bank(tmp_path / "a" / "bank").images, alone)
    assert torch.equal(open_bank(tmp_path / "b" / "bank").images, alone)
    assert not torch.equal(open_bank(tmp_path / "c" / "bank").images, alone)


def test_divergence_message_names_the_checkpoint_on_disk(tiny_teacher, tmp_path):
    # checkpoints are throttled: the one on disk is older than the round that diverges
    run = Run(cfg("ifhe", rounds=50, checkpoint_seconds=3600), tmp_path, teacher=tiny_teacher, test_set=None)
    events = run.events()
    for ev in events:
        if ev.kind == "batch" and ev.round == 2:
            run.save_checkpoint()
            saved = run.progress.round
            for p in run.synth.generator.parameters():
                p.data.fill_(float("nan"))
            break
    with pytest.raises(DivergenceError) as e:
        for _ in events:
            pass
    assert run.progress.round > saved
    assert f"after round {saved}" in str(e.value) and "checkpoint.safetensors" in str(e.value)
    state, _ = load_state(tmp_path / "checkpoint.safetensors")
    assert state["progress"]["round"] == saved


def test_hooks_ignore_other_threads_passes(tiny_teacher):
    import threading
    from ifhe.hooks import BNStatHook
    with BNStatHook(tiny_teacher) as hook:
        t = threading.Thread(target=lambda: tiny_teacher(torch.zeros(2, 3, 32, 32)))
        t.start()
        t.join()
        assert hook.stats == []
        with torch.no_grad():
            tiny_teacher(torch.zeros(2, 3, 32, 32))
        assert len(hook.stats) > 0
