"""The synthetic arithmetic task: determinism, disjoint splits, correct worked solutions, branch points, the
left-to-right strategy, the precedence levels and their arithmetic table."""

from __future__ import annotations

import re

import pytest

from steer_bench.data import check_frame
from steer_bench.data.synthetic import (
    ALPHABET,
    LEVELS,
    all_solutions,
    arithmetic_table,
    evaluate,
    evaluate_left_to_right,
    left_to_right,
    make_synthetic,
    solve,
    split_of,
)
from steer_bench.errors import SteerBenchError

STEP = re.compile(r"^(-?\d+)([+\-*])(\d+)=(-?\d+)$")


def _check_steps(problem: str, solution: str) -> None:
    """Every step is correct arithmetic, and the boxed value is Python's value of the expression."""
    body, boxed = solution.split(";")
    for step in body.split(","):
        a, op, b, c = STEP.match(step).groups()
        assert eval(f"{a}{op}{b}") == int(c), step
    assert boxed == "\\boxed{" + str(eval(problem)) + "}"


@pytest.fixture(scope="module")
def train():
    return make_synthetic("train", 3000, seed=0, levels=[1, 2, 3])


def test_schema_answers_and_solutions(train):
    check_frame(train, source="synth")
    assert set(train["dataset"]) == {"synth_train"}
    assert train["problem_id"].is_unique
    for row in train.itertuples():
        assert row.prompt == [{"role": "user", "content": row.problem}]
        assert row.answer == str(eval(row.problem))
        assert row.problem.count("+") + row.problem.count("-") + row.problem.count("*") == LEVELS[row.level][0] - 1
        _check_steps(row.problem, row.solution)
        assert row.solution in all_solutions(row.problem)
        assert set(row.problem + row.solution) <= set(ALPHABET)


def test_deterministic_and_seeded(train):
    again = make_synthetic("train", 3000, seed=0, levels=[1, 2, 3])
    assert train.equals(again)
    other = make_synthetic("train", 3000, seed=1, levels=[1, 2, 3])
    assert set(other["problem"]) != set(train["problem"])


def test_splits_disjoint_across_seeds(train):
    test = make_synthetic("test", 1000, seed=7, levels=[1, 2, 3])
    assert not set(test["problem"]) & set(train["problem"])
    assert {split_of(p) for p in test["problem"]} == {"test"}
    assert set(test["dataset"]) == {"synth_test"}


def test_level_counts_and_redistribution():
    df = make_synthetic("train", 90, seed=0, levels=[2, 1, 3])
    assert df["level"].value_counts().to_dict() == {1: 30, 2: 30, 3: 30}
    # Level 1 has 1200 expressions, about 240 of them test ones: its shortfall moves to level 2.
    small = make_synthetic("test", 1000, seed=0, levels=[1, 2])
    n1 = (small["level"] == 1).sum()
    assert 200 < n1 < 500
    assert (small["level"] == 2).sum() == 1000 - n1
    with pytest.raises(SteerBenchError, match="hold only"):
        make_synthetic("test", 1000, seed=0, levels=[1])


def test_responses_short_at_easy_levels(train):
    lengths = train["solution"].str.len()
    assert lengths[train["level"] == 1].max() <= 21
    assert lengths[train["level"] <= 2].max() <= 40


def test_branch_points():
    assert all_solutions("3+4-2*5") == ["2*5=10,3+4=7,7-10=-3;\\boxed{-3}", "3+4=7,2*5=10,7-10=-3;\\boxed{-3}"]
    assert all_solutions("3-9*2") == ["9*2=18,3-18=-15;\\boxed{-15}"]  # precedence: no choice
    assert len(all_solutions("2*3*4+5*6")) == 6
    for s in all_solutions("2*3*4+5*6"):
        _check_steps("2*3*4+5*6", s)
    assert {solve("3+4-2*5", seed=s) for s in range(20)} == set(all_solutions("3+4-2*5"))
    assert solve("3+4-2*5") == "3+4=7,2*5=10,7-10=-3;\\boxed{-3}"  # canonical: leftmost ready step


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "dev", "n": 5, "levels": [1]}, "unknown split"),
        ({"split": "train", "n": 5, "levels": [9]}, "unknown level"),
        ({"split": "train", "n": 5, "levels": []}, "unknown level"),
        ({"split": "train", "n": 0, "levels": [1]}, "n must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(SteerBenchError, match=match):
        make_synthetic(seed=0, **kwargs)


def test_left_to_right_is_the_wrong_strategy() -> None:
    assert left_to_right("3+4*2") == "3+4=7,7*2=14;\\boxed{14}"
    assert solve("3+4*2") == "4*2=8,3+8=11;\\boxed{11}"
    assert left_to_right("3-9*2") == "3-9=-6,-6*2=-12;\\boxed{-12}"  # a negative running value, never "+-"
    assert (evaluate_left_to_right("3-9*2"), evaluate("3-9*2")) == (-12, -15)
    assert left_to_right("2*3+4") == solve("2*3+4")  # precedence agrees with left to right: no fork
    for problem in ("3+4*2", "3-9*2", "2+3*4-5*6"):
        _check_steps_of(left_to_right(problem))


def _check_steps_of(solution: str) -> None:
    for step in solution.split(";")[0].split(","):
        a, op, b, c = STEP.match(step).groups()
        assert eval(f"{a}{op}{b}") == int(c), step


def test_precedence_levels_hold_only_forks() -> None:
    for level, n_operands in ((5, 3), (6, 4)):
        df = make_synthetic("test", 200, seed=0, levels=[level])
        for p in df["problem"]:
            nums = [int(x) for x in re.split(r"[+\-*]", p)]
            assert len(nums) == n_operands
            assert max(nums) <= 9
            assert evaluate_left_to_right(p) != eval(p), p
    # Level 5: every a±b*c (a, b, c in 1..9) whose left-to-right value differs, 1,296 expressions, split ~4:1.
    train = make_synthetic("train", 1028, seed=0, levels=[5])
    test = make_synthetic("test", 268, seed=0, levels=[5])
    assert len(set(train["problem"]) | set(test["problem"])) == 1296
    with pytest.raises(SteerBenchError, match="hold only"):
        make_synthetic("test", 269, seed=0, levels=[5])


def test_arithmetic_table_lists_every_step_of_both_strategies() -> None:
    table = arithmetic_table([5])
    assert table == sorted(set(table))
    for fact in table:
        _check_steps_of(fact + ";")
    steps = set()
    for p in (*make_synthetic("train", 1028, seed=0, levels=[5])["problem"], "3+4*2"):
        for s in (solve(p), left_to_right(p)):
            steps.update(s.split(";")[0].split(","))
    assert steps <= set(table)
    assert {"4*2=8", "3+8=11", "3+4=7", "7*2=14", "-8*9=-72"} <= set(table)
    with pytest.raises(SteerBenchError, match="too large"):
        arithmetic_table([3])
