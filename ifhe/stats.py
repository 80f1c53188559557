"""Intervals and tests for the figures this project reports: pure functions of arrays, no plotting, no IO.

- `mean_interval`: mean, standard deviation and a Student-t 95% interval of a few seeds' results;
- `bootstrap_interval`: a percentile bootstrap interval of any statistic of a sample (rows resampled);
- `paired_difference`: the difference of two methods run on the same seeds, its t interval, a paired t test and
  an exact sign-flip (permutation) test.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

# scipy.stats takes most of a second to import: the functions that need it import it, so that reading a sweep's
# intervals (the app's Compare page) does not wait for it


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int
    std: float = float("nan")
    method: str = "t"          # t | bootstrap | none (a single value)

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 2) -> str:
        """'63.35 [61.02, 65.68]', or the bare value where no interval exists."""
        if not math.isfinite(self.estimate):
            return "–"
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.estimate:.{digits}f}"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _finite(values: Sequence[float | None]) -> np.ndarray:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def t_quantile(df: int, level: float = 0.95) -> float:
    from scipy import stats
    return float(stats.t.ppf(0.5 + level / 2, df))


def mean_interval(values: Sequence[float | None], level: float = 0.95) -> Interval:
    """Mean ± t(n-1) · s / sqrt(n). One value has no interval (low = high = nan); none gives nan."""
    a = _finite(values)
    n = len(a)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, method="none")
    mean = float(a.mean())
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1, method="none")
    std = float(a.std(ddof=1))
    half = t_quantile(n - 1, level) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, "t")


def bootstrap_interval(statistic: Callable[[np.ndarray], float], data: np.ndarray, n_boot: int = 200,
                       level: float = 0.95, seed: int = 0, stratify: np.ndarray | None = None) -> Interval:
    """Percentile bootstrap of `statistic(rows)`: rows of `data` drawn with replacement `n_boot` times
    (within each stratum when `stratify` gives one label per row, so class proportions stay fixed)."""
    data = np.asarray(data)
    n = len(data)
    estimate = float(statistic(data))
    if n < 2 or n_boot < 2:
        return Interval(estimate, float("nan"), float("nan"), n, method="none")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(stratify == g) for g in np.unique(stratify)] if stratify is not None else None
    values = []
    for _ in range(n_boot):
        if groups is None:
            idx = rng.integers(0, n, n)
        else:
            idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        v = statistic(data[idx])
        if v is not None and math.isfinite(v):
            values.append(v)
    if len(values) < 2:
        return Interval(estimate, float("nan"), float("nan"), n, method="none")
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return Interval(estimate, float(lo), float(hi), n, float(np.std(values, ddof=1)), "bootstrap")


@dataclass(frozen=True)
class PairedDifference:
    """a - b over seeds both ran: mean difference with its t interval, and two p-values (two-sided)."""

    diff: Interval
    t_p: float                 # paired t test
    sign_flip_p: float         # exact permutation test over the 2^n sign assignments
    seeds: tuple[int, ...]

    def as_dict(self) -> dict:
        return {"diff": self.diff.as_dict(), "t_p": self.t_p, "sign_flip_p": self.sign_flip_p,
                "seeds": list(self.seeds)}


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Two-sided p of the mean difference under random signs (exact; fine for the few seeds of a sweep)."""
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n == 0:
        return float("nan")
    observed = abs(d.mean())
    if n > 16:  # 65,536 assignments: beyond that, a fixed random sample of them
        rng = np.random.default_rng(0)
        signs = rng.choice([-1.0, 1.0], size=(65536, n))
    else:
        signs = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))
    means = np.abs((signs * d).mean(1))
    return float((means >= observed - 1e-12).mean())


def paired_difference(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> PairedDifference:
    """`a`, `b`: seed -> result. Only seeds present (and finite) in both are paired."""
    seeds = tuple(sorted(s for s in set(a) & set(b)
                         if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s])))
    d = [a[s] - b[s] for s in seeds]
    diff = mean_interval(d, level)
    if len(d) >= 2 and diff.std > 0:
        from scipy import stats
        t_p = float(stats.ttest_1samp(d, 0.0).pvalue)
    elif len(d) >= 2:  # identical differences: no spread, the sign is certain unless they are all zero
        t_p = 1.0 if diff.estimate == 0 else 0.0
    else:
        t_p = float("nan")
    return PairedDifference(diff, t_p, sign_flip_p(d), seeds)


def verdict(interval: Interval, null: float = 0.0, expected_sign: int = 1) -> str:
    """What an interval says about a claim that a quantity is above (expected_sign=1) or below `null`:
    'reproduced' when the whole interval is on the claimed side, 'not reproduced' when it is wholly on the
    other, 'inconclusive at this budget' when it straddles `null` or there is none."""
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "inconclusive at this budget"
    lo, hi = (interval.low - null, interval.high - null)
    if expected_sign < 0:
        lo, hi = -hi, -lo
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced"
    return "inconclusive at this budget"
