"""tools/ship_banks.py and the committed comparison's format (ifhe.feature_banks): tiny runs of a random teacher
shipped, read back as the page reads them, refused when they are not comparable or too large."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from features_fixture import make_shipped, tiny_runs  # noqa: E402
from ship_banks import main as ship  # noqa: E402

from ifhe.errors import IfheError  # noqa: E402
from ifhe.feature_banks import available, folder_size, load_comparison  # noqa: E402


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    from ifhe.models import create_model
    from ifhe.zoo import save_model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "t.safetensors"
    save_model(path, create_model("wrn16_1", 10), "cifar10")
    return str(path)


@pytest.fixture(scope="module")
def shipped(teacher, synthetic_cifar, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ship")
    return make_shipped(root / "out", teacher, synthetic_cifar, root)


def test_shipped_comparison_reads_back_as_computed(shipped, teacher, synthetic_cifar, monkeypatch):
    from ifhe.checkpoint import sha256_file
    from ifhe.feature_view import metrics_table, seed_table, verdict_table
    assert available(shipped) and not available(shipped / "banks")
    monkeypatch.setenv("IFHE_DATA", str(synthetic_cifar))
    s = load_comparison(shipped)
    doc = json.loads((shipped / "comparison.json").read_text())
    assert s.teacher["sha256"] == sha256_file(teacher) and s.teacher["name"] == "t.safetensors"
    assert doc["command"].startswith("python tools/ship_banks.py --teacher") and "share:0.5" in doc["command"]
    assert s.label.startswith("shipped comparison: DeepInversion, CMI, IFHE (2 seeds each)")
    r = s.report
    assert r.stages == ("penultimate", "h") and r.primary == "penultimate" and r.n == 48
    assert r.set_names == ["real", "DeepInversion s0", "DeepInversion s1", "CMI s0", "CMI s1", "IFHE s0", "IFHE s1"]
    for b in s.banks:   # every bank's provenance, and its file as checksummed
        assert (b.images, b.run_rounds, b.rounds_used) == (48, 4, "rounds 2–3 of 4")
        assert b.made_by.startswith("ifhe run --config") and b.sha256 == sha256_file(shipped / "banks" / b.file)
        assert r.images[b.name].shape == (48, 3, 32, 32) and r.images[b.name].dtype == np.uint8
    assert r.images["real"].shape == (48, 3, 32, 32)   # read from the data at hand, by the recorded indices
    m = r.metrics
    assert len(m) == 14 and m["knn"].dtype == float and set(m["group"]) == {"real", "DeepInversion", "CMI", "IFHE"}
    assert len(r.points) == 2 * 2 * 7 * 48 and set(r.points["map"]) == {"shared", "own"}
    assert not metrics_table(r).empty and not seed_table(r).empty
    claims = verdict_table(r)
    assert claims["stage"].iloc[0] == "penultimate (primary)" and (claims["paired seeds"] == "0,1").all()
    assert folder_size(shipped) < 2e6


def test_real_images_are_never_shipped(shipped, synthetic_cifar, monkeypatch, tmp_path):
    """The dataset is not ours to redistribute: real.npz names the test images (index, label) without their
    pixels; without the data at hand (or with another copy whose labels disagree) the comparison reads back
    without real thumbnails and with every map point and metric."""
    with np.load(shipped / "real.npz") as f:
        assert set(f.files) == {"y", "index"} and len(f["index"]) == 48
    monkeypatch.delenv("IFHE_DATA", raising=False)
    s = load_comparison(shipped)
    assert "real" not in s.report.images and (s.report.points["set"] == "real").sum() == 2 * 2 * 48
    other = tmp_path / "other"
    other.mkdir()
    with np.load(synthetic_cifar / "cifar10-test.npz") as f:
        np.savez(other / "cifar10-test.npz", x=f["x"], y=(f["y"] + 1) % 10)
    monkeypatch.setenv("IFHE_DATA", str(other))
    assert "real" not in load_comparison(shipped).report.images


def test_a_committed_bank_goes_beside_others(shipped, teacher, tmp_path, capsys):
    """`ifhe features --sets` (and the page) read a committed bank like a run's."""
    from ifhe.cli import main
    from ifhe.features import bank_set
    s, cfg = bank_set(shipped / "banks" / "ifhe-seed1.npz")
    assert s.name == "shipped IFHE s1" and (s.group, s.seed, s.total_rounds) == ("IFHE", 1, 4)
    assert len(s.labels) == 48 and set(s.rounds) <= {2, 3} and cfg["synth"]["alpha"] == 0.5
    code = main(["features", "--teacher", teacher, "--sets", f"mine={shipped / 'banks' / 'cmi-seed0.npz'}",
                 str(shipped / "banks" / "ifhe-seed1.npz"), "--window", "all", "--n", "40", "--bootstrap", "0",
                 "--round-windows", "0", "--out", str(tmp_path / "rep")])
    assert code == 0 and "| penultimate | shipped IFHE s1 | 40 |" in capsys.readouterr().out


def test_the_tool_refuses_what_is_not_comparable(teacher, tmp_path):
    runs = tiny_runs(tmp_path, teacher, methods=("cmi",), seeds=(0,), rounds=2)
    args = ["--teacher", teacher, "--runs", str(runs[0]), "--n", "16", "--window", "all", "--bootstrap", "0",
            "--out", str(tmp_path / "out")]
    from ship_banks import parser, ship as ship_fn
    summary = runs[0] / "summary.json"
    summary.write_text(json.dumps({"teacher_sha256": "0" * 64}))   # a sweep cell made with another teacher
    with pytest.raises(IfheError, match="made with teacher sha256 000000000000"):
        ship_fn(_args(parser(), args))
    summary.unlink()
    result = runs[0] / "result.json"
    saved = result.read_text()
    result.unlink()                                                 # a run that has not finished
    assert ship(args) == 2 and not (tmp_path / "out").exists()
    result.write_text(saved)
    with pytest.raises(IfheError, match="over --max-mb"):
        ship_fn(_args(parser(), args + ["--max-mb", "0.01"]))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
    assert ship(args) == 0 and available(tmp_path / "out")


def _args(p, argv):
    a = p.parse_args(argv)
    a.argv = argv
    return a


def test_the_sweep_layout_and_its_command(tmp_path):
    """--sweep finds <sweep>/runs/<pair>/<variant>/seed<k>; each bank's provenance names the sweep's command."""
    from ship_banks import made_by, sweep_runs
    sweep = tmp_path / "sweep-x"
    for v in ("ifhe", "cmi"):
        for k in (0, 1):
            (sweep / "runs" / "t-wrn16_1" / v / f"seed{k}").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"command": "ifhe reproduce --out results/sweep-x"}))
    runs = sweep_runs(sweep, ["ifhe", "cmi"], None)
    assert [r.relative_to(sweep / "runs" / "t-wrn16_1").as_posix() for r in runs] == [
        "ifhe/seed0", "ifhe/seed1", "cmi/seed0", "cmi/seed1"]
    assert made_by(runs[0]) == "ifhe reproduce --out results/sweep-x (cell t-wrn16_1/ifhe/seed0)"
    (sweep / "runs" / "t-wrn40_1").mkdir()
    with pytest.raises(IfheError, match="--pair"):
        sweep_runs(sweep, None, None)
    shutil.rmtree(sweep / "runs" / "t-wrn40_1")
