"""avg@k, unbiased pass@k (against brute-force enumeration), maj@k (hand-checked), per benchmark and averaged."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest

from steer_bench.errors import SteerBenchError
from steer_bench.evaluation.metrics import (
    SampleCountError,
    average_over_benchmarks,
    avg_at_k,
    benchmark_metrics,
    combined_se,
    correct_counts,
    maj_at_k,
    pass_at_k,
)
from steer_bench.evaluation.scoring import score
from steer_bench.grading import Verdict


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_matches_binomial_form():
    # the product form stays stable where comb() gets huge
    for n, c, k in [(100, 3, 10), (256, 17, 64), (1000, 1, 500)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-9)
    assert pass_at_k(32, 0, 32) == 0.0
    assert pass_at_k(32, 1, 32) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # pass@1 = c/n


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(SteerBenchError, match="pass@k"):
        pass_at_k(n, c, k)


def test_avg_at_k():
    assert avg_at_k([True, False, False, True]) == 0.5
    assert avg_at_k([False]) == 0.0
    with pytest.raises(SteerBenchError):
        avg_at_k([])


def test_maj_at_k_hand_cases():
    assert maj_at_k(["1", "1", "2"], [True, True, False], 3) == 1.0
    assert maj_at_k(["1", "2", "2"], [True, False, False], 3) == 0.0
    assert maj_at_k(["1", "2"], [True, False], 2) == 0.5  # tie: expected score of a uniform pick
    assert maj_at_k(["1", "2", "3", "3"], [True, False, False, False], 2) == 0.5  # only the first 2 vote
    assert maj_at_k([None, None, "3"], [False, False, True], 3) == 1.0  # no answer = abstain
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    # a graded-correct sample and a timed-out one with the same answer: the answer scores their mean
    assert maj_at_k(["5", "5", "4"], [True, False, False], 3) == 0.5
    with pytest.raises(SteerBenchError):
        maj_at_k(["1"], [True], 2)


def test_benchmark_metrics_hand_checked():
    # p1: 4 samples, 1 correct, answers 7,7,3,None (7 is wrong, 3 is right); p2: 3 of 4 correct, answers 5,5,5,6.
    df = pd.DataFrame(
        {
            "problem_id": ["p1"] * 4 + ["p2"] * 4,
            "correct": [False, False, True, False, True, True, True, False],
            "pred": ["7", "7", "3", None, "5", "5", "5", "6"],
        }
    )
    m = benchmark_metrics(df, ks=(1, 2, 8), k=4, benchmark="b")
    assert m["n_problems"] == 2
    assert m["n_samples"] == 4
    assert m["avg_at_4"] == m["accuracy"] == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert m["pass_at_1"] == pytest.approx((1 / 4 + 3 / 4) / 2)
    # pass@2: p1 1 - C(3,2)/C(4,2) = 1/2; p2 1 - C(1,2)/C(4,2) = 1
    assert m["pass_at_2"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["pass_at_4"] == 1.0
    assert "pass_at_8" not in m  # k > n is not reported
    # maj@4: p1 votes 7 (wrong) -> 0; p2 votes 5 (right) -> 1. maj@1: first sample: p1 wrong, p2 right
    assert m["maj_at_4"] == 0.5
    assert m["maj_at_1"] == 0.5
    # maj@2: p1 "7","7" -> 0; p2 "5","5" -> 1
    assert m["maj_at_2"] == 0.5


def test_standard_errors_hand_checked():
    """SE of a mean over problems = s/√P (s: sample std, ddof 1), for avg@k, pass@k and maj@k alike."""
    # Three problems of 2 samples: c = 0, 1, 2 -> avg@2 per problem 0, 1/2, 1 (mean 1/2, s = 1/2, SE 1/(2√3));
    # pass@2 per problem 0, 1, 1 (mean 2/3, s² = ((2/3)² + 2·(1/3)²)/2 = 1/3, SE = √(1/3)/√3 = 1/3).
    df = pd.DataFrame(
        {
            "problem_id": ["a", "a", "b", "b", "c", "c"],
            "correct": [False, False, False, True, True, True],
            "pred": ["1", "1", "1", "2", "2", "2"],
        }
    )
    m = benchmark_metrics(df, ks=(1, 2), k=2, benchmark="b")
    assert m["accuracy_se"] == m["avg_at_2_se"] == pytest.approx(1 / (2 * math.sqrt(3)), rel=1e-12)
    assert m["pass_at_1_se"] == pytest.approx(1 / (2 * math.sqrt(3)), rel=1e-12)
    assert m["pass_at_2"] == pytest.approx(2 / 3)
    assert m["pass_at_2_se"] == pytest.approx(1 / 3, rel=1e-12)
    # maj@2 per problem: a "1" wrong -> 0; b tie "1"/"2" -> (0 + 1)/2; c "2" right -> 1: SE as avg@2's
    assert m["maj_at_2_se"] == pytest.approx(1 / (2 * math.sqrt(3)), rel=1e-12)
    assert correct_counts(df) == {"a": 0, "b": 1, "c": 2}
    one = benchmark_metrics(df[df["problem_id"] == "a"], ks=(1,), k=2, benchmark="b")
    assert math.isnan(one["accuracy_se"])  # one problem: no spread to estimate


def test_combined_se_of_a_mean_over_benchmarks():
    assert combined_se([0.3, 0.4]) == pytest.approx(0.25)  # √(0.09 + 0.16) / 2
    assert math.isnan(combined_se([0.3, None]))
    per = {"a": {"accuracy": 0.2, "accuracy_se": 0.3}, "b": {"accuracy": 0.8, "accuracy_se": 0.4}}
    assert average_over_benchmarks(per)["accuracy_se"] == pytest.approx(0.25)  # not the mean 0.35


def test_benchmark_metrics_errors():
    df = pd.DataFrame({"problem_id": ["a", "a", "b"], "correct": [1, 0, 1], "pred": ["1"] * 3})
    with pytest.raises(SampleCountError, match="'b' has 1"):
        benchmark_metrics(df, k=2, benchmark="x")
    with pytest.raises(SteerBenchError, match="missing column"):
        benchmark_metrics(pd.DataFrame({"problem_id": ["a"], "correct": [True]}), k=1, benchmark="x")


def _scored(counts: dict[str, int], k: int, problem_ids: list[str]) -> dict[str, float]:
    """:func:`score` (the runner's scoring point) of samples with ``counts[pid]`` rows per problem, the first
    ``i + 1`` of problem i's correct."""
    rows, verdicts = [], []
    for i, (pid, n) in enumerate(counts.items()):
        for j in range(n):
            ok = j <= i
            rows.append({"problem_id": pid, "correct": ok, "pred": "1", "truncated": False, "response_len": 3})
            verdicts.append(Verdict(correct=ok, math_verify=ok, strict=ok, pred="1", status="ok"))
    return score(rows, verdicts, k, benchmark="synth_test", problem_ids=problem_ids)


def test_sample_counts_must_equal_the_protocols_k():
    """One problem with k − 1 samples, a problem with none, or every problem with k − 1 (which a check of equal
    counts alone lets through, scoring avg@(k−1) as if it were avg@k) is a SampleCountError naming the
    benchmark, the problem and the counts; k samples each score as worked out by hand."""
    ids = ["p1", "p2", "p3"]
    with pytest.raises(SampleCountError) as err:
        _scored({"p1": 4, "p2": 3, "p3": 4}, 4, ids)
    want = "benchmark 'synth_test': 1 problem(s) do not have the protocol's k = 4 samples: 'p2' has 3"
    assert str(err.value) == want
    with pytest.raises(SampleCountError, match="'p3' has 0"):
        _scored({"p1": 4, "p2": 4}, 4, ids)
    with pytest.raises(SampleCountError, match=r"3 problem.*k = 4.*'p1' has 3, 'p2' has 3, 'p3' has 3"):
        _scored({"p1": 3, "p2": 3, "p3": 3}, 4, ids)
    m = _scored({"p1": 4, "p2": 4, "p3": 4}, 4, ids)  # 1, 2, 3 of 4 correct
    assert m["acc"] == m["avg_at_4"] == pytest.approx((1 + 2 + 3) / 12, rel=1e-15)
    # pass@2 = 1 − C(4−c, 2)/C(4, 2): c = 1 → 1/2, c = 2 → 5/6, c = 3 → 1
    assert m["pass_at_2"] == pytest.approx((1 / 2 + 5 / 6 + 1) / 3, rel=1e-15)


def test_average_over_benchmarks_is_unweighted():
    per = {
        "aime24": {"n_problems": 30, "n_samples": 32, "accuracy": 0.2, "avg_at_32": 0.2, "pass_at_1": 0.2},
        "math500": {"n_problems": 500, "n_samples": 1, "accuracy": 0.8, "avg_at_1": 0.8, "pass_at_1": 0.8},
    }
    avg = average_over_benchmarks(per)
    assert avg == {"accuracy": pytest.approx(0.5), "pass_at_1": pytest.approx(0.5), "n_benchmarks": 2}
    with pytest.raises(SteerBenchError):
        average_over_benchmarks({})
