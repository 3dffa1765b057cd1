"""Paired differences against a baseline: hand-checked numbers, the t-test against scipy's, the edge cases; Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from steer_bench.report.paired import holm, paired, paired_against


def test_hand_checked_three_seeds() -> None:
    # d = (1, 2, 3): mean 2, s_d = 1, SE = 1/√3 = 0.577350; t = 2√3 = 3.464102 on 2 df;
    # two-sided p = 1 − |t|/√(t² + 2) for 2 df (the t-distribution's closed form) = 1 − 3.464102/3.741657 = 0.074180;
    # t_{0.975, 2} = 4.302653, so the 95% CI is 2 ± 2.484138.
    r = paired({0: 11.0, 1: 12.0, 2: 13.0}, {0: 10.0, 1: 10.0, 2: 10.0}, confidence=0.95)
    assert r.seeds == (0, 1, 2)
    assert r.diffs == (1.0, 2.0, 3.0)
    assert r.n == 3
    assert r.mean == 2.0
    assert r.se == pytest.approx(1 / math.sqrt(3), rel=1e-12)
    assert r.t == pytest.approx(2 * math.sqrt(3), rel=1e-12)
    assert r.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-9)
    assert r.p == pytest.approx(0.074180, abs=1e-6)
    assert r.ci_low == pytest.approx(2 - 2.484138, abs=1e-6)
    assert r.ci_high == pytest.approx(2 + 2.484138, abs=1e-6)


def test_agrees_with_scipy_paired_t_test() -> None:
    a = {0: 0.61, 1: 0.58, 2: 0.66, 3: 0.59, 4: 0.63}
    b = {0: 0.55, 1: 0.57, 2: 0.60, 3: 0.52, 4: 0.61}
    r = paired(a, b, confidence=0.9)
    ref = stats.ttest_rel([a[s] for s in range(5)], [b[s] for s in range(5)])
    assert r.t == pytest.approx(ref.statistic, rel=1e-10)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.9)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))


def test_pairs_only_matching_seeds() -> None:
    # seed 3 has no baseline and seed 9 no method run: both are left out, never paired with another seed
    r = paired({0: 5.0, 1: 7.0, 3: 100.0}, {0: 4.0, 1: 4.0, 9: -100.0}, confidence=0.95)
    assert r.seeds == (0, 1)
    assert r.diffs == (1.0, 3.0)
    assert r.mean == 2.0
    assert r.se == pytest.approx(1.0, rel=1e-12)  # s_d = √2, SE = √2/√2


def test_degenerate_cases() -> None:
    one = paired({0: 3.0}, {0: 1.0}, confidence=0.95)
    assert one.mean == 2.0
    assert all(math.isnan(x) for x in (one.se, one.t, one.p, one.ci_low, one.ci_high))
    none = paired({1: 3.0}, {0: 1.0}, confidence=0.95)
    assert none.n == 0
    assert math.isnan(none.mean)
    same_shift = paired({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}, confidence=0.95)  # every seed moved by exactly +1
    assert (same_shift.se, same_shift.t, same_shift.p) == (0.0, math.inf, 0.0)
    equal = paired({0: 2.0, 1: 3.0}, {0: 2.0, 1: 3.0}, confidence=0.95)
    assert equal.mean == 0.0
    assert math.isnan(equal.t)
    with pytest.raises(ValueError, match="confidence"):
        paired({0: 1.0}, {0: 1.0}, confidence=95)


def test_paired_against_every_method_but_the_baseline() -> None:
    values = {"grpo": {0: 1.0, 1: 2.0}, "steer": {0: 2.0, 1: 4.0}, "w_reinforce": {0: 0.0, 1: 2.0}}
    out = paired_against(values, baseline="grpo", confidence=0.95)
    assert list(out) == ["steer", "w_reinforce"]
    assert out["steer"].diffs == (1.0, 2.0)
    assert out["w_reinforce"].diffs == (-1.0, 0.0)
    ordered = paired_against(values, baseline="grpo", confidence=0.95, methods=["w_reinforce", "grpo", "absent"])
    assert list(ordered) == ["w_reinforce", "absent"]
    assert ordered["absent"].n == 0
    with pytest.raises(KeyError, match="baseline"):
        paired_against(values, baseline="opo", confidence=0.95)


def test_holm_hand_worked() -> None:
    # p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted 0.005, 0.01, 0.03, 0.04 times m − k + 1 = 4, 3, 2, 1:
    # 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06. At α = 0.05 the step-down rejects 0.005
    # (≤ 0.0125) and 0.01 (≤ 0.0167), then stops at 0.03 (> 0.025): 0.04 is not significant though alone it would be.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == [pytest.approx(x, rel=1e-12) for x in (0.03, 0.06, 0.06, 0.02)]
    assert [a <= 0.05 for a in adjusted] == [True, False, False, True]
    # NaN (no p-value: a method without two seeds) stays NaN and is not in the family: m = 2
    out = holm([math.nan, 0.01, 0.04])
    assert math.isnan(out[0])
    assert out[1:] == [pytest.approx(0.02, rel=1e-12), pytest.approx(0.04, rel=1e-12)]
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def _step_down(pvalues: list[float], alpha: float) -> set[int]:
    """Holm's procedure as stated: reject in ascending order while p_(k) ≤ α / (m − k + 1), k = 1..m."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected: set[int] = set()
    for k, i in enumerate(order, start=1):
        if pvalues[i] > alpha / (len(pvalues) - k + 1):
            break
        rejected.add(i)
    return rejected


def test_holm_agrees_with_the_step_down_rule_on_random_data() -> None:
    rng = np.random.default_rng(25)
    for _ in range(300):
        m = int(rng.integers(1, 8))
        p = list(rng.uniform(0, 0.1, size=m) ** rng.uniform(0.5, 2))  # many near the thresholds
        adjusted = holm(p)
        assert all(a >= x for a, x in zip(adjusted, p, strict=True))  # never below the raw p
        for alpha in (0.01, 0.05, 0.1):
            assert {i for i, a in enumerate(adjusted) if a <= alpha} == _step_down(p, alpha)
