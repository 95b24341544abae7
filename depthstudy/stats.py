"""Paired per-seed statistics for verdicts and tables: the difference between two arms run with the same seeds,
its median, the exact sign test, and the distribution-free interval for the median difference that the sign test
inverts (order statistics, binomial(n, 1/2)). Exact for any n, no resampling and no normality assumption: with
3 seeds the widest interval, [min, max], covers the median with probability 75% only, and the report says so
rather than print a 95% it does not have. No torch.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95  # the coverage an interval aims at; fewer seeds give less, and say how much


@dataclass(frozen=True)
class Paired:
    """a[seed] - b[seed] over the seeds both arms finished."""
    seeds: tuple
    differences: tuple[float, ...]
    median: float
    low: float  # the interval for the median difference
    high: float
    confidence: float  # its exact coverage
    above: int  # differences > 0
    below: int  # differences < 0
    p_value: float  # exact two-sided sign test (ties dropped)

    @property
    def n(self) -> int:
        return len(self.differences)

    def all_above(self, margin: float) -> bool:
        """Every seed's difference exceeds margin (the interval's low end does when n is small)."""
        return self.n > 0 and min(self.differences) > margin

    def all_below(self, margin: float) -> bool:
        return self.n > 0 and max(self.differences) < margin

    def describe(self, unit: str = " points") -> str:
        """One line: median, interval with its coverage, n seeds, signs, sign test."""
        return (f"median {self.median:+.2f}{unit} over {self.n} seed{'s' * (self.n != 1)} "
                f"(seeds {', '.join(map(str, self.seeds))}; {self.confidence:.0%} interval "
                f"[{self.low:+.2f}, {self.high:+.2f}], exact sign-test order statistics; {self.above} of {self.n} "
                f"above 0, sign test p = {self.p_value:.3g})")


def _binom_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if k >= 0 else 0.0


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(low, high, coverage): the narrowest order-statistic interval [x(k), x(n+1-k)] whose exact coverage of the
    median is at least `confidence`; with too few values, [min, max] and its (lower) coverage."""
    x = sorted(values)
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    k = 1
    while k + 1 <= (n + 1) // 2 and 1 - 2 * _binom_cdf(k, n) >= confidence:
        k += 1  # coverage of [x(k), x(n+1-k)] is 1 - 2 P(X <= k-1)
    return x[k - 1], x[n - k], 1 - 2 * _binom_cdf(k - 1, n)


def sign_test(differences: list[float]) -> float:
    """Exact two-sided sign test of 'median difference = 0'; zero differences are dropped."""
    above = sum(d > 0 for d in differences)
    below = sum(d < 0 for d in differences)
    m = above + below
    return 1.0 if m == 0 else min(1.0, 2 * _binom_cdf(min(above, below), m))


def paired(a: dict, b: dict, confidence: float = CONFIDENCE) -> Paired | None:
    """a and b map seed -> value; None where no seed has a finite value in both."""
    seeds = tuple(sorted(s for s in a.keys() & b.keys()
                         if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s])))
    if not seeds:
        return None
    diffs = tuple(a[s] - b[s] for s in seeds)
    low, high, coverage = median_interval(list(diffs), confidence)
    return Paired(seeds, diffs, statistics.median(diffs), low, high, coverage,
                  sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), sign_test(list(diffs)))


def resolution(n_images: int) -> float:
    """How many points of error one image is on a split of n_images."""
    return 100.0 / n_images
