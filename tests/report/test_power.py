"""Seeds a gap needs: the paired t-test's power against a hand case, a simulation and the normal approximation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from steer_bench.report.power import paired_t_power, seeds_needed

Z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)  # 1.959964 + 0.841621 = 2.801585


def test_large_noncentrality_stays_finite() -> None:
    # df 1, ncp = 4·√2/0.3 = 18.9: scipy's nct.cdf(−crit) is NaN here; the lower tail is < 1e-15, power = sf alone
    crit = stats.t.ppf(0.975, 1)
    assert paired_t_power(2, 4.0, 0.3) == pytest.approx(stats.nct.sf(crit, 1, 4 * math.sqrt(2) / 0.3), rel=1e-12)


def test_power_at_no_gap_is_alpha() -> None:
    # δ = 0: T is central t, so P(|T| > t_{0.975}) = 0.05 exactly (up to scipy's nct, ~1e-10 here)
    for n in (2, 5, 40):
        assert paired_t_power(n, 0.0, 1.0) == pytest.approx(0.05, abs=1e-9)


def test_hand_case_effect_size_one() -> None:
    # δ = s_d (effect size d_z = 1): normal approximation 2.801585² = 7.85 pairs; the paired t-test needs 10, with
    # power 0.8031 (the standard table value, e.g. G*Power's paired t for d_z = 1), and 9 fall short.
    assert seeds_needed(1.0, 1.0) == 10
    assert paired_t_power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=5e-4)
    assert paired_t_power(9, 1.0, 1.0) < 0.8


def test_power_against_simulated_t_tests() -> None:
    # 40 000 simulated paired experiments of n = 6, δ/s_d = 1.2: the rejection rate has SE √(p(1−p)/40000) ≈ 0.002
    rng = np.random.default_rng(0)
    d = rng.normal(1.2, 1.0, size=(40_000, 6))
    rate = float(np.mean(stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05))
    assert rate == pytest.approx(paired_t_power(6, 1.2, 1.0), abs=0.01)


@pytest.mark.parametrize("sd", [0.3, 0.9, 1.7, 3.0, 6.1])
@pytest.mark.parametrize("delta", [1.0, 2.0, 4.0])
def test_at_or_slightly_above_the_normal_approximation(sd: float, delta: float) -> None:
    n = seeds_needed(delta, sd)
    approx = (Z * sd / delta) ** 2
    # t needs more than z: about z²_{0.975}/2 ≈ 2 pairs more, never fewer; and at least 2 pairs
    assert max(2.0, approx) <= n <= max(2.0, approx) + 3
    assert paired_t_power(n, delta, sd) >= 0.8
    assert n == 2 or paired_t_power(n - 1, delta, sd) < 0.8  # the smallest such n


def test_prior_and_edges() -> None:
    # the prior s_d = 0.9 points: 1, 2, 4 points need 9, 4, 3 seeds (normal approximation 6.36, 1.59, 0.40)
    assert [seeds_needed(g, 0.9) for g in (1, 2, 4)] == [9, 4, 3]
    assert seeds_needed(1.0, 0.0) == 2
    with pytest.raises(ValueError, match="delta"):
        seeds_needed(0.0, 1.0)
    with pytest.raises(ValueError, match="sd"):
        seeds_needed(1.0, math.nan)
    with pytest.raises(ValueError, match="n >= 2"):
        paired_t_power(1, 1.0, 1.0)
