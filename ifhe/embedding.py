"""t-SNE maps of intermediate features: openTSNE fitted on one set (after PCA), other sets placed into it with
`transform`. The figures drawn from them are `ifhe.feature_view`'s.

Maps: the shared map (fitted on real set A, every other set placed into it; fitted on the union of the sets
without real images) and one map per set fitted on that set alone (the paper's figure). PCA to 50 dimensions
first; fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from openTSNE import TSNE
from sklearn.decomposition import PCA

PCA_DIMS = 50
# openTSNE's defaults are 250 + 500 iterations at theta 0.5: on 1,000 points the map is settled well before
# (the 10-NN accuracy of the 2-d points is within 0.02 of the defaults' on h features of real and noisy images,
# at a sixth of the time; bench/bench_tsne.py)
TSNE_ITER = dict(early_exaggeration_iter=60, n_iter=120, theta=0.8)
TRANSFORM_ITER = 100


# ---- maps ------------------------------------------------------------------------------------------------------

@dataclass
class TsneMap:
    """A fitted openTSNE embedding (after PCA) that can place new points."""

    pca: object
    embedding: object  # openTSNE.TSNEEmbedding

    def transform(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.embedding.transform(self.pca.transform(features), n_iter=TRANSFORM_ITER))

    @property
    def fitted_points(self) -> np.ndarray:
        return np.asarray(self.embedding)


def fit_map(features: np.ndarray, seed: int = 0, perplexity: float = 30.0, n_jobs: int = 1) -> TsneMap:
    """openTSNE (exact neighbours, Barnes-Hut) on the first PCA_DIMS principal components of `features`."""
    n, d = features.shape
    pca = PCA(n_components=min(PCA_DIMS, d, n), random_state=seed).fit(features)
    perplexity = min(perplexity, max(2.0, (n - 1) / 3.5))
    emb = TSNE(perplexity=perplexity, metric="euclidean", neighbors="exact", negative_gradient_method="bh",
               n_jobs=n_jobs, random_state=seed, verbose=False, **TSNE_ITER).fit(pca.transform(features))
    return TsneMap(pca, emb)
