import math

import numpy as np
import pytest
from scipy import stats as sps

from ifhe.stats import (bootstrap_interval, mean_interval, paired_difference, sign_flip_p, verdict, Interval)


def test_mean_interval_by_hand():
    xs = [60.0, 62.0, 64.0]
    iv = mean_interval(xs)
    half = sps.t.ppf(0.975, 2) * 2.0 / math.sqrt(3)  # s = 2
    assert iv.estimate == pytest.approx(62.0)
    assert iv.std == pytest.approx(2.0)
    assert (iv.low, iv.high) == pytest.approx((62 - half, 62 + half))
    assert iv.n == 3


def test_one_value_has_no_interval_and_none_is_nan():
    one = mean_interval([5.0, None, float("nan")])
    assert one.n == 1 and one.estimate == 5.0 and math.isnan(one.low)
    assert one.text() == "5.00"
    assert math.isnan(mean_interval([]).estimate)


def test_bootstrap_interval_shrinks_with_n_and_covers_the_mean():
    rng = np.random.default_rng(0)
    small = bootstrap_interval(np.mean, rng.normal(size=50), n_boot=300)
    large = bootstrap_interval(np.mean, rng.normal(size=2000), n_boot=300)
    assert small.low < 0.0 < small.high or abs(small.estimate) < 0.4
    assert (large.high - large.low) < 0.5 * (small.high - small.low)


def test_stratified_bootstrap_keeps_strata_sizes():
    labels = np.array([0] * 30 + [1] * 10)
    seen = []
    bootstrap_interval(lambda rows: seen.append(np.bincount(rows[:, 1], minlength=2).tolist()) or 0.0,
                       np.stack([np.arange(40), labels], 1), n_boot=5, stratify=labels)
    assert all(s == [30, 10] for s in seen[1:])


def test_paired_difference_pairs_by_seed():
    a = {0: 63.0, 1: 61.0, 2: 65.0, 3: 99.0}
    b = {0: 58.0, 1: 57.0, 2: 59.0}
    pd = paired_difference(a, b)
    assert pd.seeds == (0, 1, 2)
    assert pd.diff.estimate == pytest.approx(5.0)
    assert pd.t_p == pytest.approx(sps.ttest_1samp([5.0, 4.0, 6.0], 0).pvalue)
    assert pd.sign_flip_p == pytest.approx(2 / 8)  # only all-plus and all-minus are as extreme


def test_sign_flip_of_mixed_signs_is_not_significant():
    assert sign_flip_p([1.0, -1.0, 1.0, -1.0]) == pytest.approx(1.0)


def test_verdicts_follow_the_interval():
    assert verdict(Interval(2.0, 0.5, 3.5, 3)) == "reproduced"
    assert verdict(Interval(-2.0, -3.5, -0.5, 3)) == "not reproduced"
    assert verdict(Interval(0.2, -1.0, 1.4, 3)) == "inconclusive at this budget"
    assert verdict(Interval(-2.0, -3.5, -0.5, 3), expected_sign=-1) == "reproduced"
    assert verdict(Interval(1.0, float("nan"), float("nan"), 1)) == "inconclusive at this budget"
