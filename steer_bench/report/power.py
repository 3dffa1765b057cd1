"""How many seeds a paired comparison needs to detect a given gap.

The paired t-test on n seeds (n − 1 degrees of freedom) against a true mean difference δ with per-seed
paired-difference SD s_d has the noncentral t statistic with noncentrality δ√n / s_d, so its two-sided power at
level α is P(|T| > t_{1−α/2, n−1}) under nct(n − 1, δ√n / s_d). ``seeds_needed`` is the smallest n ≥ 2 with power
at least the target; it lies at or a little above the normal approximation ((z_{1−α/2} + z_{power}) · s_d / δ)²,
since t has heavier tails than z and the test must also estimate s_d.
"""

from __future__ import annotations

import math

from scipy import stats

MAX_SEEDS = 100_000  # beyond this the gap is not worth measuring by seeds


def paired_t_power(n: int, delta: float, sd: float, *, alpha: float = 0.05) -> float:
    """Two-sided power of the paired t-test with ``n`` pairs when the true mean difference is ``delta``."""
    if n < 2:
        raise ValueError(f"the paired t-test needs n >= 2 pairs, got {n}")
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    ncp = delta * math.sqrt(n) / sd
    # The lower tail P(T < −crit) as the upper tail of −T ~ nct(df, −ncp): scipy 1.17's nct.cdf returns NaN there for
    # large ncp (e.g. df 1, ncp 19), where sf stays finite.
    power = float(stats.nct.sf(crit, df, ncp) + stats.nct.sf(crit, df, -ncp))
    if not math.isfinite(power):
        raise ArithmeticError(f"paired_t_power: scipy's nct gave {power} for df={df}, ncp={ncp}")
    return power


def seeds_needed(delta: float, sd: float, *, power: float = 0.8, alpha: float = 0.05) -> int:
    """The smallest n ≥ 2 whose paired t-test reaches ``power`` against a gap ``delta`` (same unit as ``sd``)."""
    if delta <= 0 or not math.isfinite(sd) or sd < 0:
        raise ValueError(f"seeds_needed: need delta > 0 and a finite sd >= 0, got delta={delta}, sd={sd}")
    if sd == 0:
        return 2  # no spread: every pair shows the gap
    # Start at the normal approximation (the answer is at or just above it) and search both ways: power grows with n.
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    n = max(2, math.floor((z * sd / delta) ** 2))
    while n > 2 and paired_t_power(n - 1, delta, sd, alpha=alpha) >= power:
        n -= 1
    while paired_t_power(n, delta, sd, alpha=alpha) < power:
        n += 1
        if n > MAX_SEEDS:
            raise ValueError(f"seeds_needed: more than {MAX_SEEDS} seeds for delta={delta}, sd={sd}")
    return n
