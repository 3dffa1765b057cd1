"""Gold self-consistency of the six paper benchmarks, through the real process pool.

For every problem's gold g: the response "... \\boxed{g}" must grade correct, and a response with a different
number must grade wrong. The different number: the first integer in g plus one (``\\frac{11}{2}`` ->
``\\frac{12}{2}``, ``[-2,7]`` -> ``[-3,7]``); golds without a digit get ``+1`` appended inside the box.

Known exceptions (math-verify limitations; each is one problem):
- minerva ``\\frac{1}{3}E_{1}+\\frac{2}{3}E_{2}``: parsed as ``2/3`` (the ``E_{1}`` terms are lost), so any
  answer ending in ``\\frac{2}{3}E_{2}`` matches.
- minerva ``\\lambda_{\\text{red}}/\\sqrt{2}``: parsing stops at ``\\text`` inside the subscript; gold and answer
  both reduce to the string ``\\lambda_{``.
- minerva ``ml\\ddot{\\theta}(t)-mg\\sin\\theta(t)=f(t)\\cos\\theta(t)``: comparing it with the ``+1`` equation
  runs past the 10 s timeout. The verdict is ``timeout`` (counted, not a silent zero) and not correct.
- olympiadbench ``N=n``: math-verify folds ``N`` and ``n`` into one symbol, so the gold is ``Eq(n, n)`` and
  ``N=n+1`` is accepted.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from steer_bench.data.prepare import prepare_dataset
from steer_bench.data.registry import PAPER_BENCHMARKS
from steer_bench.grading import Grader

KNOWN_WRONG_ACCEPTED = {
    ("minerva", "\\frac{1}{3}E_{1}+\\frac{2}{3}E_{2}"),
    ("minerva", "\\lambda_{\\text{red}}/\\sqrt{2}"),
    ("olympiadbench", "N=n"),
}
KNOWN_WRONG_TIMEOUT = {("minerva", "ml\\ddot{\\theta}(t)-mg\\sin\\theta(t)=f(t)\\cos\\theta(t)")}
_INT = re.compile(r"\d+")


def different_number(gold: str) -> str:
    m = _INT.search(gold)
    return gold[: m.start()] + str(int(m.group()) + 1) + gold[m.end() :] if m else gold + "+1"


def test_different_number():
    assert different_number("\\frac{11}{2}") == "\\frac{12}{2}"
    assert different_number("[-2,7]") == "[-3,7]"
    assert different_number("\\pi") == "\\pi+1"


@pytest.mark.slow
def test_every_gold_grades_itself_and_rejects_a_different_number(tmp_path, shared_data):
    rows = []
    for name in PAPER_BENCHMARKS:
        prepare_dataset(name, tmp_path / f"{name}.parquet", data_dir=shared_data, check_golds=False)
        df = pd.read_parquet(tmp_path / f"{name}.parquet")
        rows += [(name, g) for g in df["answer"]]
    golds = [g for _, g in rows]
    responses = [f"So the final answer is \\boxed{{{g}}}" for g in golds]
    responses += [f"So the final answer is \\boxed{{{different_number(g)}}}" for g in golds]
    with Grader(workers=2, timeout=10.0) as grader:
        verdicts = grader.grade(responses, golds + golds)
    right, wrong = verdicts[: len(golds)], verdicts[len(golds) :]

    failures = [(n, g, v) for (n, g), v in zip(rows, right, strict=True) if not (v.status == "ok" and v.correct)]
    assert failures == [], "golds that do not grade correct against themselves"
    assert all(v.strict for v in right)
    accepted = {(n, g) for (n, g), v in zip(rows, wrong, strict=True) if v.correct}
    timed_out = {(n, g) for (n, g), v in zip(rows, wrong, strict=True) if v.status != "ok"}
    assert accepted <= KNOWN_WRONG_ACCEPTED, f"new wrong answers graded correct: {accepted - KNOWN_WRONG_ACCEPTED}"
    assert timed_out <= KNOWN_WRONG_TIMEOUT, f"new timeouts/errors: {timed_out - KNOWN_WRONG_TIMEOUT}"
    assert all(not v.correct for v in wrong if v.status != "ok")

    for name in PAPER_BENCHMARKS:
        idx = [i for i, (n, _) in enumerate(rows) if n == name]
        rejected = sum(not wrong[i].correct for i in idx) / len(idx)
        print(f"{name}: {len(idx)} golds, self-graded correct 100%, different number rejected {rejected:.2%}")
        assert rejected >= 0.99
