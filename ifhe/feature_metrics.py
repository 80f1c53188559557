"""Heterogeneity metrics of intermediate features: pure functions of arrays (no teacher, no files, no plots).
The protocol (DESIGN.md, "Measuring intermediate features"; `ifhe.feature_report` applies it to image sets):

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
- Samples: every set at the same n, drawn from a window of rounds matched by the share of each run (`window_indices`:
  by default the last quarter of every run's rounds, whatever number of rounds its method made in the budget;
  `draw`); the metric-vs-round curve cuts each bank into windows of equal shares of its run (`share_windows`).
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import pairwise_distances, silhouette_samples
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from .errors import IfheError
from .stats import Interval, bootstrap_interval

FOLDS = 5
K_NEIGHBOURS = 10
PROBE_C = 0.1                 # L2 strength of the linear probe (standardized features)
N_BOOT = 200
N_ROUND_WINDOWS = 5
EPS = 1e-6
NAN_INTERVAL = Interval(float("nan"), float("nan"), float("nan"), 0, method="none")


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
        return NAN_INTERVAL
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
    nan = NAN_INTERVAL
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

_WINDOW = re.compile(r"^(auto|all|last:(\d+)|share:(\d*\.?\d+)(?:-(\d*\.?\d+))?)$")
DEFAULT_WINDOW = "share:0.25"     # the last quarter of every run's rounds: the same share of each run


def parse_window(text: str) -> str:
    """'share:F' (the last fraction F of each run's rounds) or 'share:A-B' (from fraction A to B of them): windows
    matched by the share of the run; 'all'; 'auto' (the most recent rounds that hold n images) or 'last:K' (the
    last K rounds), matched by image count or round number instead."""
    text = str(text).strip()
    m = _WINDOW.match(text)
    bad = not m or (m.group(2) is not None and int(m.group(2)) < 1)
    if m and m.group(3) is not None:
        lo, hi = share_bounds(text)
        bad = not 0 <= lo < hi <= 1
    if bad:
        raise IfheError(f"window {text!r}: expected share:F or share:A-B (fractions of the run, 0 <= A < B <= 1), "
                        f"all, auto or last:K with K >= 1")
    return text


def share_bounds(window: str) -> tuple[float, float]:
    """(A, B) of 'share:A-B'; 'share:F' is the last F: (1 - F, 1)."""
    a, _, b = window.split(":", 1)[1].partition("-")
    return (float(a), float(b)) if b else (1.0 - float(a), 1.0)


def run_rounds(rounds: np.ndarray, total_rounds: int | None = None) -> int:
    """The rounds of the run that made a bank: as recorded, else the last round holding images + 1."""
    rounds = np.asarray(rounds)
    return int(total_rounds) if total_rounds else (int(rounds.max()) + 1 if len(rounds) else 0)


def share_rounds(lo: float, hi: float, total: int) -> tuple[int, int]:
    """Rounds [first, last) that make up the fraction lo..hi of a run of `total` rounds (at least one round)."""
    first = min(int(np.floor(lo * total + 0.5)), max(total - 1, 0))
    last = max(int(np.floor(hi * total + 0.5)), first + 1)
    return first, last


def rounds_span(rounds: np.ndarray, total: int | None = None) -> str:
    """'rounds 33–44 of 45' (or 'round 3 of 45') for the rounds of some images."""
    rounds = np.asarray(rounds)
    if not len(rounds):
        return "no images"
    lo, hi = int(rounds.min()), int(rounds.max())
    span = f"round {lo}" if lo == hi else f"rounds {lo}–{hi}"
    return span + (f" of {total}" if total else "")


def window_indices(rounds: np.ndarray, window: str, n: int, total_rounds: int | None = None) -> tuple[np.ndarray, str]:
    """Indices of the images in `window` of a bank whose images were made in `rounds` (of a run of `total_rounds`
    rounds, default the last recorded + 1), and a description.
    share:A-B: the images of rounds from fraction A to B of the run; auto: the smallest number K of most recent
    rounds that holds >= n images (the whole bank if it is smaller)."""
    rounds = np.asarray(rounds)
    window = parse_window(window)
    if len(rounds) == 0:
        return np.zeros(0, np.int64), "empty"
    total = run_rounds(rounds, total_rounds)
    if window.startswith("share:"):
        lo, hi = share_bounds(window)
        first, last = share_rounds(lo, hi, total)
        idx = np.flatnonzero((rounds >= first) & (rounds < last))
        what = f"the last {100 * (1 - lo):g}%" if hi == 1 else f"{100 * lo:g}–{100 * hi:g}%"
        return idx, (f"{rounds_span(np.arange(first, last), total)} ({what} of the run's rounds; {len(idx)} of "
                     f"{len(rounds)} images)")
    distinct = np.unique(rounds)
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
    return idx, f"{rounds_span(chosen)} (last {k} of {len(distinct)}; {len(idx)} of {len(rounds)} images)"


def window_rule(window: str) -> str:
    """The window rule in words, for the report's header."""
    window = parse_window(window)
    if window.startswith("share:"):
        lo, hi = share_bounds(window)
        part = f"the last {100 * (1 - lo):g}%" if hi == 1 else f"{100 * lo:g}% to {100 * hi:g}%"
        return f"{part} of each run's rounds (windows matched by the share of the run)"
    if window.startswith("last:"):
        return f"the last {window.split(':')[1]} rounds of each bank (matched by round count, not by share)"
    return {"all": "every round of each run", "auto": "the most recent rounds of each bank that hold n images "
            "(matched by image count, not by the share of the run)"}[window]


def draw(idx: np.ndarray, n: int, seed) -> np.ndarray:
    """n of `idx` without replacement (all of them if fewer), in their original order."""
    idx = np.asarray(idx)
    if len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def share_windows(rounds: np.ndarray, n_windows: int = N_ROUND_WINDOWS,
                  total_rounds: int | None = None) -> list[tuple[np.ndarray, float, float]]:
    """A bank cut into `n_windows` consecutive windows of equal shares of its run's rounds: (indices, share from,
    share to) each; a window without images is left out."""
    rounds = np.asarray(rounds)
    total = run_rounds(rounds, total_rounds)
    out = []
    for j in range(n_windows):
        lo, hi = j / n_windows, (j + 1) / n_windows
        first, last = int(np.floor(lo * total + 0.5)), int(np.floor(hi * total + 0.5))
        idx = np.flatnonzero((rounds >= first) & (rounds < last))
        if len(idx):
            out.append((idx, lo, hi))
    return out
