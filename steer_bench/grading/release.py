"""The STEER release's answer matchers and its rule for truncated responses, as named grader options.

Release (zz-haooo/STEER b31df71, ``verl/utils/reward_score``):

- training reward, ``math_dapo.compute_score`` (strict mode): keep the last 300 characters, then
  ``is_correct_strict_box`` keeps the last 100 of those, takes the last ``\\boxed{...}`` (balanced braces) and
  compares its content with the ground truth by **raw string equality** (no normalisation, no ``Answer:``
  fallback); +1 / −1. The trainer grades every response, truncated ones as they are. Our grader
  ``release_strict`` is that matcher.
- validation and evaluation, ``multi_datasets_eval.compute_score(eval_method="both")``: both checkers see the
  last 300 characters; correct if the strict box above OR Qwen2.5-Math's ``extract_answer`` + ``math_equal``
  accepts. Our ``release_both`` = the strict box OR math-verify on those same 300 characters (math-verify
  stands in for Qwen's checker; docs/fidelity.md says how the two differ).

Ours, kept under their names: ``strict`` (box anywhere in the last 300 characters, else the last ``Answer:``
line, normalised), ``math_verify`` (the whole response) and ``either`` (strict OR math-verify). With those the
trainer forces a truncated response to the incorrect score; the release graders do not (``reward.truncated``
overrides either rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RELEASE_WINDOW = 300  # math_dapo.compute_score / multi_datasets_eval.compute_score: solution_str[-300:]
RELEASE_BOX_WINDOW = 100  # is_correct_strict_box: pred[-100:] of those 300
RELEASE_GRADERS = ("release_strict", "release_both")
TRUNCATION_RULES = ("auto", "incorrect", "graded")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces) in ``text``, or None (none, or unbalanced)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def release_window(response: str) -> str:
    """What the release's checkers see of a response: its last 300 characters."""
    return response[-RELEASE_WINDOW:]


def release_strict_match(response: str, gold: str) -> tuple[bool, str | None]:
    """(correct, extracted box content or None): the last box in the last 100 of the last 300 characters,
    equal to ``gold`` character for character (``\\boxed{540 }`` is not ``540``)."""
    pred = last_boxed(release_window(response)[-RELEASE_BOX_WINDOW:])
    return pred is not None and pred == gold, pred


def truncated_is_incorrect(grader: str, rule: str) -> bool:
    """Whether a truncated response gets the incorrect score whatever its verdict: ``rule`` "incorrect" or
    "graded" decides; "auto" = the grader's own convention (release graders grade it as it is, ours force it)."""
    if rule not in TRUNCATION_RULES:
        raise ValueError(f"truncation rule must be one of {TRUNCATION_RULES}, got {rule!r}")
    if rule == "auto":
        return grader not in RELEASE_GRADERS
    return rule == "incorrect"


def reward_correct(verdicts: Sequence[Any], truncated: Sequence[bool], *, grader: str, rule: str) -> list[bool]:
    """Per response: whether it gets the correct score (``verdict.correct``, unless truncation forces it off)."""
    if len(verdicts) != len(truncated):
        raise ValueError(f"{len(verdicts)} verdicts but {len(truncated)} truncation flags")
    force = truncated_is_incorrect(grader, rule)
    return [bool(v.correct) and not (force and t) for v, t in zip(verdicts, truncated, strict=True)]
