"""kill -9 at random points of `ifhe run`, then --resume: the run finishes and its files stay consistent."""
import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from ifhe.models import create_model
from ifhe.zoo import save_model

ROUNDS, BATCH = 6, 8


def _args(teacher, out):
    return [sys.executable, "-m", "ifhe", "run", "--method", "ifhe", "--teacher", str(teacher), "--rounds",
            str(ROUNDS), "--synth-batch", str(BATCH), "--kd-batch", "8", "--kd-steps", "3", "--iterations", "3",
            "--eval-every", "0", "--threads", "1", "--quiet", "--set", "checkpoint_seconds=0", "--out", str(out)]


def _check_consistent(out):
    manifest = json.loads((out / "bank" / "manifest_r0.json").read_text())
    files = sorted(p.name for p in (out / "bank").glob("r0_*.safetensors"))
    listed = [s["file"] for s in manifest["shards"]]
    assert listed == files == [f"r0_{i:06d}.safetensors" for i in range(ROUNDS)]  # no duplicate, none missing
    assert sum(s["n"] for s in manifest["shards"]) == ROUNDS * BATCH
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records if not r.get("final")] == list(range(ROUNDS))  # no gap, no repeat
    assert [r for r in records if r.get("final")] == [json.loads((out / "result.json").read_text())]
    assert not list(out.rglob(".*tmp*"))


def _trial(teacher, out, rng, kills):
    for _ in range(kills):
        p = subprocess.Popen(_args(teacher, out) + (["--resume"] if out.exists() else []),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(1.5, 9.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
    r = subprocess.run(_args(teacher, out) + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    _check_consistent(out)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("t") / "teacher.safetensors"
    save_model(path, create_model("wrn16_1", 10), "cifar10")
    return path


@pytest.mark.parametrize("trial", range(2))
def test_kill_and_resume(teacher, tmp_path, trial):
    _trial(teacher, tmp_path / "run", random.Random(trial), kills=1)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(10))
def test_kill_and_resume_many(teacher, tmp_path, trial):
    """python -m pytest -m slow tests/test_kill.py: ten trials, each killed three times at random points."""
    _trial(teacher, tmp_path / "run", random.Random(100 + trial), kills=3)
