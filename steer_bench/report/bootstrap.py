"""A paired bootstrap over problems: the comparison of two single-seed evaluations on the same problems.

With one seed there is no spread over seeds to measure, but both evaluations scored the same problems, so the
per-problem difference d_i = acc_method,i − acc_base,i (acc: the fraction of the problem's k samples graded
correct) carries the comparison's noise from the draw of problems. Per benchmark b with P_b matched problems, the
bootstrap resamples P_b problems with replacement ``resamples`` times and takes the mean difference; over several
benchmarks each is resampled on its own (stratified) and the statistic is the unweighted mean over benchmarks, as
the Avg column is. Reported: the observed mean difference, the bootstrap SE (the standard deviation of the
resampled means, ddof = 1), the percentile CI, and a two-sided p = min(1, 2 · min(P*(d ≤ 0), P*(d ≥ 0))) — below
α when the percentile CI at 1 − α excludes 0. It is the noise of this one pair of runs over problems, not of a
training seed, so it understates the spread a new seed would show. The RNG seed is fixed: the same inputs give
the same numbers.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0


@dataclass(frozen=True)
class Bootstrap:
    """The paired bootstrap of one method against the baseline over ``n_problems`` matched problems."""

    n_problems: int
    mean: float
    se: float
    p: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int


def matched_diffs(method: Mapping[Hashable, float], baseline: Mapping[Hashable, float]) -> list[float]:
    """Per-problem differences method − baseline over the problems both scored, in the baseline's order."""
    return [float(method[pid]) - float(baseline[pid]) for pid in baseline if pid in method]


def bootstrap(
    diffs: Sequence[Sequence[float]], *, confidence: float, resamples: int = RESAMPLES, seed: int = SEED
) -> Bootstrap:
    """The paired bootstrap of the unweighted mean over groups (benchmarks) of each group's mean difference."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    groups = [np.asarray(d, dtype=np.float64) for d in diffs]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("bootstrap: every group needs at least one matched problem")
    rng = np.random.default_rng(seed)
    # Groups in order, each with its own draw of indices: the result depends only on the inputs and the seed.
    boot = np.mean([g[rng.integers(0, g.size, size=(resamples, g.size))].mean(axis=1) for g in groups], axis=0)
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    p = min(1.0, 2 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    return Bootstrap(
        n_problems=sum(g.size for g in groups),
        mean=float(np.mean([g.mean() for g in groups])),
        se=float(np.std(boot, ddof=1)),
        p=p,
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
        resamples=resamples,
    )
