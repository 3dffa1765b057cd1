"""Grading: the strict matcher, math-verify conventions, the primary-grader modes, and the process pool
(order, gold caching, timeouts that are surfaced and never block the pool, dead workers replaced)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from steer_bench.errors import SteerBenchError
from steer_bench.grading import Grader, Verdict, grade_one, strict_match, summarize_verdicts
from steer_bench.grading import pool as grading_pool
from steer_bench.grading import verdict as grading_verdict
from steer_bench.grading.release import last_boxed
from steer_bench.grading.verdict import combine, extract_strict, normalize_answer, wrap_gold

# A power tower and deep nesting: sympy grinds on these for far longer than the timeout.
PATHOLOGICAL = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}"]


def test_last_boxed_and_strict_extraction():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\frac{1}{2}") is None  # unbalanced
    assert extract_strict("work...\nAnswer: 540\n") == "540"
    assert extract_strict("Answer: 7 and then \\boxed{8}") == "8"  # a box wins over an Answer line
    assert extract_strict("\\boxed{5}" + "x" * 400) is None  # outside STEER's 300-character window
    assert extract_strict("no answer here") is None


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("x = 5", "5"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\text{(C)}", "(C)"),
        ("1,000", "1000"),
        ("(1,2)", "(1,2)"),
        ("90^\\circ", "90"),
        ("$540$.", "540"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_strict_match():
    assert strict_match("so \\boxed{ 12 }", "12") == (True, "12")
    assert strict_match("so \\boxed{12}", "13") == (False, "12")
    assert strict_match("so \\boxed{}", "13") == (False, None)
    assert strict_match("so 0.5", "\\frac{1}{2}") == (False, None)


def test_wrap_gold():
    assert wrap_gold("2^{1009}") == "\\boxed{2^{1009}}"
    assert wrap_gold("$[-2,7]$") == "\\boxed{[-2,7]}"
    assert wrap_gold("\\boxed{3}") == "\\boxed{3}"
    assert wrap_gold("\\boxed{1}+\\boxed{2}") == "\\boxed{\\boxed{1}+\\boxed{2}}"


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("so \\boxed{\\frac{1}{2}}", "0.5", True),
        ("Answer: 540", "540", True),
        ("The answer is \\boxed{2^{1009}}", "2^{1009}", True),  # parses as 2 unless the gold is wrapped
        ("The answer is \\boxed{2}", "2^{1009}", False),
        ("\\boxed{[-2,7]}", "[-2,7]", True),
        ("\\boxed{(x+1)^2}", "x^2+2x+1", True),
        ("\\boxed{4}", "3", False),
        ("no number at all", "3", False),
    ],
)
def test_grade_one_math_verify(response, gold, correct):
    v = grade_one(response, gold)
    assert v.status == "ok"
    assert v.correct is correct
    assert v.math_verify is correct


def test_primary_modes():
    # math-verify says yes, strict says no
    assert grade_one("\\boxed{0.5}", "\\frac{1}{2}", primary="math_verify").correct
    assert grade_one("\\boxed{0.5}", "\\frac{1}{2}", primary="either").correct
    assert not grade_one("\\boxed{0.5}", "\\frac{1}{2}", primary="strict").correct
    # strict says yes, math-verify says no
    v = grade_one("Answer: (C)", "\\text{(C)}", primary="either")
    assert (v.correct, v.math_verify, v.strict) == (True, False, True)
    assert not grade_one("Answer: (C)", "\\text{(C)}").correct
    with pytest.raises(SteerBenchError, match="unknown primary grader"):
        grade_one("1", "1", primary="lenient")


def test_combine_unfinished_math_verify_is_never_a_silent_verdict():
    timed_out = (None, None, "timeout", "math-verify exceeded 1s")
    v = combine("math_verify", timed_out, (False, "7"))
    assert (v.correct, v.math_verify, v.status, v.pred) == (False, None, "timeout", "7")
    assert combine("either", timed_out, (True, "7")).correct  # the strict match still counts
    assert combine("strict", (True, "7", "ok", None), (False, "8")).pred == "8"  # pred follows the primary


def test_summarize_verdicts_counts_failures():
    vs = [
        Verdict(True, True, True, "1", "ok"),
        Verdict(False, False, True, "2", "ok"),
        Verdict(False, None, False, None, "timeout", "t"),
        Verdict(False, None, False, None, "error", "e"),
    ]
    s = summarize_verdicts(vs)
    assert s["n"] == 4
    assert (s["n_timeout"], s["n_error"], s["n_correct"]) == (1, 1, 1)
    assert s["accuracy"] == 0.25
    assert s["strict_accuracy"] == 0.5
    assert s["agreement"] == 0.5  # over the two items math-verify finished


def test_grade_one_works_off_the_main_thread():
    # math-verify's own alarms raise in threads; ours are simply not armed there
    out = []
    t = threading.Thread(target=lambda: out.append(grade_one("\\boxed{3}", "3")))
    t.start()
    t.join()
    assert out[0].correct


def test_pathological_input_times_out_in_process():
    start = time.monotonic()
    v = grade_one(PATHOLOGICAL[0], "5", timeout=0.5)
    assert time.monotonic() - start < 5
    assert (v.status, v.math_verify, v.correct) == ("timeout", None, False)


# ---------------------------------------------------------------------------------------------------- pool


@pytest.fixture(scope="module")
def pool():
    with Grader(workers=2, timeout=2.0) as g:
        yield g


def test_pool_matches_grade_one_and_keeps_order(pool):
    cases = [
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{4}", "3"),
        ("Answer: 540", "540"),
        ("\\boxed{3}", "3"),
        ("\\boxed{541}", "540"),
        ("\\boxed{2^{1009}}", "2^{1009}"),
    ] * 5  # repeated golds: each distinct gold goes to one worker and is parsed once there
    responses, golds = zip(*cases, strict=True)
    verdicts = pool.grade(responses, golds)
    assert verdicts == [grade_one(r, g) for r, g in cases]
    assert pool.grade([], []) == []
    with pytest.raises(SteerBenchError, match="responses but"):
        pool.grade(["a"], [])


@pytest.mark.parametrize("primary", ["math_verify", "either", "release_both"])
def test_dedupe_gives_exactly_the_verdicts_of_grading_every_item(pool, primary, monkeypatch):
    """Identical (response, gold) pairs are graded once; the verdicts equal those of grading every item, in
    order. release_both's math-verify sees the last 300 characters, so responses that differ only before
    them are one math-verify item. Also an unparseable gold (an error verdict) and a different gold for the
    same response (not a duplicate)."""
    prefix = "x" * 400  # outside the release window
    base = [
        ("\\boxed{\\frac{1}{2}}", "0.5"), ("\\boxed{4}", "3"), ("Answer: 540", "540"), ("\\boxed{4}", "4"),
        ("\\boxed{3}", "}{"), ("no answer", "7"), (prefix + "\\boxed{9}", "9"), ("y" + prefix + "\\boxed{9}", "9"),
    ]  # fmt: skip
    cases = [base[i % len(base)] for i in (0, 1, 1, 2, 3, 0, 4, 4, 5, 6, 7, 6, 1, 3, 7)]
    responses, golds = (list(x) for x in zip(*cases, strict=True))
    sent: list[int] = []
    real = Grader._run_math_verify

    def counting(self, rs, gs):
        sent.append(len(rs))
        return real(self, rs, gs)

    monkeypatch.setattr(Grader, "_run_math_verify", counting)
    every = pool.grade(responses, golds, primary=primary, dedupe=False)
    once = pool.grade(responses, golds, primary=primary)
    assert once == every
    assert once == [grade_one(r, g, primary=primary) for r, g in cases]
    assert every[6].status == "error"
    assert every[1] == every[2]
    assert sent == [len(cases), 7 if primary == "release_both" else 8]  # distinct (math-verify input, gold)


def test_unparseable_gold_is_an_error_not_a_zero(pool):
    (v,) = pool.grade(["\\boxed{3}"], ["}{"])
    assert v.status == "error"
    assert "gold does not parse" in v.error
    assert summarize_verdicts([v])["n_error"] == 1


def test_pathological_inputs_time_out_without_blocking_the_pool(pool):
    normal = [(f"\\boxed{{{i}}}", str(i)) for i in range(40)]
    cases = [(PATHOLOGICAL[0], "5"), *normal[:20], (PATHOLOGICAL[1], "1"), *normal[20:]]
    start = time.monotonic()
    verdicts = pool.grade(*zip(*cases, strict=True))
    elapsed = time.monotonic() - start
    statuses = [v.status for v in verdicts]
    assert statuses[0] == statuses[21] == "timeout"
    assert all(v.status == "ok" and v.correct for i, v in enumerate(verdicts) if i not in (0, 21))
    assert elapsed < 2 * 2.0 + 5  # both stuck items together cost about one timeout per worker
    assert pool.grade(["\\boxed{7}"], ["7"])[0].correct  # and the pool still works


def _hang_in_c(response: str, gold: str, cache: dict) -> tuple:
    """Stands in for work a signal cannot interrupt: the alarm is blocked, so only the parent's kill helps."""
    if response == "HANG":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    if response == "DIE":
        os._exit(3)
    return (response == gold, response, "ok", None)


def test_stuck_and_dead_workers_are_replaced(monkeypatch):
    # fork start method: the workers inherit the patched function (forkserver would import a fresh module)
    monkeypatch.setattr(grading_verdict, "_mv_body", _hang_in_c)
    with Grader(workers=2, timeout=0.5, start_method="fork") as g:
        start = time.monotonic()
        verdicts = g.grade(["a", "HANG", "b", "DIE", "c"], ["a", "x", "b", "y", "z"])
        elapsed = time.monotonic() - start
        assert [v.status for v in verdicts] == ["ok", "timeout", "ok", "error", "ok"]
        assert "killed" in verdicts[1].error
        assert "died" in verdicts[3].error
        assert [v.math_verify for v in verdicts] == [True, None, True, None, False]
        assert g.restarts == 2
        assert elapsed < 0.5 + grading_pool.KILL_GRACE_S + 10
        assert g.grade(["d"], ["d"])[0].correct


def test_grader_rejects_bad_settings():
    with pytest.raises(SteerBenchError, match="unknown primary grader"):
        Grader(primary="lenient")
    with pytest.raises(SteerBenchError, match="workers >= 1"):
        Grader(workers=0)


def test_an_interrupted_call_does_not_leak_into_the_next(monkeypatch):
    with Grader(workers=1, timeout=2.0) as g:
        g.grade(["\\boxed{1}"], ["1"])
        old_pids = g.pids
        real = Grader._check_deadlines

        def interrupt_once(self, pending, results):
            monkeypatch.setattr(Grader, "_check_deadlines", real)
            raise KeyboardInterrupt

        monkeypatch.setattr(Grader, "_check_deadlines", interrupt_once)
        with pytest.raises(KeyboardInterrupt):
            g.grade([f"\\boxed{{{i}}}" for i in range(50)], [str(i) for i in range(50)])
        verdicts = g.grade(["\\boxed{2}", "\\boxed{3}"], ["2", "4"])  # a fresh pool: no stale answers
        assert [v.correct for v in verdicts] == [True, False]
        assert g.pids != old_pids
