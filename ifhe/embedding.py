"""Heterogeneity of intermediate features, measured where L_H acts, and t-SNE maps of them.

Everything here is a pure function of arrays (no teacher, no files, no Streamlit); `compute_report` takes the
feature extractor as an argument. The protocol (DESIGN.md, "Measuring intermediate features"):

- Stages. "h" is h's input: the instance-mean pooled outputs of the stages h reads (the run's `synth.h_stages`,
  block1..block3 by default), concatenated; any stage of the teacher can be added (`teacher.stages`).
- Labels. A synthesized image is labelled by its target class t, a real one by its true class (`labels="target"`,
  the default); `labels="predicted"` labels every point by the teacher's prediction instead. The other labelling's
  balanced k-NN accuracy is kept as a secondary column, and the agreement of prediction with t is reported per set.
- Samples. Every set, real included, is compared at the same n, drawn from a window of rounds (default: the most
  recent rounds that hold n images). Real images are drawn twice, disjointly: set A is "real", set B gives the
  real-vs-real floor of the Fréchet distance at the same n.
- Features are standardized by the real set's channel mean and std (by the union of the compared sets without
  real images) before every metric and map, so a few large channels cannot dominate distances.
- Protocol. 5 stratified folds, fixed per set (seeded); a class with fewer than 5 images in a set is excluded from
  that set's label-based metrics and named in the report, instead of changing the number of folds. k-NN (k=10)
  and a linear probe (L2 logistic regression, C=0.1) predict every point out of fold once; their balanced accuracy
  (chance = 1 / number of classes) gets a percentile-bootstrap 95% interval over points, stratified by label
  (`ifhe.stats.bootstrap_interval`), so the interval is of the test points' sampling, the folds held fixed.
- Diversity (within-class spread): the mean pairwise euclidean distance between standardized features of two
  images of the same class, averaged over classes, divided by the same figure of the reference set (real images).
  1 = as spread as real images of a class; a generator that draws every image of a class alike scores near 0,
  whatever its k-NN accuracy.
- Silhouette: mean silhouette (euclidean, standardized features) under the chosen labels; its interval is a
  bootstrap of the per-point values.
- Fréchet distance of the set's standardized features to real set A, printed with the floor Fréchet(B, A).
- Metric vs round: each bank is cut into consecutive windows of equal image count (in round order), each window
  subsampled to the same n as every other bank's windows; balanced k-NN accuracy and agreement per window.
- Maps. The shared map (openTSNE fitted on real set A, every other set placed into it with `transform`; fitted
  on the union of the sets without real images) and one map per set fitted on that set alone (the paper's
  figure). PCA to 50 dimensions first; fixed seed.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from .data import CIFAR10_CLASSES
from .errors import IfheError
from .stats import Interval, bootstrap_interval

H_STAGE = "h"                 # the pseudo-stage: h's input, the concatenation of the pooled h_stages
LABELINGS = ("target", "predicted")
FOLDS = 5
K_NEIGHBOURS = 10
PROBE_C = 0.1                 # L2 strength of the linear probe (standardized features)
N_BOOT = 200
N_ROUND_WINDOWS = 5
MIN_ROUND_WINDOW = 50         # fewer images per window: no metric-vs-round curve
PCA_DIMS = 50
# openTSNE's defaults are 250 + 500 iterations at theta 0.5: on 1,000 points the map is settled well before
# (the 10-NN accuracy of the 2-d points is within 0.02 of the defaults' on h features of real and noisy images,
# at a sixth of the time; bench/bench_tsne.py)
TSNE_ITER = dict(early_exaggeration_iter=60, n_iter=120, theta=0.8)
TRANSFORM_ITER = 100
EPS = 1e-6
_NAN = Interval(float("nan"), float("nan"), float("nan"), 0, method="none")


# ---- features: standardization ------------------------------------------------------------------------------

def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (a channel that never varies gets std 1, not 0)."""
    x = np.asarray(x, np.float64)
    mean, std = x.mean(0), x.std(0)
    return mean, np.where(std > EPS, std, 1.0)


def standardize(x: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    mean, std = stats
    return ((np.asarray(x, np.float64) - mean) / std).astype(np.float32)


# ---- the protocol: folds, out-of-fold predictions, balanced accuracy ----------------------------------------

@dataclass(frozen=True)
class Folds:
    """Fold of every point (-1: its class has fewer than `n_folds` points and is left out) and those classes."""

    fold: np.ndarray
    excluded: tuple[int, ...]
    n_folds: int = FOLDS

    @property
    def kept(self) -> np.ndarray:
        return self.fold >= 0


def fixed_folds(labels: np.ndarray, n_folds: int = FOLDS, seed: int = 0) -> Folds:
    """Stratified `n_folds`-fold assignment, the same number of folds for every set: classes with fewer than
    `n_folds` points are excluded (fold -1) rather than the protocol changed."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    excluded = tuple(int(c) for c in classes[counts < n_folds])
    fold = np.full(len(labels), -1, dtype=np.int64)
    keep = np.flatnonzero(~np.isin(labels, excluded))
    if len(np.unique(labels[keep])) >= 2:
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for f, (_, test) in enumerate(skf.split(np.zeros(len(keep)), labels[keep])):
            fold[keep[test]] = f
    else:  # one class (or none) left: nothing to classify
        excluded = tuple(int(c) for c in classes)
    return Folds(fold, excluded, n_folds)


def out_of_fold(features: np.ndarray, labels: np.ndarray, folds: Folds, model: str = "knn",
                k: int = K_NEIGHBOURS) -> np.ndarray:
    """Each kept point's class predicted by a model trained on the other folds (-1 for excluded points).
    model: 'knn' (k nearest neighbours, euclidean) or 'probe' (L2 logistic regression, C=PROBE_C)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    pred = np.full(len(labels), -1, dtype=np.int64)
    for f in range(folds.n_folds):
        test, train = folds.fold == f, (folds.fold >= 0) & (folds.fold != f)
        if not test.any() or not train.any():
            continue
        if model == "knn":
            clf = KNeighborsClassifier(n_neighbors=min(k, int(train.sum())))
        elif model == "probe":
            clf = LogisticRegression(C=PROBE_C, max_iter=100, tol=1e-3)
        else:
            raise ValueError(f"model must be 'knn' or 'probe', got {model!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(features[train], labels[train])
        pred[test] = clf.predict(features[test])
    return pred


def class_mean(labels: np.ndarray, values: np.ndarray) -> float:
    """Mean over the classes present in `labels` of the mean of `values` within each class (every class weighs
    the same)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    _, inv = np.unique(labels, return_inverse=True)
    sums = np.bincount(inv, weights=np.asarray(values, np.float64))
    return float((sums / np.bincount(inv)).mean())


def _boot(labels: np.ndarray, values: np.ndarray, n_boot: int, seed: int, per_class: bool = True,
          scale: float = 1.0) -> Interval:
    """The class mean (per_class) or the plain mean of per-point `values`, times `scale`, with a percentile
    bootstrap interval over points stratified by label (class sizes stay fixed, so the class mean is two
    bincounts per draw)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return _NAN
    _, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    data = np.stack([codes.astype(np.float64), np.asarray(values, np.float64)], 1)
    if per_class:
        def statistic(d):
            return float((np.bincount(d[:, 0].astype(np.intp), d[:, 1], len(counts)) / counts).mean() * scale)
    else:
        def statistic(d):
            return float(d[:, 1].mean() * scale)
    return bootstrap_interval(statistic, data, n_boot, seed=seed, stratify=codes)


def accuracy_interval(labels: np.ndarray, pred: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Balanced accuracy (sklearn's balanced_accuracy_score: recall averaged over the classes present, chance
    1 / number of classes) of out-of-fold predictions, points with pred -1 left out, and its bootstrap interval."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    kept = pred >= 0
    return _boot(labels[kept], pred[kept] == labels[kept], n_boot, seed)


def agreement_interval(targets: np.ndarray, pred: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Fraction of images the teacher classifies as their target t (real: its accuracy), bootstrap interval."""
    targets = np.asarray(targets)
    return _boot(targets, np.asarray(pred) == targets, n_boot, seed, per_class=False)


# ---- geometry: silhouette and within-class spread ------------------------------------------------------------

def class_geometry(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point: its silhouette (euclidean) and its mean distance to the other points of its class
    (nan for a point alone in its class)."""
    from sklearn.metrics import pairwise_distances, silhouette_samples

    labels = np.asarray(labels)
    n = len(labels)
    within = np.full(n, np.nan)
    sil = np.full(n, np.nan)
    if n < 2:
        return sil, within
    d = pairwise_distances(np.asarray(features, np.float64))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > 1:
            within[idx] = d[np.ix_(idx, idx)].sum(1) / (len(idx) - 1)
    if 2 <= len(np.unique(labels)) < n:
        sil = silhouette_samples(d, labels, metric="precomputed")
    return sil, within


def within_class_distance(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean pairwise distance of two points of the same class, averaged over classes (the diversity figure
    before it is divided by the reference's)."""
    _, within = class_geometry(features, labels)
    ok = np.isfinite(within)
    return class_mean(np.asarray(labels)[ok], within[ok]) if ok.any() else float("nan")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussian fits of two feature sets."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as the FID code does
        eps = np.eye(s_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


# ---- one set's metrics -----------------------------------------------------------------------------------------

METRICS = ("knn", "probe", "diversity", "silhouette", "knn_alt")   # per stage; "agreement" is per set


def set_metrics(features: np.ndarray, labels: np.ndarray, alt_labels: np.ndarray,
                reference_within: float | None = None, n_boot: int = N_BOOT, seed: int = 0,
                probe: bool = True) -> dict:
    """Every label-based figure of one set of standardized features at one stage.

    labels: the chosen labelling (target t / true class, or the teacher's prediction); alt_labels: the other one.
    reference_within: the reference set's `within_class_distance` (None: this set is the reference, its
    diversity is 1 by definition). Returns Intervals under METRICS, plus 'excluded' (classes left out),
    'chance' and 'within'."""
    labels, alt_labels = np.asarray(labels), np.asarray(alt_labels)
    folds = fixed_folds(labels, seed=seed)
    kept = folds.kept
    nan = _NAN
    out = {"excluded": folds.excluded, "chance": float("nan"), "knn": nan, "probe": nan, "silhouette": nan,
           "diversity": nan, "within": float("nan")}
    if kept.any():
        n_cls = len(np.unique(labels[kept]))
        out["chance"] = 1.0 / n_cls
        out["knn"] = accuracy_interval(labels, out_of_fold(features, labels, folds, "knn"), n_boot, seed)
        if probe:
            out["probe"] = accuracy_interval(labels, out_of_fold(features, labels, folds, "probe"), n_boot, seed)
        sil, within = class_geometry(features[kept], labels[kept])
        y = labels[kept]
        if np.isfinite(sil).all():
            out["silhouette"] = _boot(y, sil, n_boot, seed, per_class=False)
        out["within"] = class_mean(y, within)
        ref = out["within"] if reference_within is None else reference_within
        if ref and math.isfinite(ref) and ref > 0:
            out["diversity"] = _boot(y, within, n_boot, seed, scale=1.0 / ref)
    alt_folds = fixed_folds(alt_labels, seed=seed)
    out["knn_alt"] = (accuracy_interval(alt_labels, out_of_fold(features, alt_labels, alt_folds, "knn"), n_boot,
                                        seed) if alt_folds.kept.any() else nan)
    return out


# ---- sampling: equal n from matched windows of rounds ----------------------------------------------------------

_WINDOW = re.compile(r"^(auto|all|last:(\d+))$")


def parse_window(text: str) -> str:
    """'auto' (the most recent rounds that hold n images), 'all', or 'last:K' (the last K rounds)."""
    text = str(text).strip()
    m = _WINDOW.match(text)
    if not m or (m.group(2) is not None and int(m.group(2)) < 1):
        raise IfheError(f"window {text!r}: expected auto, all or last:K with K >= 1")
    return text


def window_indices(rounds: np.ndarray, window: str, n: int) -> tuple[np.ndarray, str]:
    """Indices of the images in `window` of a bank whose images were made in `rounds`, and a description.
    auto: the smallest number K of most recent rounds that holds >= n images (the whole bank if it is smaller)."""
    rounds = np.asarray(rounds)
    window = parse_window(window)
    distinct = np.unique(rounds)
    if len(rounds) == 0:
        return np.zeros(0, np.int64), "empty"
    if window == "all":
        k = len(distinct)
    elif window == "auto":
        per_round = np.array([np.count_nonzero(rounds == r) for r in distinct])
        cum = np.cumsum(per_round[::-1])
        k = int(np.searchsorted(cum, n) + 1) if cum[-1] >= n else len(distinct)
    else:
        k = min(int(window.split(":")[1]), len(distinct))
    chosen = distinct[len(distinct) - k:]
    idx = np.flatnonzero(np.isin(rounds, chosen))
    lo, hi = int(chosen[0]), int(chosen[-1])
    span = f"round {lo}" if lo == hi else f"rounds {lo}–{hi}"
    return idx, f"{span} (last {k} of {len(distinct)}; {len(idx)} of {len(rounds)} images)"


def draw(idx: np.ndarray, n: int, seed) -> np.ndarray:
    """n of `idx` without replacement (all of them if fewer), in their original order."""
    idx = np.asarray(idx)
    if len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def round_windows(rounds: np.ndarray, n_windows: int = N_ROUND_WINDOWS) -> list[np.ndarray]:
    """A bank's images in round order, cut into `n_windows` consecutive parts of (nearly) equal image count."""
    order = np.argsort(np.asarray(rounds), kind="stable")
    return [w for w in np.array_split(order, n_windows) if len(w)]


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
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    n, d = features.shape
    pca = PCA(n_components=min(PCA_DIMS, d, n), random_state=seed).fit(features)
    perplexity = min(perplexity, max(2.0, (n - 1) / 3.5))
    emb = TSNE(perplexity=perplexity, metric="euclidean", neighbors="exact", negative_gradient_method="bh",
               n_jobs=n_jobs, random_state=seed, verbose=False, **TSNE_ITER).fit(pca.transform(features))
    return TsneMap(pca, emb)


# ---- the report ------------------------------------------------------------------------------------------------

@dataclass
class ImageSet:
    """One set to compare: uint8 images (N, 3, H, W), their labels (target t of synthesized images, true class
    of real ones), the round each was made in (None: real images, or a set without rounds) and provenance."""

    name: str
    images: object                        # torch.Tensor uint8
    labels: np.ndarray
    rounds: np.ndarray | None = None
    source: str = ""                      # where it came from (bank path)
    head: str = ""                        # how its h was trained (bank provenance)
    h_updates: np.ndarray | None = None   # h's optimizer updates before each image was made (-1: not recorded)


@dataclass
class Features:
    """What a feature extractor returns for a batch of images: features per stage, prediction, confidence."""

    features: dict[str, np.ndarray]
    pred: np.ndarray
    confidence: np.ndarray


@dataclass
class SetInfo:
    name: str
    n: int
    size: int                             # images in the whole set
    window: str                           # which images were drawn from
    source: str = ""
    head: str = ""


@dataclass
class FeatureReport:
    stages: tuple[str, ...]
    labels: str                           # target | predicted
    n: int                                # images per set
    sets: list[SetInfo]
    metrics: object                       # DataFrame: one row per (stage, set), intervals as est/lo/hi columns
    points: object                        # DataFrame: stage, map (shared|own), set, x, y, label, pred, conf, index
    rounds: object                        # DataFrame: stage, set, window, round_lo, round_hi, round, n, metrics
    fitted_on: str                        # real | synthesized
    notes: list[str] = field(default_factory=list)
    images: dict = field(default_factory=dict)   # set name -> the n sampled uint8 images (points' index)
    classes: tuple[str, ...] = CIFAR10_CLASSES
    teacher: str = ""
    h_stages: tuple[str, ...] = ()
    n_boot: int = N_BOOT
    round_n: int = 0                      # images per window of the metric-vs-round curve

    @property
    def set_names(self) -> list[str]:
        return [s.name for s in self.sets]

    def stage_label(self, stage: str) -> str:
        return f"h input ({'+'.join(self.h_stages)})" if stage == H_STAGE else stage


def _interval_columns(name: str, iv: Interval) -> dict:
    return {name: iv.estimate, f"{name}_lo": iv.low, f"{name}_hi": iv.high}


@dataclass
class _Extracted:
    """Features of the images `index` (sorted, unique) of one set; `take` looks rows up by set index."""

    index: np.ndarray
    f: Features

    def take(self, idx: np.ndarray) -> Features:
        rows = np.searchsorted(self.index, idx)
        return Features({s: v[rows] for s, v in self.f.features.items()}, self.f.pred[rows],
                        self.f.confidence[rows])


def _extract(featurize, images, idx_lists) -> _Extracted:
    index = np.unique(np.concatenate([np.asarray(i, np.int64) for i in idx_lists]))
    return _Extracted(index, featurize(images[index]))


def equal_n(sets: list[ImageSet], real: ImageSet | None, n: int, window: str) -> tuple[int, str]:
    """The n every set is compared at: `n`, or the smallest window's size (real: half its images, the other
    half gives the floor), with a note saying which set set it."""
    limits = {s.name: len(window_indices(_rounds(s), window, n)[0]) for s in sets}
    if real is not None:
        limits["real"] = len(real.labels) // 2
    n_eff = int(min([n] + list(limits.values())))
    if n_eff >= n:
        return n_eff, ""
    who = min(limits, key=limits.get)
    why = "half the real images (the other half gives the floor)" if who == "real" else f"{who}'s window"
    return n_eff, f"n = {n_eff} per set, not {n}: {why} holds {limits[who]}"


def _h_updates_text(s: ImageSet, idx: np.ndarray) -> str:
    """'; h had 0–40 updates before them' for the images `idx` of a set that records it."""
    if s.h_updates is None or not len(idx):
        return ""
    u = np.asarray(s.h_updates)[idx]
    if (u < 0).any() or not s.head or "alpha = 0" in s.head:
        return ""
    lo, hi = int(u.min()), int(u.max())
    return f"; h had {lo} updates before them" if lo == hi else f"; h had {lo}–{hi} updates before them"


def _rounds(s: ImageSet) -> np.ndarray:
    return np.asarray(s.rounds) if s.rounds is not None else np.zeros(len(s.labels), np.int64)


def compute_report(featurize: Callable[[object], Features], sets: list[ImageSet], real: ImageSet | None,
                   stages: tuple[str, ...], labels: str = "target", n: int = 1000, window: str = "auto",
                   n_boot: int = N_BOOT, seed: int = 0, n_round_windows: int = N_ROUND_WINDOWS,
                   maps: bool = True, classes: tuple[str, ...] | None = None, teacher: str = "",
                   h_stages: tuple[str, ...] = (), progress: Callable[[str], None] | None = None,
                   n_jobs: int = 1) -> FeatureReport:
    """Sample every set at equal n from its window, extract features once per set (`featurize(uint8 images)`
    returns Features with every stage in `stages`), and compute the metrics with intervals, the metric-vs-round
    table and both kinds of map for every stage."""
    import pandas as pd

    say = progress or (lambda _msg: None)
    if labels not in LABELINGS:
        raise IfheError(f"labels must be one of {', '.join(LABELINGS)}, got {labels!r}")
    window = parse_window(window)
    if not sets and real is None:
        raise IfheError("no image sets to compare")
    if n_round_windows < 0:
        raise IfheError(f"n_round_windows must be >= 0, got {n_round_windows}")
    names = [s.name for s in sets]
    if len(set(names)) != len(names) or "real" in names:
        raise IfheError(f"set names must be distinct and not 'real': {names}")
    by_name = {s.name: s for s in sets}

    # -- equal n from matched windows
    n_eff, note = equal_n(sets, real, n, window)
    notes = [note] if note else []
    if n_eff < 2:
        raise IfheError(f"too few images to compare (n = {n_eff})")
    sample, infos = {}, []
    for i, s in enumerate(sets):
        idx, desc = window_indices(_rounds(s), window, n_eff)
        sample[s.name] = draw(idx, n_eff, [seed, i])
        desc += _h_updates_text(s, sample[s.name])
        infos.append(SetInfo(s.name, len(sample[s.name]), len(s.labels),
                             desc if s.rounds is not None else f"no rounds recorded: drawn from all {len(idx)}",
                             s.source, s.head))

    # -- windows of the metric-vs-round curve: equal image count within a bank, equal n across banks; as many
    #    windows (up to n_round_windows) as the smallest bank fills with MIN_ROUND_WINDOW images each
    banked = [s for s in sets if s.rounds is not None]
    k_win = min([n_round_windows] + [len(s.labels) // MIN_ROUND_WINDOW for s in banked]) if banked else 0
    if banked and n_round_windows > 0 and k_win < 2:
        notes.append(f"no metric-vs-round curve: the smallest bank holds fewer than {2 * MIN_ROUND_WINDOW} images")
    wins = {s.name: round_windows(_rounds(s), k_win) for s in banked} if k_win >= 2 else {}
    round_n = min([len(w) for ws in wins.values() for w in ws] + [n_eff]) if wins else 0
    win_idx = {name: [draw(w, round_n, [seed, 100 + i, j]) for j, w in enumerate(ws)]
               for i, (name, ws) in enumerate(wins.items())}

    # -- features: one extraction per set, of every image any part of the report needs
    ext: dict[str, _Extracted] = {}
    for s in sets:
        say(f"features of {s.name}")
        ext[s.name] = _extract(featurize, s.images, [sample[s.name]] + win_idx.get(s.name, []))
    order = list(names)
    if real is not None:
        perm = np.random.default_rng([seed, 999]).permutation(len(real.labels))
        real_a, real_b = perm[:n_eff], perm[n_eff:2 * n_eff]
        say("features of real images")
        ext["real"] = _extract(featurize, real.images, [real_a, real_b])
        sample["real"] = real_a
        by_name["real"] = real
        order.insert(0, "real")
        infos.insert(0, SetInfo("real", n_eff, len(real.labels),
                                f"random test images (another {n_eff} for the floor)", real.source))
    # the analysis on n_jobs threads (BLAS, OpenMP, openTSNE): with a job on the other core, two threads made
    # it ten times slower than one (spinning threads; bench/bench_tsne.py)
    with threadpool_limits(limits=n_jobs):
        sampled = {nm: ext[nm].take(sample[nm]) for nm in order}
        targets = {nm: np.asarray(by_name[nm].labels)[sample[nm]] for nm in order}

        def labelled(nm_targets, f: Features) -> tuple[np.ndarray, np.ndarray]:
            """(chosen labels, other labels) of a sample."""
            return (nm_targets, f.pred) if labels == "target" else (f.pred, nm_targets)

        agreement = {nm: agreement_interval(targets[nm], sampled[nm].pred, n_boot, seed) for nm in order}
        windows = [("real", -1, real_a[:round_n])] if real is not None and win_idx else []
        windows += [(nm, j, idx) for nm, idxs in win_idx.items() for j, idx in enumerate(idxs)]
        win_data = []   # per window: features, targets, chosen labels, folds, agreement (the same at every stage)
        for nm, j, idx in windows:
            f = ext[nm].take(idx)
            t = np.asarray(by_name[nm].labels)[idx]
            y = labelled(t, f)[0]
            win_data.append((f, y, fixed_folds(y, seed=seed), agreement_interval(t, f.pred, n_boot, seed)))

        metric_rows, point_rows, round_rows = [], [], []
        for stage in stages:
            say(f"metrics at {stage}")
            ref = [sampled["real"].features[stage]] if real is not None else \
                [sampled[nm].features[stage] for nm in order]
            stats = channel_stats(np.concatenate(ref))
            z = {nm: standardize(sampled[nm].features[stage], stats) for nm in order}
            lab = {nm: labelled(targets[nm], sampled[nm]) for nm in order}
            floor = float("nan")
            if real is not None:
                floor = frechet_distance(standardize(ext["real"].take(real_b).features[stage], stats), z["real"])
                ref_within = within_class_distance(z["real"], lab["real"][0])
            else:  # diversity relative to the union of the sets
                ref_within = within_class_distance(np.concatenate([z[nm] for nm in order]),
                                                   np.concatenate([lab[nm][0] for nm in order]))
            for nm in order:
                m = set_metrics(z[nm], lab[nm][0], lab[nm][1], ref_within, n_boot, seed)
                row = {"stage": stage, "set": nm, "labels": labels, "n": len(z[nm]), "chance": m["chance"]}
                for key in METRICS:
                    row |= _interval_columns(key, m[key])
                row |= _interval_columns("agreement", agreement[nm])
                row["frechet"] = frechet_distance(z[nm], z["real"]) if real is not None and nm != "real" else np.nan
                row["frechet_floor"] = floor
                row["excluded"] = " ".join(str(c) for c in m["excluded"])
                metric_rows.append(row)

            # -- metric vs round: same standardization and fold protocol, round_n images in every window
            if windows:
                say(f"metric vs round at {stage}")
                for (nm, j, idx), (f, y, folds, agree) in zip(windows, win_data):
                    knn = accuracy_interval(y, out_of_fold(standardize(f.features[stage], stats), y, folds), n_boot,
                                            seed) if folds.kept.any() else _NAN
                    r = _rounds(by_name[nm])[idx] if nm != "real" else None
                    round_rows.append({"stage": stage, "set": nm, "window": j, "n": len(y),
                                       "round_lo": np.nan if r is None else int(r.min()),
                                       "round_hi": np.nan if r is None else int(r.max()),
                                       "round": np.nan if r is None else float(r.mean()),
                                       **_interval_columns("knn", knn), **_interval_columns("agreement", agree)})

            # -- maps: shared (fitted on real, the others placed in) and one per set (fitted on that set alone)
            if maps:
                say(f"t-SNE maps at {stage}")
                if real is not None:
                    shared = fit_map(z["real"], seed, n_jobs=n_jobs)
                    shared_xy = {"real": shared.fitted_points} | {nm: shared.transform(z[nm]) for nm in names}
                    own_xy = {"real": shared_xy["real"]}   # real fitted alone is the shared map
                else:
                    pts = fit_map(np.concatenate([z[nm] for nm in order]), seed, n_jobs=n_jobs).fitted_points
                    bounds = np.cumsum([0] + [len(z[nm]) for nm in order])
                    shared_xy = {nm: pts[bounds[i]:bounds[i + 1]] for i, nm in enumerate(order)}
                    own_xy = {}
                for nm in order:
                    if nm not in own_xy:
                        own_xy[nm] = (fit_map(z[nm], seed, n_jobs=n_jobs).fitted_points if len(z[nm]) > 3
                                      else np.zeros((len(z[nm]), 2)))
                for kind, xy in (("shared", shared_xy), ("own", own_xy)):
                    for nm in order:
                        f = sampled[nm]
                        point_rows += [(stage, kind, nm, float(xy[nm][i, 0]), float(xy[nm][i, 1]), int(targets[nm][i]),
                                        int(f.pred[i]), float(f.confidence[i]), i) for i in range(len(f.pred))]

    if real is None:
        notes.append("no real images: features standardized by the union of the sets, diversity relative to the "
                     "union, no Fréchet distance, and the shared map is fitted on the union of the sets")
    return FeatureReport(
        tuple(stages), labels, n_eff, infos, pd.DataFrame(metric_rows),
        pd.DataFrame(point_rows, columns=["stage", "map", "set", "x", "y", "label", "pred", "confidence", "index"]),
        pd.DataFrame(round_rows), "real" if real is not None else "synthesized", notes,
        {nm: by_name[nm].images[sample[nm]] for nm in order}, tuple(classes or CIFAR10_CLASSES), teacher,
        tuple(h_stages), n_boot, round_n)


# ---- tables ----------------------------------------------------------------------------------------------------

def _iv(row, key: str, digits: int = 3) -> str:
    return Interval(row[key], row[f"{key}_lo"], row[f"{key}_hi"], int(row["n"])).text(digits)


def metrics_table(report: FeatureReport, stage: str | None = None):
    """The metrics as display strings ('0.812 [0.787, 0.836]'), one row per (stage, set)."""
    import pandas as pd

    m = report.metrics if stage is None else report.metrics[report.metrics["stage"] == stage]
    lab, alt = ("t", "pred.") if report.labels == "target" else ("pred.", "t")
    rows = []
    for _, r in m.iterrows():
        fd = "–" if not np.isfinite(r["frechet"]) else f"{r['frechet']:.1f}"
        floor = "–" if not np.isfinite(r["frechet_floor"]) else f"{r['frechet_floor']:.1f}"
        rows.append({"stage": report.stage_label(r["stage"]), "set": r["set"], "n": int(r["n"]),
                     f"k-NN bal. acc ({lab})": _iv(r, "knn"), f"probe bal. acc ({lab})": _iv(r, "probe"),
                     "chance": "–" if not np.isfinite(r["chance"]) else f"{r['chance']:.2f}",
                     "agreement pred = t": _iv(r, "agreement"), "diversity": _iv(r, "diversity"),
                     "silhouette": _iv(r, "silhouette"), f"k-NN bal. acc ({alt})": _iv(r, "knn_alt"),
                     "Fréchet to real": fd, "real-vs-real floor": floor,
                     "classes left out": r["excluded"] or "–"})
    return pd.DataFrame(rows)


def metrics_markdown(report: FeatureReport) -> str:
    t = metrics_table(report)
    if t.empty:
        return "(no metrics)\n"
    cols = list(t.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in t.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def report_header(report: FeatureReport) -> str:
    """What made the figures: teacher, labels, n, protocol, and every set's source, window and h provenance."""
    lab = ("synthesized images labelled by their target class t, real ones by their true class"
           if report.labels == "target" else "every image labelled by the teacher's predicted class")
    lines = [f"Teacher: {report.teacher}." if report.teacher else "Teacher: not named.",
             f"Stages: {', '.join(report.stage_label(s) for s in report.stages)}; features standardized by the "
             f"channel mean and std of {'the real set' if report.fitted_on == 'real' else 'the union of the sets'}.",
             f"Labels: {lab}. n = {report.n} images per set.",
             f"Protocol: {FOLDS} stratified folds fixed per set, balanced accuracy (chance 1/classes), k-NN "
             f"k={K_NEIGHBOURS}, linear probe L2 logistic regression (C={PROBE_C}); 95% percentile-bootstrap "
             f"intervals over out-of-fold points "
             f"({report.n_boot} draws, stratified by label). Diversity: mean within-class pairwise distance "
             f"relative to {'real images' if report.fitted_on == 'real' else 'the union'} (1 = as spread as "
             f"those, 0 = collapsed). Fréchet distance to real set A next to the real-vs-real floor "
             f"(set B vs A, same n).",
             "", "Sets:"]
    for s in report.sets:
        extra = f"; h: {s.head}" if s.head else ""
        src = f" `{s.source}`" if s.source else ""
        lines.append(f"- **{s.name}**{src}: {s.n} of {s.size} images, {s.window}{extra}")
    for note in report.notes:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


# ---- figures (plotly) ------------------------------------------------------------------------------------------

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
SET_COLOURS = {"real": "#444444"}
_SET_CYCLE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def class_name(classes, c: int) -> str:
    return classes[c] if 0 <= c < len(classes) else str(c)


def set_colour(names: list[str], name: str) -> str:
    if name in SET_COLOURS:
        return SET_COLOURS[name]
    others = [x for x in names if x not in SET_COLOURS]
    return _SET_CYCLE[others.index(name) % len(_SET_CYCLE)]


def plot_map(report: FeatureReport, stage: str, kind: str = "shared", colour: str = "target", cols: int = 2):
    """Small multiples, one panel per set: kind 'shared' (the real-fitted map, shared axes) or 'own' (each set
    fitted alone, the paper's view). colour 'target' (target t; real: true class) or 'predicted' (the teacher's
    prediction).
    customdata per point: [index in its set, label, confidence, set number, prediction]."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = report.set_names
    pts = report.points[(report.points["stage"] == stage) & (report.points["map"] == kind)]
    cols = max(1, min(cols, len(names)))
    rows = (len(names) + cols - 1) // cols
    shared = kind == "shared"
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, shared_xaxes=shared, shared_yaxes=shared,
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    if colour not in LABELINGS:
        raise ValueError(f"colour must be one of {LABELINGS}, got {colour!r}")
    key = "label" if colour == "target" else "pred"
    n_cls = len(report.classes)
    for i, name in enumerate(names):
        sub = pts[pts["set"] == name]
        for c in range(n_cls):
            s = sub[sub[key] == c]
            if s.empty:
                continue
            fig.add_trace(go.Scattergl(
                x=s["x"], y=s["y"], mode="markers", marker=dict(size=4, color=PALETTE[c % 10], opacity=0.75),
                name=class_name(report.classes, c), legendgroup=str(c), showlegend=i == 0,
                customdata=np.stack([s["index"], s["label"], s["confidence"], np.full(len(s), i), s["pred"]], 1),
                hovertemplate=(f"<b>{name}</b> #%{{customdata[0]}}<br>label %{{customdata[1]}} · teacher "
                               "%{customdata[4]} (%{customdata[2]:.2f})<extra></extra>")),
                row=i // cols + 1, col=i % cols + 1)
    what = ("shared map, fitted on real images, others placed in" if shared and report.fitted_on == "real" else
            "shared map, fitted on the union of the sets" if shared else "each set fitted alone")
    by = "target t (real: true class)" if key == "label" else "teacher's prediction"
    fig.update_layout(height=300 * rows + 70, margin=dict(l=10, r=10, t=60, b=10),
                      legend_title=f"colour: {by}",
                      title=f"{report.stage_label(stage)}: {what}", title_font_size=13)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def plot_rounds(report: FeatureReport, stage: str):
    """Balanced k-NN accuracy and agreement of prediction with t against round, one line per bank (error bars:
    95% intervals), real images as a dashed line; every window holds `report.round_n` images."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    lab = "t" if report.labels == "target" else "pred."
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"balanced k-NN accuracy ({lab})", "agreement pred = t"])
    r = report.rounds
    if r is None or len(r) == 0:
        return fig
    r = r[r["stage"] == stage]
    names = report.set_names
    for col, key in ((1, "knn"), (2, "agreement")):
        for name in names:
            s = r[r["set"] == name]
            if s.empty:
                continue
            colour = set_colour(names, name)
            if name == "real":
                v = float(s[key].iloc[0])
                fig.add_hline(y=v, line_dash="dash", line_color=colour, row=1, col=col,
                              annotation_text="real" if col == 1 else None)
                continue
            fig.add_trace(go.Scatter(
                x=s["round"], y=s[key], mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                line=dict(color=colour),
                error_y=dict(type="data", symmetric=False, array=s[f"{key}_hi"] - s[key],
                             arrayminus=s[key] - s[f"{key}_lo"]),
                customdata=np.stack([s["round_lo"], s["round_hi"]], 1),
                hovertemplate=(f"<b>{name}</b> rounds %{{customdata[0]}}–%{{customdata[1]}}: "
                               "%{y:.3f}<extra></extra>")),
                row=1, col=col)
    fig.update_xaxes(title_text="round (mean of the window)")
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=60, b=10),
                      title=f"{report.stage_label(stage)}: metrics against round ({report.round_n} images a window)",
                      title_font_size=13)
    return fig
