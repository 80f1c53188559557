"""The whole feature report at CPU scale: 2,000 real + 3 x 1,000 synthesized images, WRN-16-2 teacher.

Times feature extraction, the openTSNE fit on the real points, the placement of the synthesized sets, the
metrics and the files; then scikit-learn's TSNE on the same 5,000 points (which has no transform, so it must
embed everything jointly) for comparison. Synthesized sets are stand-ins (real test images under noise) so the
benchmark needs no earlier run.

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
from ifhe.embedding import compute_feature_map, fit_shared_map, write_report
from ifhe.features import extract_features


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    n = threads()
    t, name = teacher()
    test = load_split("cifar10", "test", a.data)
    real = test.subset(2000, 0)
    sets = {}
    for i, noise in enumerate((10, 40, 80)):
        s = test.subset(1000, i + 1)
        x = (s.x.float() + noise * torch.randn(s.x.shape)).clamp(0, 255).to(torch.uint8)
        sets[f"noise{noise}"] = (x, s.y)
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        fmap = compute_feature_map(t, sets, (real.x, real.y), "block2", n_per_set=1000, n_real=2000,
                                   cache_dir=cache)
        t1 = time.perf_counter()
        write_report(fmap, out)
        t2 = time.perf_counter()
        fmap = compute_feature_map(t, sets, (real.x, real.y), "block2", n_per_set=1000, n_real=2000,
                                   cache_dir=cache)
        t3 = time.perf_counter()
    print(f"teacher {name}, {n} threads: whole report {t2 - t0:.1f} s (map + metrics {t1 - t0:.1f} s, files "
          f"{t2 - t1:.1f} s); again with cached features {t3 - t2:.1f} s")
    feats = extract_features(t, real.x, ("block2",)).features["block2"]
    t0 = time.perf_counter()
    fit_shared_map(feats)
    print(f"openTSNE fit alone on 2,000 points: {time.perf_counter() - t0:.1f} s")
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    allx = np.concatenate([feats] + [extract_features(t, x, ("block2",)).features["block2"] for x, _ in sets.values()])
    t0 = time.perf_counter()
    TSNE(n_components=2, random_state=0, init="pca").fit_transform(PCA(50).fit_transform(allx))
    print(f"scikit-learn TSNE on the same 5,000 points (joint embedding): {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
