"""Paired per-seed statistics: exact coverage, the sign test, and that a verdict built on them can fail."""

import math

import pytest

from depthstudy import stats


def test_three_seeds_give_min_max_at_75_percent():
    low, high, coverage = stats.median_interval([3.0, 1.0, 2.0])
    assert (low, high) == (1.0, 3.0)
    assert coverage == pytest.approx(0.75)


def test_enough_seeds_reach_95_percent_and_narrow_the_interval():
    values = list(range(1, 21))  # n = 20: the exact interval is [x(6), x(15)], coverage 95.86%
    low, high, coverage = stats.median_interval(values)
    assert (low, high) == (6, 15)
    assert coverage == pytest.approx(1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2 ** 20)
    assert coverage >= 0.95


def test_sign_test_is_exact_and_drops_ties():
    assert stats.sign_test([1, 2, 3]) == pytest.approx(0.25)
    assert stats.sign_test([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert stats.sign_test([1, -1, 0]) == 1.0
    assert stats.sign_test([0, 0]) == 1.0


def test_paired_matches_seeds_and_ignores_missing_or_nan():
    a = {0: 50.0, 1: 40.0, 2: float("nan"), 3: 30.0}
    b = {0: 1.0, 1: 2.0, 2: 1.0, 4: 0.0}
    p = stats.paired(a, b)
    assert p.seeds == (0, 1) and p.differences == (49.0, 38.0)
    assert p.all_above(10) and not p.all_below(0)
    assert "2 seeds" in p.describe() and "sign test" in p.describe()


def test_a_paired_rule_says_disagrees_when_one_seed_goes_the_other_way():
    p = stats.paired({0: 40.0, 1: 45.0, 2: 1.0}, {0: 1.0, 1: 1.0, 2: 3.0})
    assert not p.all_above(0)  # seed 2: the 'worse' arm is better
    assert p.above == 2 and p.below == 1
    assert stats.paired({0: 1.0}, {1: 1.0}) is None


def test_resolution_of_the_digits_test_split():
    assert stats.resolution(297) == pytest.approx(0.3367, abs=1e-4)
