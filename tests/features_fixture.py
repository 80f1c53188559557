"""A tiny committed comparison (`ifhe.feature_banks`), made the way the real one is made: tiny runs of a random
teacher, then tools/ship_banks.py. For the app's tests (AppTest and the browser) and the tool's own tests; they point
the page at it with IFHE_APP_SHIPPED, so that none depends on the real committed files."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

TINY_BANK = dict(synth={"batch_size": 32, "iterations": 2, "commit_every": 1},
                 distill={"steps_per_round": 0}, log_every=1, checkpoint_seconds=0)


def tiny_runs(root: Path, teacher: str, methods=("deepinversion", "cmi", "ifhe"), seeds=(0, 1),
              rounds: int = 4) -> list[Path]:
    """Finished synthesis-only runs, <root>/runs/<method>/seed<k>, of 32 images a round."""
    from ifhe.config import make_config
    from ifhe.experiment import Run, run_to_end
    out = []
    for method in methods:
        for seed in seeds:
            folder = Path(root) / "runs" / method / f"seed{seed}"
            if not (folder / "result.json").exists():
                cfg = make_config(method, teacher=teacher, rounds=rounds, seed=seed, **TINY_BANK)
                run_to_end(Run(cfg, folder, test_set=None))
            out.append(folder)
    return out


def make_shipped(out: Path, teacher: str, data: Path, root: Path, **kw) -> Path:
    """tools/ship_banks.py over tiny runs: half of each run's rounds, 48 images a bank."""
    from ship_banks import main
    runs = tiny_runs(root, teacher, **kw)
    code = main(["--teacher", teacher, "--real", str(data), "--runs", *map(str, runs), "--n", "48",
                 "--window", "share:0.5", "--bootstrap", "10", "--threads", "1", "--out", str(out)])
    assert code == 0
    return Path(out)
