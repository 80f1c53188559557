"""The feature report: image sets compared on a teacher's intermediate features.

`compute_report` takes the feature extractor as an argument (`ifhe.features` gives the teacher's, cached); the
metrics are `ifhe.feature_metrics`', the t-SNE maps `ifhe.embedding`'s; the report's data, tables and figures are
`ifhe.feature_view`'s. What it does (DESIGN.md, "Measuring intermediate features"):

- Stages. The verdicts rest on a stage L_H does not read (`primary`: the teacher's penultimate layer where it has
  one); "h" is h's input, what L_H optimises directly: the instance-mean pooled outputs of the stages h reads (the
  run's `synth.h_stages`, block1..block3 by default), concatenated, shown beside it; any stage of the teacher can
  be added (`teacher.stages`).
- Labels. A synthesized image is labelled by its target class t, a real one by its true class (`labels="target"`,
  the default); `labels="predicted"` labels every point by the teacher's prediction instead. The other labelling's
  balanced k-NN accuracy is kept as a secondary column, and the agreement of prediction with t is reported per set.
- Samples. Every set, real included, is compared at the same n, drawn from windows matched by the share of each
  run (default: the last quarter of every run's rounds). Real images are drawn twice, disjointly: set A is "real",
  set B gives the real-vs-real floor of the Fréchet distance at the same n.
- Seeds. Every figure is measured per bank (intervals over images); a method with several banks (one per seed,
  `ImageSet.group` and `.seed`) gets the mean of its banks' figures with a t interval over seeds, and a claim (one
  method's metric above another's) is decided by their difference paired by seed (`ifhe.stats`).
- Metric vs share of the run: each bank is cut into windows of equal shares of its run's rounds, each subsampled
  to the same n as every other bank's windows; balanced k-NN accuracy and agreement per window.
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
from .feature_metrics import (FOLDS, K_NEIGHBOURS, METRICS, N_BOOT, N_ROUND_WINDOWS, NAN_INTERVAL, PROBE_C,
                              accuracy_interval, agreement_interval, channel_stats, draw, fixed_folds,
                              frechet_distance, out_of_fold, parse_window, rounds_span, run_rounds, set_metrics,
                              share_windows, standardize, window_indices, window_rule, within_class_distance)
from .feature_view import H_STAGE, LABELINGS, FeatureReport, Features, ImageSet, SetInfo  # noqa: F401 (ImageSet: callers')
from .methods import METHOD_LABELS
from .stats import Interval, mean_interval, paired_difference, verdict

MIN_ROUND_WINDOW = 50         # fewer images per window: no metric-vs-share curve
# The claim tested per stage: the focus method's metric above every other method's (the paper: IFHE's intermediate
# features are more class-separated than CMI's and DeepInversion's)
CLAIM_METRICS = ("silhouette", "knn")
FOCUS = METHOD_LABELS["ifhe"]


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
    limits = {s.name: len(window_indices(_rounds(s), window, n, s.total_rounds)[0]) for s in sets}
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


def primary_stage(stages) -> str:
    """The stage the verdicts rest on: the first measured stage that is not h's input ('' if there is none)."""
    return next((s for s in stages if s != H_STAGE), "")


def compute_report(featurize: Callable[[object], Features], sets: list[ImageSet], real: ImageSet | None,
                   stages: tuple[str, ...], labels: str = "target", n: int = 1000, window: str = "share:0.25",
                   n_boot: int = N_BOOT, seed: int = 0, n_round_windows: int = N_ROUND_WINDOWS,
                   maps: bool = True, classes: tuple[str, ...] | None = None, teacher: str = "",
                   h_stages: tuple[str, ...] = (), progress: Callable[[str], None] | None = None,
                   n_jobs: int = 1, focus: str = FOCUS) -> FeatureReport:
    """Sample every set at equal n from its window, extract features once per set (`featurize(uint8 images)`
    returns Features with every stage in `stages`), and compute per bank the metrics with intervals over images,
    the metric-vs-share table and both kinds of map for every stage; per method, the metrics over its banks
    (seeds), and `focus`'s claims against every other method, paired by seed. The first stage that is not h's
    input is the primary one (the verdicts'); put it first."""
    say = progress or (lambda _msg: None)
    window = _check(sets, real, labels, window, n_round_windows)
    n_eff, note = equal_n(sets, real, n, window)
    notes = [note] if note else []
    if n_eff < 2:
        raise IfheError(f"too few images to compare (n = {n_eff})")
    sample, infos = _samples(sets, window, n_eff, seed)
    win_idx, round_n = _window_samples(sets, n_round_windows, n_eff, seed, notes)
    m = _extract_sets(featurize, sets, real, sample, win_idx, n_eff, seed, labels, say, infos)
    metrics, points, rounds = _analyse(m, stages, win_idx, round_n, n_boot, seed, maps, n_jobs, say)
    if real is None:
        notes.append("no real images: features standardized by the union of the sets, diversity relative to the "
                     "union, no Fréchet distance, and the shared map is fitted on the union of the sets")
    primary = primary_stage(stages)
    return FeatureReport(
        tuple(stages), labels, n_eff, infos, metrics, points, rounds, "real" if real is not None else "synthesized",
        notes, {nm: m.by_name[nm].images[m.sample[nm]] for nm in m.order}, tuple(classes or CIFAR10_CLASSES),
        teacher, tuple(h_stages), n_boot, round_n, seed_summary(metrics), seed_verdicts(metrics, primary, focus),
        primary, window_rule(window), protocol_text(n_boot), dict(m.sample))


def _analyse(m: "_Measured", stages, win_idx: dict, round_n: int, n_boot: int, seed: int, maps: bool, n_jobs: int,
             say) -> tuple:
    """Metrics, map points and metric-vs-share rows of every stage, as DataFrames."""
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
                say(f"metric vs share of the run at {stage}")
                round_rows += _stage_rounds(m, stage, stats, windows, n_boot, seed)
            if maps:
                say(f"t-SNE maps at {stage}")
                point_rows += _stage_maps(m, stage, z, seed, n_jobs)
    return (pd.DataFrame(metric_rows),
            pd.DataFrame(point_rows, columns=["stage", "map", "set", "x", "y", "label", "pred", "confidence", "index"]),
            pd.DataFrame(round_rows))


def protocol_text(n_boot: int) -> str:
    return (f"Protocol: {FOLDS} stratified folds fixed per set, balanced accuracy (chance 1/classes), k-NN "
            f"k={K_NEIGHBOURS}, linear probe L2 logistic regression (C={PROBE_C}); per bank, 95% percentile-bootstrap "
            f"intervals over out-of-fold points ({n_boot} draws, stratified by label); per method with several "
            f"banks (one per seed), the mean of its banks with a 95% t interval over seeds, and claims decided by "
            f"the difference paired by seed. Diversity: mean within-class pairwise distance relative to the "
            f"reference set's (real images; 1 = as spread, 0 = collapsed). Fréchet distance to real set A next to "
            f"the real-vs-real floor (set B vs A, same n).")


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
        rounds = _rounds(s)
        idx, desc = window_indices(rounds, window, n_eff, s.total_rounds)
        sample[s.name] = draw(idx, n_eff, [seed, i])
        desc += _h_updates_text(s, sample[s.name])
        banked = s.rounds is not None
        infos.append(SetInfo(s.name, len(sample[s.name]), len(s.labels),
                             desc if banked else f"no rounds recorded: drawn from all {len(idx)}", s.source, s.head,
                             s.group_name, s.seed,
                             rounds_span(rounds[idx], run_rounds(rounds, s.total_rounds)) if banked else "–"))
    return sample, infos


def _window_samples(sets: list[ImageSet], n_round_windows: int, n_eff: int, seed: int,
                    notes: list[str]) -> tuple[dict[str, list[tuple]], int]:
    """Windows of the metric-vs-share curve: equal shares of each run's rounds, equal n across banks; as many
    windows (up to n_round_windows) as leave every window of every bank MIN_ROUND_WINDOW images or more."""
    banked = [s for s in sets if s.rounds is not None]
    wins = {}
    for k in range(n_round_windows if banked else 0, 1, -1):
        wins = {s.name: share_windows(_rounds(s), k, s.total_rounds) for s in banked}
        if all(len(ws) == k and min(len(w[0]) for w in ws) >= MIN_ROUND_WINDOW for ws in wins.values()):
            break
        wins = {}
    if banked and n_round_windows > 0 and not wins:
        notes.append(f"no metric-vs-share curve: no two equal shares of every run hold {MIN_ROUND_WINDOW} images "
                     f"each")
    round_n = min([len(w[0]) for ws in wins.values() for w in ws] + [n_eff]) if wins else 0
    win_idx = {name: [(draw(w, round_n, [seed, 100 + i, j]), lo, hi) for j, (w, lo, hi) in enumerate(ws)]
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
        ext[s.name] = _extract(featurize, s.images, [sample[s.name]] + [w[0] for w in win_idx.get(s.name, [])])
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
                                f"random test images (another {n_eff} for the floor)", real.source, group="real",
                                rounds_used="–"))
    return m


def _windows(m: _Measured, win_idx: dict, round_n: int, n_boot: int, seed: int) -> list[tuple]:
    """Per window of the metric-vs-share curve (real images as one window): (set, window number, indices, share
    from, share to, features, chosen labels, folds, agreement), the same at every stage."""
    windows = [("real", -1, m.real_a[:round_n], 0.0, 1.0)] if m.has_real and win_idx else []
    windows += [(nm, j, idx, lo, hi) for nm, ws in win_idx.items() for j, (idx, lo, hi) in enumerate(ws)]
    out = []
    for nm, j, idx, lo, hi in windows:
        f = m.ext[nm].take(idx)
        t = np.asarray(m.by_name[nm].labels)[idx]
        y = m.labelled(t, f)[0]
        out.append((nm, j, idx, lo, hi, f, y, fixed_folds(y, seed=seed),
                    agreement_interval(t, f.pred, n_boot, seed)))
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
        s = m.by_name[nm]
        row = {"stage": stage, "set": nm, "group": "real" if nm == "real" else s.group_name,
               "seed": -1 if s.seed is None else int(s.seed), "labels": m.labels, "n": len(z[nm]),
               "chance": r["chance"]}
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
    """Metric vs share of the run at one stage: same standardization and fold protocol, round_n images in every
    window."""
    rows = []
    for nm, j, idx, lo, hi, f, y, folds, agree in windows:
        knn = accuracy_interval(y, out_of_fold(standardize(f.features[stage], stats), y, folds), n_boot,
                                seed) if folds.kept.any() else NAN_INTERVAL
        r = _rounds(m.by_name[nm])[idx] if nm != "real" else None
        rows.append({"stage": stage, "set": nm, "window": j, "n": len(y), "share_lo": lo, "share_hi": hi,
                     "share": (lo + hi) / 2,
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




# ---- over seeds: each method's banks, and the claims --------------------------------------------------------

SEED_KEYS = ("knn", "probe", "silhouette", "diversity", "agreement", "frechet")


def _bank_text(rows, key: str) -> str:
    """Each bank's figure with its interval over images: 's0 0.181 [0.176, 0.185]; s1 ...'."""
    digits = 1 if key == "frechet" else 3
    out = []
    for _, r in rows.iterrows():
        tag = f"s{int(r['seed'])} " if r["seed"] >= 0 else ""
        if key == "frechet":
            out.append(f"{tag}{r[key]:.1f}" if np.isfinite(r[key]) else f"{tag}–")
        else:
            out.append(tag + Interval(r[key], r[f"{key}_lo"], r[f"{key}_hi"], int(r["n"])).text(digits))
    return "; ".join(out)


def seed_summary(metrics):
    """Per (stage, method): the mean of its banks' figures with a 95% t interval over its banks (seeds), and
    each bank's figure with its interval over images beside it."""
    if metrics is None or len(metrics) == 0:
        return pd.DataFrame()
    rows = []
    for (stage, group), g in metrics.groupby(["stage", "group"], sort=False):
        row = {"stage": stage, "group": group, "n_banks": len(g),
               "seeds": ",".join(str(int(x)) for x in g["seed"] if x >= 0)}
        for key in SEED_KEYS:
            iv = mean_interval(list(g[key]))
            row |= _interval_columns(key, iv) | {f"{key}_banks": _bank_text(g, key)}
        rows.append(row)
    return pd.DataFrame(rows)


def _claim_row(stage: str, key: str, a, b, focus: str, other: str) -> dict:
    """focus's `key` above other's: the difference paired by seed, its interval, the verdict."""
    pair = paired_difference(dict(zip(a["seed"], a[key])), dict(zip(b["seed"], b[key])))
    seeds = [int(x) for x in pair.seeds if x >= 0]
    ok = len(seeds) >= 2
    why = verdict(pair.diff) if ok else (
        f"inconclusive: {len(a)} bank(s) of {focus} and {len(b)} of {other}, {len(seeds)} seed(s) in common; an "
        f"interval over seeds needs two or more")
    label = {"knn": "k-NN bal. acc", "silhouette": "silhouette"}.get(key, key)
    return {"stage": stage, "claim": f"{focus} > {other}, {label}", "metric": key, "a": focus, "b": other,
            **_interval_columns("diff", pair.diff if ok else Interval(pair.diff.estimate, np.nan, np.nan, 0)),
            "n_pairs": len(seeds), "seeds": ",".join(map(str, seeds)),
            "banks": f"{focus}: {_bank_text(a, key)} · {other}: {_bank_text(b, key)}", "verdict": why}


def seed_verdicts(metrics, primary: str, focus: str = FOCUS):
    """The claim that `focus`'s intermediate features are more class-separated than every other method's
    (CLAIM_METRICS), at the primary stage first, then at the others (h's input: what L_H optimises)."""
    if metrics is None or len(metrics) == 0 or focus not in set(metrics["group"]):
        return pd.DataFrame()
    stages = list(dict.fromkeys([primary] * bool(primary) + list(metrics["stage"])))
    rows = []
    for stage in stages:
        at = metrics[metrics["stage"] == stage]
        a = at[at["group"] == focus]
        for other in dict.fromkeys(at["group"]):
            if other in (focus, "real"):
                continue
            b = at[at["group"] == other]
            rows += [_claim_row(stage, key, a, b, focus, other) for key in CLAIM_METRICS]
    return pd.DataFrame(rows)
