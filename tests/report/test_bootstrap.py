"""The paired bootstrap over problems: hand values on tiny examples, the exact bootstrap SE, determinism."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from steer_bench.report.bootstrap import RESAMPLES, bootstrap, matched_diffs

# Monte Carlo tolerances for RESAMPLES = 10 000 draws: the SD of B resampled means has relative SE ≈ 1/√(2B) = 0.7%,
# a tail fraction f has SE √(f(1−f)/B) ≤ 0.005; the bounds below are about 4 of those.
SE_REL = 0.03
FRACTION_ABS = 0.02


def test_two_problems_by_hand() -> None:
    # d = (100, 0) points: resampled means are 100, 50, 0 with probabilities 1/4, 1/2, 1/4, so the 2.5th and
    # 97.5th percentiles are 0 and 100, the exact bootstrap SE is √(Σ(d − d̄)²/n / n) = 50/√2 = 35.36, and
    # P*(mean ≤ 0) = 1/4 gives p = 2 · 1/4 = 0.5.
    r = bootstrap([[100.0, 0.0]], confidence=0.95)
    assert (r.mean, r.ci_low, r.ci_high, r.n_problems, r.resamples) == (50.0, 0.0, 100.0, 2, RESAMPLES)
    assert r.se == pytest.approx(50 / math.sqrt(2), rel=SE_REL)
    assert r.p == pytest.approx(0.5, abs=2 * FRACTION_ABS)


def test_constant_difference_has_no_spread() -> None:
    r = bootstrap([[0.5, 0.5, 0.5]], confidence=0.9)
    assert (r.mean, r.se, r.ci_low, r.ci_high, r.p) == (0.5, 0.0, 0.5, 0.5, 0.0)
    none = bootstrap([[0.0, 0.0]], confidence=0.9)
    assert (none.mean, none.se, none.p) == (0.0, 0.0, 1.0)  # every resample is 0: no evidence either way


def test_se_matches_the_exact_bootstrap_distribution() -> None:
    # All 4⁴ = 256 equally likely resamples of four problems, enumerated: the exact bootstrap SD of the mean.
    d = [30.0, -10.0, 0.0, 100.0]
    means = [statistics.fmean(c) for c in itertools.product(d, repeat=len(d))]
    exact = statistics.pstdev(means)
    assert exact == pytest.approx(statistics.pstdev(d) / 2, rel=1e-12)  # σ/√n, the closed form
    assert bootstrap([d], confidence=0.95).se == pytest.approx(exact, rel=SE_REL)


def test_stratified_over_benchmarks() -> None:
    # The Avg of two benchmarks: the mean of their means (50 and 20) and, the strata independent, SE = √(35.36² + 0²)/2
    r = bootstrap([[100.0, 0.0], [20.0, 20.0, 20.0]], confidence=0.95)
    assert r.mean == pytest.approx(35.0, rel=1e-15)
    assert r.n_problems == 5
    assert r.se == pytest.approx(50 / math.sqrt(2) / 2, rel=SE_REL)
    assert (r.ci_low, r.ci_high) == pytest.approx((10.0, 60.0), rel=1e-12)  # (0 + 20)/2, (100 + 20)/2


def test_deterministic() -> None:
    d = [[1.0, 0.0, 0.5, 0.25, -1.0], [0.1, 0.3]]
    assert bootstrap(d, confidence=0.95) == bootstrap(d, confidence=0.95)
    other = bootstrap(d, confidence=0.95, seed=1)
    assert other.mean == bootstrap(d, confidence=0.95).mean
    assert other.se != bootstrap(d, confidence=0.95).se


def test_matched_diffs_and_errors() -> None:
    # only problems both scored, in the baseline's order; "x" (method only) and "z" (baseline only) are left out
    assert matched_diffs({"b": 1.0, "a": 0.5, "x": 1.0}, {"a": 0.0, "z": 1.0, "b": 0.25}) == [0.5, 0.75]
    with pytest.raises(ValueError, match="matched problem"):
        bootstrap([[1.0], []], confidence=0.95)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap([[1.0]], confidence=1.0)
