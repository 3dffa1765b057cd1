"""Answer grading: the graders (``verdict``), the release's matchers and truncation rule (``release``), and the
process pool that runs them with timeouts (``pool``)."""

from steer_bench.grading.pool import Grader
from steer_bench.grading.verdict import (
    PRIMARY_GRADERS,
    Verdict,
    grade_one,
    strict_for,
    strict_match,
    summarize_verdicts,
)

__all__ = ["PRIMARY_GRADERS", "Grader", "Verdict", "grade_one", "strict_for", "strict_match", "summarize_verdicts"]
