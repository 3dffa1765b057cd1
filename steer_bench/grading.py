"""Answer grading: math-verify and a strict matcher, run in a process pool with a per-item wall-clock timeout.

Two graders, both recorded in every :class:`Verdict`:

- ``math_verify``: ``verify(parse("\\boxed{<gold>}"), parse(response))`` — gold wrapped before parsing (a bare
  ``2^{1009}`` parses as 2) and passed first (math-verify is not symmetric).
- ``strict``: the last ``\\boxed{...}`` in the last 300 characters of the response (STEER's window), else the
  last ``Answer: ...`` line there, normalised (:func:`normalize_answer`) and compared for exact equality
  with the normalised gold.

The primary grader (``Verdict.correct``) is configurable: ``math_verify`` (default), ``strict``, ``either``
(strict OR math-verify), and the release's ``release_strict`` / ``release_both`` (:mod:`steer_bench.release_grading`:
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

import contextlib
import logging
import math
import multiprocessing as mp
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from math_verify import parse, verify

from steer_bench.errors import SteerBenchError
from steer_bench.release_grading import RELEASE_GRADERS, last_boxed, release_strict_match, release_window

log = logging.getLogger(__name__)

PRIMARY_GRADERS = ("math_verify", "strict", "either", *RELEASE_GRADERS)
STRICT_WINDOW = 300  # characters at the end of a response the strict matcher looks at (STEER/DAPO)
KILL_GRACE_S = 2.0  # extra seconds before the parent kills a worker that its own alarm did not stop
STARTUP_TIMEOUT_S = 120.0
_GOLD_CACHE_MAX = 20_000
_READY = "ready"

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


# --------------------------------------------------------------------------------------------------- the pool


def _worker_main(conn: Connection, timeout: float) -> None:
    """Worker loop: receive chunks of (index, response, gold), send back (index, MVResult) per item."""
    cache: dict[str, list] = {}
    check_math_verify("\\boxed{1}", "1", timeout=None, cache={})  # warm-up: regex and ANTLR set-up
    conn.send(_READY)
    while (chunk := conn.recv()) is not None:
        for index, response, gold in chunk:
            conn.send((index, check_math_verify(response, gold, timeout=timeout, cache=cache)))


class _Worker:
    def __init__(self, ctx: mp.context.BaseContext, timeout: float) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, timeout), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.started = time.monotonic()
        self.items: deque[int] = deque()  # indices sent and not yet answered, in order
        self.progress = 0.0  # when the current item started (last send or answer)

    def send(self, chunk: list[tuple[int, str, str]]) -> None:
        self.conn.send(chunk)  # raises BrokenPipeError if the worker died while idle
        self.items.extend(i for i, _, _ in chunk)
        self.progress = time.monotonic()

    def stop(self, *, kill: bool) -> None:
        if kill:
            self.proc.kill()
        else:
            with contextlib.suppress(OSError):  # already gone: joined below
                self.conn.send(None)
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _distinct(items: list[tuple[str, str]], dedupe: bool) -> tuple[list[tuple[str, str]], list[int]]:
    """(distinct items in first-seen order, each item's index among them); every item when not ``dedupe``."""
    if not dedupe:
        return items, list(range(len(items)))
    first: dict[tuple[str, str], int] = {}
    slot = [first.setdefault(p, len(first)) for p in items]
    return list(first), slot


class Grader:
    """A persistent pool of grading processes (a context manager; not thread-safe).

    ``grade(responses, golds)`` returns one :class:`Verdict` per response, in order. Identical (response, gold)
    pairs are graded once and share the verdict — exact, as both graders are functions of the pair (a timeout,
    which depends on the machine's load, is shared too, as grading the copy again would most likely repeat it).
    Items are grouped by gold so each distinct gold goes to one worker, which parses it once (and caches it
    across calls).
    ``restarts`` counts workers killed for exceeding the timeout or found dead.
    """

    def __init__(
        self, *, workers: int = 2, timeout: float = 10.0, primary: str = "math_verify", start_method="forkserver"
    ) -> None:
        _check_primary(primary)
        if workers < 1 or timeout <= 0:
            raise SteerBenchError(f"grader needs workers >= 1 and timeout > 0, got {workers}, {timeout}")
        self.workers, self.timeout, self.primary = workers, float(timeout), primary
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(["steer_bench.grading"])  # workers fork with math-verify imported
        self._pool: list[_Worker] = []
        self.restarts = 0
        self._startup_kills = 0  # workers killed before they were ready, since the last one that started

    def __enter__(self) -> Grader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(self._ctx, self.timeout))

    def close(self, *, kill: bool = False) -> None:
        for w in self._pool:
            w.stop(kill=kill)
        self._pool = []

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring)."""
        return [w.proc.pid for w in self._pool]

    def grade(
        self, responses: Sequence[str], golds: Sequence[str], *, primary: str | None = None, dedupe: bool = True
    ) -> list[Verdict]:
        """Verdicts under the pool's primary grader, or under ``primary`` for this call (e.g. validation's).
        ``dedupe=False`` grades every item, duplicates included (for tests and benchmarks)."""
        primary = primary or self.primary
        _check_primary(primary)
        if len(responses) != len(golds):
            raise SteerBenchError(f"grade: {len(responses)} responses but {len(golds)} golds")
        unique, slot = _distinct(list(zip(responses, golds, strict=True)), dedupe)
        # math-verify sees mv_input(response): a release grader's window can make distinct responses one input.
        mv_unique, mv_slot = _distinct([(mv_input(primary, r), g) for r, g in unique], dedupe)
        self.start()
        try:
            mv = self._run_math_verify([r for r, _ in mv_unique], [g for _, g in mv_unique])
        except BaseException:  # e.g. Ctrl-C mid-call: in-flight answers must not leak into the next call
            self.close(kill=True)
            raise
        verdicts = [
            combine(primary, mv[j], strict_for(primary, r, g)) for (r, g), j in zip(unique, mv_slot, strict=True)
        ]
        return [verdicts[i] for i in slot]

    def _chunks(self, golds: list[str]) -> deque[list[int]]:
        """Indices grouped by gold (whole groups per chunk), about four chunks per worker."""
        groups: dict[str, list[int]] = {}
        for i, g in enumerate(golds):
            groups.setdefault(g, []).append(i)
        target = max(1, min(64, math.ceil(len(golds) / (4 * self.workers))))
        chunks: deque[list[int]] = deque([[]])
        for idx in groups.values():
            if len(chunks[-1]) >= target:
                chunks.append([])
            chunks[-1].extend(idx)
        return deque(c for c in chunks if c)

    def _run_math_verify(self, responses: list[str], golds: list[str]) -> list[MVResult]:
        results: list[MVResult | None] = [None] * len(responses)
        pending = self._chunks(golds)
        remaining = len(responses)
        while remaining:
            for w in list(self._pool):
                if w.ready and not w.items and pending:
                    chunk = pending.popleft()
                    try:
                        w.send([(i, responses[i], golds[i]) for i in chunk])
                    except OSError:  # died while idle (e.g. the OOM killer): replace it, the chunk goes back
                        pending.appendleft(chunk)
                        self._replace(w, pending, results, "error", "grading worker died while idle")
            for conn in wait([w.conn for w in self._pool], timeout=0.1):
                w = next(w for w in self._pool if w.conn is conn)
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    remaining -= self._replace(w, pending, results, "error", "grading worker died")
                    continue
                if msg == _READY:
                    w.ready, self._startup_kills = True, 0
                    continue
                index, result = msg
                results[index] = result
                w.items.popleft()
                w.progress = time.monotonic()
                remaining -= 1
            remaining -= self._check_deadlines(pending, results)
        return results  # type: ignore[return-value]

    def _check_deadlines(self, pending: deque[list[int]], results: list[MVResult | None]) -> int:
        now, done = time.monotonic(), 0
        for w in list(self._pool):
            if w.items and now - w.progress > self.timeout + KILL_GRACE_S:
                done += self._replace(w, pending, results, "timeout", f"killed after {self.timeout}s + grace")
            elif not w.ready and now - w.started > STARTUP_TIMEOUT_S:
                raise SteerBenchError(f"grading worker did not start within {STARTUP_TIMEOUT_S}s")
        return done

    def _replace(self, w: _Worker, pending: deque[list[int]], results: list, status: str, error: str) -> int:
        """Kill ``w``, give its current item ``status``, re-queue the rest of its chunk, start a new worker."""
        if not w.ready:  # died before its first message: a kill from outside (exit code < 0) is retried
            w.proc.join(timeout=1)
            self._startup_kills += 1
        if not w.ready and not (w.proc.exitcode is not None and w.proc.exitcode < 0 and self._startup_kills <= 3):
            raise SteerBenchError(
                f"grading worker died during start-up (exit code {w.proc.exitcode}); with start methods "
                "'forkserver'/'spawn' the main script must be a file whose top level is guarded by "
                "`if __name__ == '__main__':` (not stdin)"
            )
        w.stop(kill=True)
        self.restarts += 1
        log.warning("grading worker replaced (%s: %s)", status, error)
        self._pool[self._pool.index(w)] = _Worker(self._ctx, self.timeout)
        if not w.items:
            return 0
        results[w.items.popleft()] = (None, None, status, error)
        if w.items:
            pending.appendleft(list(w.items))
        return 1
