"""The release's graders (issue 11, items 1-2): the strict box's windows and raw equality, truncation handled as
the release does, ``release_both`` = strict box OR math-verify on the last 300 characters, a per-call grader."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from steer_bench.grading import Grader, grade_one, strict_match, summarize_verdicts
from steer_bench.grading.release import (
    RELEASE_BOX_WINDOW,
    RELEASE_WINDOW,
    release_strict_match,
    reward_correct,
    truncated_is_incorrect,
)


def _box_at(distance: int, answer: str = "540") -> str:
    """A response whose ``\\boxed{answer}`` starts ``distance`` characters before its end."""
    box = "\\boxed{" + answer + "}"
    assert distance >= len(box)
    return "x" * 500 + box + "." * (distance - len(box))


def test_windows_are_the_release_constants() -> None:
    assert (RELEASE_WINDOW, RELEASE_BOX_WINDOW) == (300, 100)  # math_dapo.compute_score, is_correct_strict_box


def test_box_50_characters_from_the_end_counts_200_does_not() -> None:
    near, far = _box_at(50), _box_at(200)
    assert release_strict_match(near, "540") == (True, "540")
    assert release_strict_match(far, "540") == (False, None)  # outside the last 100 characters
    assert strict_match(far, "540") == (True, "540")  # ours looks at the whole last 300
    assert strict_match(_box_at(299), "540")[0]
    assert not strict_match(_box_at(301), "540")[0]


def test_box_cut_by_the_100_character_window_is_no_box() -> None:
    # The box starts 105 characters from the end: the window keeps "boxed{540}..." without the backslash.
    assert release_strict_match(_box_at(105), "540") == (False, None)
    assert release_strict_match(_box_at(100), "540") == (True, "540")


def test_raw_string_equality_without_normalisation() -> None:
    assert release_strict_match("so \\boxed{540 }", "540") == (False, "540 ")
    assert release_strict_match("so \\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}") == (False, "\\dfrac{1}{2}")
    assert strict_match("so \\boxed{540 }", "540") == (True, "540")  # ours normalises
    assert release_strict_match("\\boxed{1} then \\boxed{540}", "540") == (True, "540")  # the last box


def test_bare_answer_line_is_not_accepted() -> None:
    assert release_strict_match("work\nAnswer: 540", "540") == (False, None)
    assert strict_match("work\nAnswer: 540", "540") == (True, "540")  # ours falls back to Answer:


def test_truncated_response_ending_in_a_correct_box_is_rewarded_by_release_strict() -> None:
    truncated = ["...so \\boxed{540}"]
    v = grade_one(truncated[0], "540", primary="release_strict")
    assert v.correct
    assert v.strict
    assert reward_correct([v], [True], grader="release_strict", rule="auto") == [True]  # graded as it is
    assert reward_correct([v], [True], grader="strict", rule="auto") == [False]  # ours forces incorrect
    assert reward_correct([v], [True], grader="release_strict", rule="incorrect") == [False]
    assert reward_correct([v], [True], grader="strict", rule="graded") == [True]
    assert reward_correct([v, v], [False, True], grader="math_verify", rule="auto") == [True, False]


def test_truncation_rule_errors() -> None:
    assert truncated_is_incorrect("either", "auto")
    assert not truncated_is_incorrect("release_both", "auto")
    with pytest.raises(ValueError, match="truncation rule"):
        truncated_is_incorrect("strict", "sometimes")
    with pytest.raises(ValueError, match="2 verdicts but 1"):
        reward_correct([SimpleNamespace(correct=True)] * 2, [False], grader="strict", rule="auto")


def test_release_both_is_strict_box_or_math_verify_on_the_last_300_characters() -> None:
    # math-verify accepts 0.5 for 1/2; the raw box does not: release_both accepts through math-verify.
    v = grade_one("so \\boxed{0.5}", "\\frac{1}{2}", primary="release_both")
    assert (v.correct, v.math_verify, v.strict) == (True, True, False)
    # Raw box equal, math-verify irrelevant.
    v = grade_one("so \\boxed{540}", "540", primary="release_both")
    assert v.correct
    assert v.strict
    # A box 200 characters from the end: not the strict box (last 100), but math-verify sees the last 300.
    v = grade_one(_box_at(200), "540", primary="release_both")
    assert (v.correct, v.strict, v.math_verify) == (True, False, True)
    # 400 characters from the end: outside the 300 both checkers see, although math-verify on the whole
    # response (our `math_verify` grader) finds it.
    v = grade_one(_box_at(400), "540", primary="release_both")
    assert (v.correct, v.math_verify) == (False, False)
    assert grade_one(_box_at(400), "540", primary="math_verify").correct


def test_agreement_is_between_math_verify_and_the_release_strict_box() -> None:
    cases = [("\\boxed{540}", "540"), ("\\boxed{0.5}", "\\frac{1}{2}"), ("\\boxed{7}", "540"), (_box_at(200), "540")]
    verdicts = [grade_one(r, g, primary="release_both") for r, g in cases]
    # agree (both yes), disagree (mv only), agree (both no), disagree (mv only: box outside the last 100)
    assert summarize_verdicts(verdicts)["agreement"] == 0.5
    assert summarize_verdicts(verdicts)["accuracy"] == 0.75


def test_pool_grades_under_a_per_call_grader() -> None:
    responses, golds = ["so \\boxed{540 }", "so \\boxed{0.5}", _box_at(200)], ["540", "\\frac{1}{2}", "540"]
    with Grader(workers=1, timeout=5.0, primary="release_strict") as pool:
        assert [v.correct for v in pool.grade(responses, golds)] == [False, False, False]
        both = pool.grade(responses, golds, primary="release_both")
        assert both == [grade_one(r, g, primary="release_both") for r, g in zip(responses, golds, strict=True)]
        assert [v.correct for v in both] == [True, True, True]
        assert [v.correct for v in pool.grade(responses, golds, primary="strict")] == [True, False, True]


def test_sample_rows_record_the_strict_extraction_of_the_grader_used() -> None:
    import pandas as pd

    from steer_bench.evaluation.scoring import sample_rows

    text = "Answer: 7\nso \\boxed{540 }"
    problems = pd.DataFrame({"problem_id": ["p"], "answer": ["540"]})
    batch = SimpleNamespace(prompt_index=[0], response_ids=[[1, 2]], finished=[True])
    for grader, pred in (("release_both", "540 "), ("strict", "540")):
        v = grade_one(text, "540", primary=grader)
        (row,) = sample_rows(problems, batch, [text], [v], grader=grader)
        assert (row["strict_pred"], row["strict"]) == (pred, grader == "strict")
