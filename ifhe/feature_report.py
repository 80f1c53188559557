"""The feature report: image sets compared on a teacher's intermediate features, measured where L_H acts.

`compute_report` takes the feature extractor as an argument (`ifhe.features` gives the teacher's, cached); the
metrics are `ifhe.feature_metrics`', the t-SNE maps and figures `ifhe.embedding`'s. What it does (DESIGN.md,
"Measuring intermediate features"):

- Stages. "h" is h's input: the instance-mean pooled outputs of the stages h reads (the run's `synth.h_stages`,
  block1..block3 by default), concatenated; any stage of the teacher can be added (`teacher.stages`).
- Labels. A synthesized image is labelled by its target class t, a real one by its true class (`labels="target"`,
  the default); `labels="predicted"` labels every point by the teacher's prediction instead. The other labelling's
  balanced k-NN accuracy is kept as a secondary column, and the agreement of prediction with t is reported per set.
- Samples. Every set, real included, is compared at the same n, drawn from a window of rounds (default: the most
  recent rounds that hold n images). Real images are drawn twice, disjointly: set A is "real", set B gives the
  real-vs-real floor of the Fréchet distance at the same n.
- Metric vs round: each bank is cut into consecutive windows of equal image count (in round order), each window
  subsampled to the same n as every other bank's windows; balanced k-NN accuracy and agreement per window.
- Maps: the shared map and one map per set, at every stage (`embedding.fit_map`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from .data import CIFAR10_CLASSES
from .embedding import fit_map
from .errors import IfheError
from .heads import H_STAGE
from .feature_metrics import (FOLDS, K_NEIGHBOURS, LABELINGS, METRICS, N_BOOT, N_ROUND_WINDOWS, NAN_INTERVAL,
                              PROBE_C, accuracy_interval, agreement_interval, channel_stats, draw, fixed_folds,
                              frechet_distance, out_of_fold, parse_window, round_windows, set_metrics, standardize,
                              window_indices, within_class_distance)
from .stats import Interval

MIN_ROUND_WINDOW = 50         # fewer images per window: no metric-vs-round curve


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
    say = progress or (lambda _msg: None)
    window = _check(sets, real, labels, window, n_round_windows)
    n_eff, note = equal_n(sets, real, n, window)
    notes = [note] if note else []
    if n_eff < 2:
        raise IfheError(f"too few images to compare (n = {n_eff})")
    sample, infos = _samples(sets, window, n_eff, seed)
    win_idx, round_n = _window_samples(sets, n_round_windows, n_eff, seed, notes)
    m = _extract_sets(featurize, sets, real, sample, win_idx, n_eff, seed, labels, say, infos)
    # the analysis on n_jobs threads (BLAS, OpenMP, openTSNE): with a job on the other core, two threads made
    # it ten times slower than one (spinning threads; bench/bench_tsne.py)
    with threadpool_limits(limits=n_jobs):
        m.measure_samples(n_boot, seed)
        windows = _windows(m, win_idx, round_n, n_boot, seed)
        metric_rows, point_rows, round_rows = [], [], []
        for stage in stages:
            say(f"metrics at {stage}")
            stats, z, rows = _stage_metrics(m, stage, n_boot, seed)
            metric_rows += rows
            if windows:
                say(f"metric vs round at {stage}")
                round_rows += _stage_rounds(m, stage, stats, windows, n_boot, seed)
            if maps:
                say(f"t-SNE maps at {stage}")
                point_rows += _stage_maps(m, stage, z, seed, n_jobs)
    if real is None:
        notes.append("no real images: features standardized by the union of the sets, diversity relative to the "
                     "union, no Fréchet distance, and the shared map is fitted on the union of the sets")
    return FeatureReport(
        tuple(stages), labels, n_eff, infos, pd.DataFrame(metric_rows),
        pd.DataFrame(point_rows, columns=["stage", "map", "set", "x", "y", "label", "pred", "confidence", "index"]),
        pd.DataFrame(round_rows), "real" if real is not None else "synthesized", notes,
        {nm: m.by_name[nm].images[m.sample[nm]] for nm in m.order}, tuple(classes or CIFAR10_CLASSES), teacher,
        tuple(h_stages), n_boot, round_n)


def _check(sets: list[ImageSet], real: ImageSet | None, labels: str, window: str, n_round_windows: int) -> str:
    """The report's arguments checked; the window parsed."""
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
    return window


def _samples(sets: list[ImageSet], window: str, n_eff: int, seed: int) -> tuple[dict, list[SetInfo]]:
    """Equal n from matched windows: each set's sampled indices and what was drawn, in words."""
    sample, infos = {}, []
    for i, s in enumerate(sets):
        idx, desc = window_indices(_rounds(s), window, n_eff)
        sample[s.name] = draw(idx, n_eff, [seed, i])
        desc += _h_updates_text(s, sample[s.name])
        infos.append(SetInfo(s.name, len(sample[s.name]), len(s.labels),
                             desc if s.rounds is not None else f"no rounds recorded: drawn from all {len(idx)}",
                             s.source, s.head))
    return sample, infos


def _window_samples(sets: list[ImageSet], n_round_windows: int, n_eff: int, seed: int,
                    notes: list[str]) -> tuple[dict[str, list[np.ndarray]], int]:
    """Windows of the metric-vs-round curve: equal image count within a bank, equal n across banks; as many
    windows (up to n_round_windows) as the smallest bank fills with MIN_ROUND_WINDOW images each."""
    banked = [s for s in sets if s.rounds is not None]
    k_win = min([n_round_windows] + [len(s.labels) // MIN_ROUND_WINDOW for s in banked]) if banked else 0
    if banked and n_round_windows > 0 and k_win < 2:
        notes.append(f"no metric-vs-round curve: the smallest bank holds fewer than {2 * MIN_ROUND_WINDOW} images")
    wins = {s.name: round_windows(_rounds(s), k_win) for s in banked} if k_win >= 2 else {}
    round_n = min([len(w) for ws in wins.values() for w in ws] + [n_eff]) if wins else 0
    win_idx = {name: [draw(w, round_n, [seed, 100 + i, j]) for j, w in enumerate(ws)]
               for i, (name, ws) in enumerate(wins.items())}
    return win_idx, round_n


@dataclass
class _Measured:
    """The sets of one report, their samples and features: what every stage's measurement reads."""

    labels: str
    order: list[str]                      # "real" first when there are real images, then the sets
    names: list[str]                      # the synthesized sets
    by_name: dict                         # name -> ImageSet
    sample: dict                          # name -> sampled indices
    ext: dict                             # name -> _Extracted
    real_a: np.ndarray | None = None
    real_b: np.ndarray | None = None
    sampled: dict = field(default_factory=dict)     # name -> Features of the sample
    targets: dict = field(default_factory=dict)     # name -> target t (real: true class) of the sample
    agreement: dict = field(default_factory=dict)   # name -> Interval of prediction = t

    @property
    def has_real(self) -> bool:
        return self.real_a is not None

    def labelled(self, targets: np.ndarray, f: Features) -> tuple[np.ndarray, np.ndarray]:
        """(chosen labels, other labels) of a sample."""
        return (targets, f.pred) if self.labels == "target" else (f.pred, targets)

    def measure_samples(self, n_boot: int, seed: int) -> None:
        self.sampled = {nm: self.ext[nm].take(self.sample[nm]) for nm in self.order}
        self.targets = {nm: np.asarray(self.by_name[nm].labels)[self.sample[nm]] for nm in self.order}
        self.agreement = {nm: agreement_interval(self.targets[nm], self.sampled[nm].pred, n_boot, seed)
                          for nm in self.order}


def _extract_sets(featurize, sets: list[ImageSet], real: ImageSet | None, sample: dict, win_idx: dict, n_eff: int,
                  seed: int, labels: str, say, infos: list[SetInfo]) -> _Measured:
    """Features: one extraction per set, of every image any part of the report needs (real: sets A and B)."""
    names = [s.name for s in sets]
    ext: dict[str, _Extracted] = {}
    for s in sets:
        say(f"features of {s.name}")
        ext[s.name] = _extract(featurize, s.images, [sample[s.name]] + win_idx.get(s.name, []))
    m = _Measured(labels, list(names), names, {s.name: s for s in sets}, sample, ext)
    if real is not None:
        perm = np.random.default_rng([seed, 999]).permutation(len(real.labels))
        m.real_a, m.real_b = perm[:n_eff], perm[n_eff:2 * n_eff]
        say("features of real images")
        ext["real"] = _extract(featurize, real.images, [m.real_a, m.real_b])
        sample["real"] = m.real_a
        m.by_name["real"] = real
        m.order.insert(0, "real")
        infos.insert(0, SetInfo("real", n_eff, len(real.labels),
                                f"random test images (another {n_eff} for the floor)", real.source))
    return m


def _windows(m: _Measured, win_idx: dict, round_n: int, n_boot: int, seed: int) -> list[tuple]:
    """Per window of the metric-vs-round curve (real images as one window): (set, window number, indices,
    features, chosen labels, folds, agreement), the same at every stage."""
    windows = [("real", -1, m.real_a[:round_n])] if m.has_real and win_idx else []
    windows += [(nm, j, idx) for nm, idxs in win_idx.items() for j, idx in enumerate(idxs)]
    out = []
    for nm, j, idx in windows:
        f = m.ext[nm].take(idx)
        t = np.asarray(m.by_name[nm].labels)[idx]
        y = m.labelled(t, f)[0]
        out.append((nm, j, idx, f, y, fixed_folds(y, seed=seed), agreement_interval(t, f.pred, n_boot, seed)))
    return out


def _stage_metrics(m: _Measured, stage: str, n_boot: int, seed: int) -> tuple[tuple, dict, list[dict]]:
    """Every set's metrics at one stage; with the standardization and the standardized features they used."""
    ref = [m.sampled["real"].features[stage]] if m.has_real else [m.sampled[nm].features[stage] for nm in m.order]
    stats = channel_stats(np.concatenate(ref))
    z = {nm: standardize(m.sampled[nm].features[stage], stats) for nm in m.order}
    lab = {nm: m.labelled(m.targets[nm], m.sampled[nm]) for nm in m.order}
    floor = float("nan")
    if m.has_real:
        floor = frechet_distance(standardize(m.ext["real"].take(m.real_b).features[stage], stats), z["real"])
        ref_within = within_class_distance(z["real"], lab["real"][0])
    else:  # diversity relative to the union of the sets
        ref_within = within_class_distance(np.concatenate([z[nm] for nm in m.order]),
                                           np.concatenate([lab[nm][0] for nm in m.order]))
    rows = []
    for nm in m.order:
        r = set_metrics(z[nm], lab[nm][0], lab[nm][1], ref_within, n_boot, seed)
        row = {"stage": stage, "set": nm, "labels": m.labels, "n": len(z[nm]), "chance": r["chance"]}
        for key in METRICS:
            row |= _interval_columns(key, r[key])
        row |= _interval_columns("agreement", m.agreement[nm])
        row["frechet"] = frechet_distance(z[nm], z["real"]) if m.has_real and nm != "real" else np.nan
        row["frechet_floor"] = floor
        row["excluded"] = " ".join(str(c) for c in r["excluded"])
        rows.append(row)
    return stats, z, rows


def _stage_rounds(m: _Measured, stage: str, stats: tuple, windows: list[tuple], n_boot: int,
                  seed: int) -> list[dict]:
    """Metric vs round at one stage: same standardization and fold protocol, round_n images in every window."""
    rows = []
    for nm, j, idx, f, y, folds, agree in windows:
        knn = accuracy_interval(y, out_of_fold(standardize(f.features[stage], stats), y, folds), n_boot,
                                seed) if folds.kept.any() else NAN_INTERVAL
        r = _rounds(m.by_name[nm])[idx] if nm != "real" else None
        rows.append({"stage": stage, "set": nm, "window": j, "n": len(y),
                     "round_lo": np.nan if r is None else int(r.min()),
                     "round_hi": np.nan if r is None else int(r.max()),
                     "round": np.nan if r is None else float(r.mean()),
                     **_interval_columns("knn", knn), **_interval_columns("agreement", agree)})
    return rows


def _stage_maps(m: _Measured, stage: str, z: dict, seed: int, n_jobs: int) -> list[tuple]:
    """Both maps at one stage: shared (fitted on real, the others placed in) and one per set (fitted alone)."""
    if m.has_real:
        shared = fit_map(z["real"], seed, n_jobs=n_jobs)
        shared_xy = {"real": shared.fitted_points} | {nm: shared.transform(z[nm]) for nm in m.names}
        own_xy = {"real": shared_xy["real"]}   # real fitted alone is the shared map
    else:
        pts = fit_map(np.concatenate([z[nm] for nm in m.order]), seed, n_jobs=n_jobs).fitted_points
        bounds = np.cumsum([0] + [len(z[nm]) for nm in m.order])
        shared_xy = {nm: pts[bounds[i]:bounds[i + 1]] for i, nm in enumerate(m.order)}
        own_xy = {}
    for nm in m.order:
        if nm not in own_xy:
            own_xy[nm] = (fit_map(z[nm], seed, n_jobs=n_jobs).fitted_points if len(z[nm]) > 3
                          else np.zeros((len(z[nm]), 2)))
    rows = []
    for kind, xy in (("shared", shared_xy), ("own", own_xy)):
        for nm in m.order:
            f, t = m.sampled[nm], m.targets[nm]
            rows += [(stage, kind, nm, float(xy[nm][i, 0]), float(xy[nm][i, 1]), int(t[i]), int(f.pred[i]),
                      float(f.confidence[i]), i) for i in range(len(f.pred))]
    return rows


# ---- tables ----------------------------------------------------------------------------------------------------

def _iv(row, key: str, digits: int = 3) -> str:
    return Interval(row[key], row[f"{key}_lo"], row[f"{key}_hi"], int(row["n"])).text(digits)


def metrics_table(report: FeatureReport, stage: str | None = None):
    """The metrics as display strings ('0.812 [0.787, 0.836]'), one row per (stage, set)."""
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
