"""The whole feature report at CPU scale: 2,000 real images (1,000 compared + 1,000 for the real-vs-real floor) and
3 x 1,000 synthesized, WRN-16-2 teacher, stages h and block3, every metric with 200-draw bootstrap intervals, the
metric-vs-round table, both kinds of map (shared real-fitted + one fitted per set) and the files.

Prints the time of the whole report from an empty feature cache, the same with features cached (what a rerun or
the app's second look costs), the phases of the cached run, and scikit-learn's TSNE on the same points for
comparison. Synthesized sets are stand-ins (real test images under noise, 10 "rounds" of 100) so the benchmark
needs no earlier run.

    python bench/bench_tsne.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from common import teacher, threads
from ifhe.data import load_split
from ifhe.feature_report import ImageSet
from ifhe.features import extract_features, feature_report, write_report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    n = threads()
    t, name = teacher()
    test = load_split("cifar10", "test", a.data)
    r = test.subset(2000, 0)
    real = ImageSet("real", r.x, r.y.numpy())
    sets = []
    for i, noise in enumerate((10, 40, 80)):
        s = test.subset(1000, i + 1)
        x = (s.x.float() + noise * torch.randn(s.x.shape)).clamp(0, 255).to(torch.uint8)
        sets.append(ImageSet(f"noise{noise}", x, s.y.numpy(), np.repeat(np.arange(10), 100)))
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        times = []

        def run(label):
            marks = [(time.perf_counter(), "start")]
            rep = feature_report(t, sets, real, ("h", "block3"), teacher_name=name, cache_dir=cache,
                                 progress=lambda msg: marks.append((time.perf_counter(), msg)))
            marks.append((time.perf_counter(), "files"))
            write_report(rep, out)
            marks.append((time.perf_counter(), "end"))
            times.append((label, marks))
            return rep

        run("empty cache")
        rep = run("features cached")
    for label, marks in times:
        print(f"teacher {name}, {n} threads, {label}: whole report {marks[-1][0] - marks[0][0]:.1f} s")
    marks = times[-1][1]
    phases: dict[str, float] = {}
    for (t0, msg), (t1, _) in zip(marks, marks[1:]):
        key = msg.split(" at ")[0] if " at " in msg else ("features" if msg.startswith("features") else msg)
        phases[key] = phases.get(key, 0.0) + t1 - t0
    print("  phases (cached run): " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    print(f"  n = {rep.n} per set, stages {rep.stages}, {len(rep.points)} map points")
    feats = extract_features(t, real.images[:2000], ("block3",)).features["block3"]
    allx = np.concatenate([feats] + [extract_features(t, s.images, ("block3",)).features["block3"] for s in sets])
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    t0 = time.perf_counter()
    TSNE(n_components=2, random_state=0, init="pca").fit_transform(PCA(50).fit_transform(allx))
    print(f"scikit-learn TSNE on the same 5,000 points (joint embedding, one stage): {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
