"""Paired comparisons of methods against a baseline over matched seeds.

Runs of one seed share everything the seed fixes (the warm start, the prompts drawn at each step, the evaluation's
problems and sampling seeds), so the difference method − baseline *of the same seed* cancels what the seed alone
would change; its spread over seeds is the noise of the comparison. Per method, with d_s = x_method,s − x_base,s
over the n seeds that both have:

- mean d̄ = Σ d_s / n; standard error SE = s_d / √n, s_d the sample standard deviation (ddof = 1);
- the paired t-test: t = d̄ / SE with n − 1 degrees of freedom, two-sided p-value;
- the confidence interval d̄ ± t_{(1+c)/2, n−1} · SE at confidence c.

With n < 2 (no spread to measure) or s_d = 0 the SE-based fields are undefined (NaN), except that s_d = 0 with
d̄ ≠ 0 gives t = ±inf and p = 0 (every seed moved the same way by the same amount). Missing seeds on either
side are left out (the pairing never borrows an unmatched run). The numbers are plain floats so a caller can
format them, mark them or correct them for multiple comparisons.

Several methods compared against one baseline are several tests: ``holm`` adjusts their p-values with Holm's
step-down procedure, which bounds the family-wise error rate at α (the chance that any of the family's true-null
differences is called significant) without assuming the tests independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

Values = Mapping[int, float]  # seed -> value


@dataclass(frozen=True)
class Paired:
    """The paired difference of one method against the baseline over ``seeds``."""

    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    mean: float
    se: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    confidence: float

    @property
    def n(self) -> int:
        return len(self.diffs)


def paired(method: Values, baseline: Values, *, confidence: float) -> Paired:
    """The paired difference ``method`` − ``baseline`` over the seeds both have (see the module docstring)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seeds = tuple(sorted(set(method) & set(baseline)))
    diffs = tuple(float(method[s]) - float(baseline[s]) for s in seeds)
    n = len(diffs)
    nan = math.nan
    if n == 0:
        return Paired(seeds, diffs, nan, nan, nan, nan, nan, nan, confidence)
    mean = sum(diffs) / n
    if n < 2:
        return Paired(seeds, diffs, mean, nan, nan, nan, nan, nan, confidence)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    if se == 0:
        t = nan if mean == 0 else math.copysign(math.inf, mean)
        p = nan if mean == 0 else 0.0
        return Paired(seeds, diffs, mean, se, t, p, mean, mean, confidence)
    t = mean / se
    p = float(2 * stats.t.sf(abs(t), n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * se
    return Paired(seeds, diffs, mean, se, t, p, mean - half, mean + half, confidence)


def paired_against(
    values: Mapping[str, Values], *, baseline: str, confidence: float, methods: Sequence[str] | None = None
) -> dict[str, Paired]:
    """``paired`` of every method of ``values`` (or of ``methods``, in that order) but the baseline against it."""
    if baseline not in values:
        raise KeyError(f"paired: no values for the baseline {baseline!r}")
    names = [m for m in (methods if methods is not None else values) if m != baseline]
    return {m: paired(values.get(m, {}), values[baseline], confidence=confidence) for m in names}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order; NaN stays NaN and is not counted in the family.

    With the m defined p-values sorted p_(1) ≤ … ≤ p_(m), the adjusted p_(k) is max_{j ≤ k} min(1, (m − j + 1) p_(j));
    a difference is significant at level α after the correction iff its adjusted p ≤ α, which is the step-down rule
    "reject p_(1), p_(2), … while p_(k) ≤ α / (m − k + 1)".
    """
    defined = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(defined)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out
