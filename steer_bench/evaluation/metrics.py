"""Evaluation metrics from one set of samples: avg@k, unbiased pass@k, maj@k; per benchmark and averaged.

All values are fractions in [0, 1]. With n samples of a problem of which c are correct:

- ``avg@n`` = c / n, averaged over problems: pass@1 estimated from n samples (the paper's avg@32). It is
  also the headline ``accuracy`` of a benchmark (the paper's avg@1 for MATH500 etc. is the case n = 1).
- ``pass@k`` (Chen et al. 2021, unbiased) = 1 − C(n−c, k) / C(n, k), computed in the stable product form
  1 − Π_{i=n−c+1}^{n} (1 − k/i) (exactly 1 when n − c < k), averaged over problems.
- ``maj@k``: majority vote over the extracted answers (``pred``) of the first k samples (samples are i.i.d.,
  so the first k are a fair draw). Samples without an answer (``pred`` None) abstain; if all abstain the vote
  scores 0. An answer's correctness is the mean correctness of the samples that gave it (they normally
  agree). **Ties** are broken uniformly at random *in expectation*: the vote scores the mean correctness of
  the tied answers, so maj@k is deterministic (and may be fractional for one problem).

**Standard errors** (``<metric>_se``, e.g. ``acc_se``, ``pass_at_8_se``): every metric above is a mean over the
P problems of a per-problem value x_i (c_i/n, pass@k_i, maj@k_i), so its standard error is that of a sample
mean over problems, s/√P with s the sample standard deviation (ddof = 1) of the x_i (``scipy.stats.sem``). It
treats the benchmark's problems as a draw from a population of such problems, which is the uncertainty that
matters when comparing methods on one benchmark (Miller 2024, "Adding Error Bars to Evals", §2; with n > 1
samples per problem the within-problem sampling noise is included, since each x_i carries it). Undefined
(NaN, written as null) with a single problem.

**Sample counts**: every problem must have exactly the protocol's k samples, checked where samples are grouped per
problem (:func:`check_sample_counts`, a :class:`SampleCountError` naming the benchmark, the problems and their
counts); otherwise every per-problem mean would silently use another n.

Metric keys are MLflow-safe: ``avg_at_32``, ``pass_at_8``, ``maj_at_32``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from steer_bench.errors import SteerBenchError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``c`` correct out of ``n`` samples (stable product form)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise SteerBenchError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def avg_at_k(correct: Sequence[bool]) -> float:
    """Mean correctness of one problem's k samples."""
    if len(correct) == 0:
        raise SteerBenchError("avg@k of a problem with no samples")
    return sum(map(bool, correct)) / len(correct)


def maj_at_k(preds: Sequence[str | None], correct: Sequence[bool], k: int) -> float:
    """Majority vote over the first ``k`` samples' answers (ties: expected score of a uniform pick)."""
    if len(preds) != len(correct) or not 1 <= k <= len(preds):
        raise SteerBenchError(f"maj@k needs equal-length preds/correct and 1 <= k <= n, got k={k}, n={len(preds)}")
    votes: dict[str, list[bool]] = defaultdict(list)
    for p, ok in zip(preds[:k], correct[:k], strict=True):
        if p is not None:
            votes[p].append(bool(ok))
    if not votes:
        return 0.0
    top = max(len(v) for v in votes.values())
    tied = [sum(v) / len(v) for v in votes.values() if len(v) == top]
    return sum(tied) / len(tied)


class SampleCountError(SteerBenchError):
    """A benchmark's samples per problem differ from the protocol's k: every per-problem mean would silently
    use another n (lighteval/open-r1 shipped pass@1 over n samples falling as 1/n)."""


def check_sample_counts(
    samples: pd.DataFrame, *, k: int, benchmark: str, problem_ids: Iterable[str] | None = None
) -> None:
    """Every problem in ``samples`` has exactly ``k`` rows, and every one of ``problem_ids`` (the benchmark's
    problems, when given) has rows; a :class:`SampleCountError` naming the benchmark, the problems and their
    counts otherwise."""
    counts = {str(pid): int(n) for pid, n in samples.groupby("problem_id", sort=False).size().items()}
    bad = {pid: n for pid, n in counts.items() if n != k}
    if problem_ids is not None:
        bad |= {str(pid): 0 for pid in problem_ids if str(pid) not in counts}
    if bad:
        listed = ", ".join(f"{pid!r} has {n}" for pid, n in list(bad.items())[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise SampleCountError(
            f"benchmark {benchmark!r}: {len(bad)} problem(s) do not have the protocol's k = {k} samples: "
            f"{listed}{more}"
        )


def benchmark_metrics(
    samples: pd.DataFrame,
    ks: Iterable[int] = (1,),
    *,
    k: int,
    benchmark: str,
    problem_ids: Iterable[str] | None = None,
) -> dict[str, float]:
    """Metrics of one benchmark from per-sample rows (``problem_id``, ``correct``, ``pred``; rows of a problem
    in sample order). Every problem must have the protocol's ``k`` samples (and every one of ``problem_ids``
    some: :func:`check_sample_counts`); ``pass_at_j``/``maj_at_j`` are given for each j in ``ks`` with j <= k,
    plus ``avg_at_<k>``, ``accuracy`` (= avg@k), ``maj_at_<k>``, and for each of them its standard error over
    problems, ``<key>_se`` (see the module docstring)."""
    missing = [c for c in ("problem_id", "correct", "pred") if c not in samples.columns]
    if missing:
        raise SteerBenchError(f"benchmark_metrics: missing column(s) {missing}")
    if samples.empty:
        raise SteerBenchError(f"benchmark_metrics: no samples for benchmark {benchmark!r}")
    check_sample_counts(samples, k=k, benchmark=benchmark, problem_ids=problem_ids)
    groups = list(samples.groupby("problem_id", sort=False))
    n = k
    ks = sorted({j for j in ks if 1 <= j <= n} | {n})
    correct = [g["correct"].astype(bool).tolist() for _, g in groups]
    preds = [[None if pd.isna(p) else str(p) for p in g["pred"]] for _, g in groups]
    out: dict[str, float] = {"n_problems": len(groups), "n_samples": n}
    _put(out, f"avg_at_{n}", [avg_at_k(c) for c in correct])
    out["accuracy"], out["accuracy_se"] = out[f"avg_at_{n}"], out[f"avg_at_{n}_se"]
    for j in ks:
        _put(out, f"pass_at_{j}", [pass_at_k(n, sum(c), j) for c in correct])
        _put(out, f"maj_at_{j}", [maj_at_k(p, c, j) for p, c in zip(preds, correct, strict=True)])
    return out


def correct_counts(samples: pd.DataFrame) -> dict[str, int]:
    """Correct samples per problem, ``{problem_id: c}`` in first-seen order (the c of the module docstring)."""
    counts = samples.groupby("problem_id", sort=False)["correct"].apply(lambda c: int(c.astype(bool).sum()))
    return {str(pid): int(c) for pid, c in counts.items()}


def _put(out: dict[str, float], key: str, per_problem: list[float]) -> None:
    """The mean over problems and its standard error (NaN with one problem: no spread to estimate)."""
    out[key] = _mean(per_problem)
    out[f"{key}_se"] = float(stats.sem(np.asarray(per_problem, dtype=float))) if len(per_problem) > 1 else math.nan


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def average_over_benchmarks(per_benchmark: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean over benchmarks of every metric that all of them report (the paper's "Avg" column is
    the mean of ``accuracy``); counts (``n_problems``, ``n_samples``) are not averaged; a standard error
    ``<key>_se`` is that of the mean, :func:`combined_se`."""
    if not per_benchmark:
        raise SteerBenchError("average_over_benchmarks: no benchmarks")
    common = set.intersection(*(set(m) for m in per_benchmark.values())) - {"n_problems", "n_samples"}
    out = {
        key: combined_se([m[key] for m in per_benchmark.values()])
        if key.endswith("_se")
        else _mean(m[key] for m in per_benchmark.values())
        for key in sorted(common)
    }
    out["n_benchmarks"] = len(per_benchmark)
    return out


def combined_se(ses: Sequence[float | None]) -> float:
    """Standard error of the unweighted mean of B independent estimates (benchmarks have disjoint problem
    sets): √(Σ se_b²) / B. NaN when any is unknown."""
    if not ses:
        raise SteerBenchError("combined_se: no standard errors")
    known = [se for se in ses if se is not None and math.isfinite(se)]
    if len(known) < len(ses):
        return math.nan
    return math.sqrt(sum(se * se for se in known)) / len(ses)
