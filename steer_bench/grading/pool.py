"""The grading pool: :mod:`steer_bench.grading.verdict`'s graders in worker processes with a per-item wall-clock
timeout; a worker that its own alarm cannot stop is killed and replaced (see that module's docstring)."""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import signal
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

from steer_bench.errors import SteerBenchError
from steer_bench.grading.verdict import (
    MVResult,
    Verdict,
    _check_primary,
    check_math_verify,
    combine,
    mv_input,
    strict_for,
)

log = logging.getLogger(__name__)

KILL_GRACE_S = 2.0  # extra seconds before the parent kills a worker that its own alarm did not stop
STARTUP_TIMEOUT_S = 120.0
_READY = "ready"


# --------------------------------------------------------------------------------------------------- the pool


def _worker_main(conn: Connection, timeout: float) -> None:
    """Worker loop: receive chunks of (index, response, gold), send back (index, MVResult) per item."""
    # A preemption sends SIGTERM to every process of the job; the parent finishes its step first, so a worker that
    # died of it mid-grade would turn a verdict into an error. The parent ends the worker (None, or SIGKILL), and
    # when the parent is gone the worker's recv() ends on EOF.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cache: dict[str, list] = {}
    check_math_verify("\\boxed{1}", "1", timeout=None, cache={})  # warm-up: regex and ANTLR set-up
    try:
        conn.send(_READY)
        while (chunk := conn.recv()) is not None:
            for index, response, gold in chunk:
                conn.send((index, check_math_verify(response, gold, timeout=timeout, cache=cache)))
    except (EOFError, BrokenPipeError):  # the parent died (killed with its job): nobody is left to answer
        return


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
            self._ctx.set_forkserver_preload(["steer_bench.grading", "math_verify"])  # workers fork with it imported
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
