"""Peak resident memory of a short CMI run (negative cache at its full reference size, 4096) and of IFHE.

Each method runs in its own process so the peaks do not mix.

    python bench/bench_memory.py [--rounds 6]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, torch
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from common import teacher, threads, peak_rss_mb
from ifhe.config import make_config
from ifhe.experiment import Run, run_to_end
threads()
t, name = teacher()
cfg = make_config({method!r}, "cpu", teacher="cifar10_wrn16_2", rounds={rounds}, eval_every=0,
                  synth={synth}, distill={{"steps_per_round": 20}})
run_to_end(Run(cfg, {out!r}, teacher=t, test_set=None))
print(json.dumps({{"method": {method!r}, "peak_rss_mb": peak_rss_mb(), "teacher": name}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    here = Path(__file__).resolve().parent
    for method, synth in (("cmi", {"cr_negatives": 4096, "iterations": 5}), ("ifhe", {"iterations": 5})):
        with tempfile.TemporaryDirectory() as out:
            code = CHILD.format(root=str(here.parent), bench=str(here), method=method, rounds=a.rounds,
                                synth=repr(synth), out=out)
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-2000:])
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{method}: peak RSS {res['peak_rss_mb']:.0f} MB over {a.rounds} rounds "
                  f"(reference CMI: 2.3 GiB, ~900 MB of it the feature bank)")


if __name__ == "__main__":
    main()
