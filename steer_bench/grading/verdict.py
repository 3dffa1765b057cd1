"""Answer grading, one item at a time: math-verify and a strict matcher (:mod:`steer_bench.grading.pool` runs
them in a process pool with a per-item wall-clock timeout).

Two graders, both recorded in every :class:`Verdict`:

- ``math_verify``: ``verify(parse("\\boxed{<gold>}"), parse(response))`` — gold wrapped before parsing (a bare
  ``2^{1009}`` parses as 2) and passed first (math-verify is not symmetric).
- ``strict``: the last ``\\boxed{...}`` in the last 300 characters of the response (STEER's window), else the
  last ``Answer: ...`` line there, normalised (:func:`normalize_answer`) and compared for exact equality
  with the normalised gold.

The primary grader (``Verdict.correct``) is configurable: ``math_verify`` (default), ``strict``, ``either``
(strict OR math-verify), and the release's ``release_strict`` / ``release_both`` (:mod:`steer_bench.grading.release`:
the release's strict box on the last 100 of the last 300 characters, raw equality; ``release_both`` = that OR
math-verify on the last 300 characters). With a release grader ``Verdict.strict`` is the release's strict box and
math-verify sees only the last 300 characters, as the release's checkers do.

Timeouts: math-verify's own timeouts use ``signal.alarm`` (whole seconds, main thread only) and, with
``raise_on_error=False``, turn a timeout into a silent ``False``. So we switch them off and arm our own
``setitimer`` alarm around each item in the worker's main thread; it raises a ``BaseException`` that
math-verify's ``except Exception`` handlers do not swallow. Work that a signal cannot interrupt (a huge integer
power inside C code) is caught by the parent: a worker that makes no progress for ``timeout + KILL_GRACE_S``
is killed and replaced, its item marked ``timeout`` and the rest of its chunk re-queued. A timeout or error is
never a silent ``False``: ``Verdict.status`` says so, ``math_verify`` is ``None``, and
:func:`summarize_verdicts` counts them.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from steer_bench.errors import SteerBenchError
from steer_bench.grading.release import RELEASE_GRADERS, last_boxed, release_strict_match, release_window

log = logging.getLogger(__name__)

PRIMARY_GRADERS = ("math_verify", "strict", "either", *RELEASE_GRADERS)
STRICT_WINDOW = 300  # characters at the end of a response the strict matcher looks at (STEER/DAPO)
_GOLD_CACHE_MAX = 20_000

# (math_verify verdict, canonical prediction, status, error) as computed in a worker.
MVResult = tuple[bool | None, str | None, str, str | None]


@dataclass(frozen=True)
class Verdict:
    """One graded response. ``correct`` is the primary grader's verdict; it is False when that grader did not
    finish (``status`` "timeout"/"error"), except that ``either`` accepts a strict match. ``pred`` is the
    answer used for majority voting: math-verify's parsed value (sympy's canonical string) when it parsed,
    else the strict matcher's normalised extraction (the strict one when ``strict`` is primary)."""

    correct: bool
    math_verify: bool | None
    strict: bool
    pred: str | None
    status: str
    error: str | None = None


# --------------------------------------------------------------------------------------------- strict matcher

_ANSWER_LINE = re.compile(r"(?i)answer\s*:\s*([^\n]+)")
_UNWRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox|boxed)\{([^{}]*)\}")
_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "$", "^\\circ", "^{\\circ}", "\\%", "%", " ")


def normalize_answer(answer: str) -> str:
    """Light normalisation for the strict matcher: the part after the last "=", no spaces, ``$``, ``\\left``/
    ``\\right``, spacing macros, degrees or percent signs; ``\\text{}``-like wrappers unwrapped; ``\\dfrac`` and
    ``\\tfrac`` written ``\\frac``; thousands separators dropped from integers; a trailing period dropped."""
    s = answer.split("=")[-1]
    for token in _DROP:
        s = s.replace(token, "")
    for _ in range(3):  # nested wrappers
        s = _UNWRAP.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", s):
        s = s.replace(",", "")
    return s


def extract_strict(response: str) -> str | None:
    """The strict matcher's raw answer: last boxed, else last ``Answer:`` line, in the last 300 characters."""
    tail = response[-STRICT_WINDOW:]
    boxed = last_boxed(tail)
    if boxed is not None:
        return boxed
    lines = _ANSWER_LINE.findall(tail)
    return lines[-1] if lines else None


def strict_match(response: str, gold: str) -> tuple[bool, str | None]:
    """(normalised exact match, normalised extracted answer or None)."""
    raw = extract_strict(response)
    if raw is None:
        return False, None
    pred = normalize_answer(raw)
    if not pred:
        return False, None
    return pred == normalize_answer(gold), pred


# ---------------------------------------------------------------------------------------------- math-verify


class _ItemTimeout(BaseException):
    """Raised by our alarm; a BaseException so that math-verify's ``except Exception`` does not swallow it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _ItemTimeout


def wrap_gold(gold: str) -> str:
    """Gold as math-verify must see it: inside ``\\boxed{}`` (surrounding ``$`` removed, never boxed twice)."""
    g = gold.strip()
    if len(g) > 1 and g.startswith("$") and g.endswith("$"):
        g = g.strip("$").strip()
    return g if g.startswith("\\boxed{") and last_boxed(g) == g[len("\\boxed{") : -1] else "\\boxed{" + g + "}"


def _mv_body(response: str, gold: str, cache: dict[str, list]) -> MVResult:
    from math_verify import parse, verify  # here, not at import: the trainer's process only starts the workers

    gold_parsed = cache.get(gold)
    if gold_parsed is None:
        gold_parsed = parse(wrap_gold(gold), parsing_timeout=None)
        if not gold_parsed:
            return None, None, "error", f"gold does not parse: {gold[:200]!r}"
        if len(cache) >= _GOLD_CACHE_MAX:
            cache.clear()
        cache[gold] = gold_parsed
    pred_parsed = parse(response, parsing_timeout=None)
    if not pred_parsed:
        return False, None, "ok", None
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), _pred_text(pred_parsed), "ok", None


def _pred_text(parsed: list) -> str:
    """sympy's canonical string of the parsed answer (merges ``\\frac12`` and ``1/2`` for voting); printing
    can itself fail (a floor of a huge power raises ``PrecisionExhausted``): then the extracted text."""
    try:
        return str(parsed[0])
    except Exception:  # sympy printing errors are many types; the raw extraction is always there
        return str(parsed[-1])


def _drop_timeout_disabled_warning(record: logging.LogRecord) -> bool:
    """math-verify warns that its timeouts are off when we pass ``None``; we time items ourselves."""
    return not record.getMessage().startswith("Timeout is disabled")


def check_math_verify(response: str, gold: str, *, timeout: float | None, cache: dict[str, list]) -> MVResult:
    """math-verify on one item, under a ``timeout``-second alarm (only possible in the main thread; elsewhere
    it runs without one — use :class:`Grader` there). ``cache`` maps gold strings to parsed golds."""
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_drop_timeout_disabled_warning)  # idempotent: held once
    armed = bool(timeout) and threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGALRM, _on_alarm) if armed else None
    try:
        try:
            if armed:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            return _mv_body(response, gold, cache)
        finally:
            if armed:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except _ItemTimeout:
        return None, None, "timeout", f"math-verify exceeded {timeout}s"
    except Exception as e:  # surfaced as status "error", never a silent False
        return None, None, "error", f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        if armed:
            signal.signal(signal.SIGALRM, old)


def strict_for(primary: str, response: str, gold: str) -> tuple[bool, str | None]:
    """The strict matcher of ``primary``'s family: the release's strict box for a release grader, else ours."""
    return release_strict_match(response, gold) if primary in RELEASE_GRADERS else strict_match(response, gold)


def mv_input(primary: str, response: str) -> str:
    """What math-verify grades: the release's 300-character window for a release grader, else the response."""
    return release_window(response) if primary in RELEASE_GRADERS else response


def combine(primary: str, mv: MVResult, strict: tuple[bool, str | None]) -> Verdict:
    """The :class:`Verdict` from math-verify's result and the strict matcher's (that of ``primary``'s family)."""
    mv_ok, mv_pred, status, error = mv
    strict_ok, strict_pred = strict
    if primary in ("strict", "release_strict"):
        correct, pred = strict_ok, strict_pred
    else:
        correct = mv_ok is True or (primary in ("either", "release_both") and strict_ok)
        pred = mv_pred if mv_pred is not None else strict_pred
    return Verdict(correct=correct, math_verify=mv_ok, strict=strict_ok, pred=pred, status=status, error=error)


_ONE_PROCESS_CACHE: dict[str, list] = {}


def grade_one(response: str, gold: str, *, primary: str = "math_verify", timeout: float | None = 10.0) -> Verdict:
    """Grade one response in this process (timeout only in the main thread; see :func:`check_math_verify`)."""
    _check_primary(primary)
    mv = check_math_verify(mv_input(primary, response), gold, timeout=timeout, cache=_ONE_PROCESS_CACHE)
    return combine(primary, mv, strict_for(primary, response, gold))


def _check_primary(primary: str) -> None:
    if primary not in PRIMARY_GRADERS:
        raise SteerBenchError(f"unknown primary grader {primary!r}; valid: {list(PRIMARY_GRADERS)}")


def summarize_verdicts(verdicts: Sequence[Verdict]) -> dict[str, float | int]:
    """Counts and rates: ``n``, ``n_timeout``, ``n_error``, ``n_correct``, ``accuracy`` (primary),
    ``math_verify_accuracy`` and ``strict_accuracy`` (over all items; an unfinished math-verify counts as not
    correct), and ``agreement`` of the two graders over the items math-verify finished."""
    n = len(verdicts)
    finished = [v for v in verdicts if v.math_verify is not None]
    return {
        "n": n,
        "n_timeout": sum(v.status == "timeout" for v in verdicts),
        "n_error": sum(v.status == "error" for v in verdicts),
        "n_correct": sum(v.correct for v in verdicts),
        "accuracy": sum(v.correct for v in verdicts) / n if n else math.nan,
        "math_verify_accuracy": sum(v.math_verify is True for v in verdicts) / n if n else math.nan,
        "strict_accuracy": sum(v.strict for v in verdicts) / n if n else math.nan,
        "agreement": sum(v.math_verify == v.strict for v in finished) / len(finished) if finished else math.nan,
    }
