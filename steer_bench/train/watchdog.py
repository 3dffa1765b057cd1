"""A training job's survival on a cluster: a rank that stops or dies is named and the job ended, a preemption's
SIGTERM ends the run with a checkpoint of the step it was in.

**Heartbeats** (``train.heartbeat_timeout_s``; several ranks only). Every rank's watchdog thread writes a beat — a
counter, its pid, host, step and phase (:attr:`PhaseMeter.where <steer_bench.train.phases.PhaseMeter.where>`) — to
the job's c10d store (torchrun's agent holds it, so it outlives any rank) ten times per timeout, and reads the
other ranks' beats. A peer is *lost* when its process is gone (a peer on this host: known at once) or when its
counter has not moved for ``heartbeat_timeout_s`` (a stopped process, a frozen node, a rank stuck in the kernel on
a dead mount: its thread cannot beat). The watchdog then logs an error naming the peer's rank, pid, host, step and
phase, SIGKILLs the peer if it runs on this host (a stopped process acts on no other signal), and ends its own
process with :data:`EXIT_PEER_LOST`; torchrun's agent then stops every remaining rank. Without it the others wait
in their next collective for ``collective_timeout_s``, and a stopped rank never comes back. A peer that finished or
failed by itself says so in its last beat and is not watched any more (its own error is the one to read).

**Preemption**. SIGTERM — what SLURM sends every process of a job it preempts or requeues, ``KillWait`` seconds
(``GraceTime`` for a preemption) before SIGKILL, and what torchrun's agent forwards — only sets a flag. At the
end of each step the ranks agree whether any of them got it (:meth:`Watchdog.preempted`, one all-reduce); if so
the loop checkpoints that step and stops with :class:`Preempted`, and the requeued job resumes after it. A step
that outlasts the grace is lost; the previous checkpoint stays, as every save is atomic. A SIGTERM that comes
because a peer died (the agent stops the others) makes the thread look at once and end the job as above.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from steer_bench.errors import SteerBenchError
from steer_bench.train.distributed import reduce_across_ranks

log = logging.getLogger(__name__)

EXIT_PEER_LOST = 3
"""Exit status of a rank whose watchdog ended the job because a peer was lost."""
CLOSED = "exited"
"""The phase of a rank's last beat once its run is over (finished, failed or preempted): no longer watched."""


class Preempted(SteerBenchError):
    """SIGTERM reached a rank: the run checkpointed the step it was in and stopped; a new job resumes from it."""


@dataclass(frozen=True)
class Beat:
    """One rank's heartbeat, as the others read it."""

    rank: int
    count: int
    pid: int
    started: str
    """The process's start time (``/proc/<pid>/stat``), so a reused pid is never taken for the rank."""
    host: str
    step: int
    phase: str

    def where(self) -> str:
        return _where(self.step, self.phase)


def _where(step: int, phase: str) -> str:
    return f"step {step}, phase {phase!r}" if step else f"phase {phase!r}"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state code, start time in clock ticks since boot) of process ``pid``; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return fields[0], fields[19]


def _state(beat: Beat) -> str:
    """``running``, ``stopped`` or ``gone`` (no such process, a zombie, or the pid now another process's) of a rank
    on this host."""
    stat = _stat(beat.pid)
    if stat is None or stat[1] != beat.started or stat[0] in "ZX":
        return "gone"
    return "stopped" if stat[0] in "Tt" else "running"


class Watchdog:
    """Heartbeats over the ranks and the SIGTERM flag of one training run (module docstring).

    ``with Watchdog.start(timeout_s) as watchdog:`` in the main thread; the loop sets :attr:`step`, calls
    :meth:`follow` with the run's phase meter and :meth:`preempted` once per step on every rank."""

    _runs = itertools.count()

    def __init__(self, timeout_s: float, *, rank: int = 0, world: int = 1, store: Any = None) -> None:
        self.timeout_s, self.rank, self.world, self.store = timeout_s, rank, world, store
        self.step = 0
        self.sigterm = False
        self._meter: Any = None
        self._count = 0
        self._seen: dict[int, tuple[int, float]] = {}  # peer -> (its count, when it last moved: monotonic)
        self._closed: set[int] = set()
        self._tick = threading.Event()
        self._closing = False
        self._previous: Any = None
        self._thread: threading.Thread | None = None
        pid = os.getpid()
        self._lock = threading.Lock()  # the store's users: the thread, and the main one (phase changes, check_now)
        self._store_error: Exception | None = None
        # this process's identity in every beat (step, phase and count change)
        self._me = Beat(rank, 0, pid, (_stat(pid) or ("", ""))[1], socket.gethostname(), step=0, phase="")

    @classmethod
    def start(cls, timeout_s: float) -> Watchdog:
        """The watchdog of this process, from torchrun's environment: heartbeats when there are several ranks and
        ``timeout_s`` > 0, the SIGTERM flag always."""
        from torch.distributed import PrefixStore, TCPStore

        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        store = None
        if world > 1 and timeout_s > 0 and not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
            log.warning("%d ranks but no MASTER_ADDR/MASTER_PORT (not launched by torchrun): no heartbeats", world)
        elif world > 1 and timeout_s > 0:
            # A client of the store torchrun's agent serves at MASTER_ADDR:MASTER_PORT (the rendezvous's): it lives
            # as long as the job, whichever rank dies. Keys per restart of the agent's worker group and per run of
            # this process (preflight trains twice; every rank starts the same runs in the same order).
            client = TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                is_master=False,
                timeout=timedelta(seconds=max(timeout_s, 30)),
            )
            restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            store = PrefixStore(f"steer-bench/heartbeat/{restart}/{next(cls._runs)}", client)
        watchdog = cls(timeout_s, rank=rank, world=world, store=store)
        if threading.current_thread() is threading.main_thread():  # where Python runs signal handlers
            watchdog._previous = signal.signal(signal.SIGTERM, watchdog._on_sigterm)
        if store is not None:
            watchdog._beat("set-up")
            watchdog._thread = threading.Thread(target=watchdog._run, name="steer-bench-watchdog", daemon=True)
            watchdog._thread.start()
        return watchdog

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def follow(self, meter: Any) -> None:
        """Beat with ``meter``'s phase (a :class:`~steer_bench.train.phases.PhaseMeter`) from now on, at once on
        every change: a rank that stops right after entering a phase is named in it."""
        self._meter = meter
        meter.on_move = self._moved

    def _moved(self, where: str) -> None:
        if self.store is not None and not self._closing:
            self._beat(where)

    def close(self) -> None:
        """Stop beating (telling the peers so) and give SIGTERM its previous handler back."""
        self._closing = True
        self._tick.set()
        if self._thread is not None:
            self._thread.join()
        if self.store is not None and self._store_error is None:
            self._beat(CLOSED)
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    # ---- preemption ----------------------------------------------------------------------------------------
    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.sigterm = True
        where = _where(self.step, self._phase())
        log.warning("rank %d: SIGTERM in %s: stopping after this step, with a checkpoint", self.rank, where)
        self._tick.set()  # a peer that died makes the agent send SIGTERM: look now

    def preempted(self, accelerator: Any) -> bool:
        """Whether any rank got SIGTERM. Collective: every rank calls it at the same point of each step."""
        if accelerator.num_processes == 1:
            return self.sigterm
        return reduce_across_ranks({"sigterm_max": float(self.sigterm)}, accelerator)["sigterm_max"] > 0

    # ---- heartbeats ----------------------------------------------------------------------------------------
    def _phase(self) -> str:
        return self._meter.where if self._meter is not None else "set-up"

    def _write(self, phase: str) -> None:
        me = self._me
        beat = Beat(me.rank, self._count, me.pid, me.started, me.host, step=self.step, phase=phase)
        with self._lock:  # the thread and the main one (a phase change) both write
            self.store.set(f"rank{self.rank}", json.dumps(asdict(beat)))

    def _beat(self, phase: str | None = None) -> None:
        self._count += 1
        try:
            self._write(phase or self._phase())
        except Exception as e:  # the store is unreachable: the agent is gone and the job with it
            self._store_failed(e)

    def _store_failed(self, error: Exception) -> None:
        if self._store_error is None:
            self._store_error = error
            log.warning(
                "rank %d: the heartbeat store failed (%s: %s); not watching the other ranks any more",
                self.rank,
                type(error).__name__,
                error,
            )
        self._closing = True
        self._tick.set()

    def _run(self) -> None:
        interval = self.timeout_s / 10
        while True:
            self._tick.wait(interval)
            self._tick.clear()
            if self._closing:
                return
            self._beat()
            try:
                lost = self.lost_peers()
            except Exception as e:
                self._store_failed(e)
                return
            if lost:
                self._end_job(lost)

    def lost_peers(self) -> list[tuple[Beat, str, str]]:
        """The peers that stopped or died: (last beat, what happened, why it is known). A peer is watched from its
        first beat."""
        with self._lock:
            return self._lost_peers(time.monotonic())

    def _lost_peers(self, now: float) -> list[tuple[Beat, str, str]]:
        lost = []
        for rank in range(self.world):
            key = f"rank{rank}"
            if rank == self.rank or rank in self._closed or not self.store.check([key]):
                continue
            beat = Beat(**json.loads(self.store.get(key)))
            if beat.phase == CLOSED:
                self._closed.add(rank)
                continue
            count, moved = self._seen.get(rank, (-1, now))
            if beat.count != count:
                self._seen[rank], moved = (beat.count, now), now
            here = beat.host == self._me.host
            state = _state(beat) if here else "unknown"
            if state == "gone":
                lost.append((beat, "died", "its process is gone"))
            elif now - moved > self.timeout_s:
                why = f"no heartbeat for {now - moved:.1f} s (heartbeat_timeout_s={self.timeout_s:g}; process {state})"
                lost.append((beat, "stopped answering", why))
        return lost

    def _end_job(self, lost: list[tuple[Beat, str, str]]) -> None:
        for beat, what, why in lost:
            log.error(
                "rank %d (pid %d on %s) %s in %s: %s. Ending the job (seen by rank %d); the next one resumes from the "
                "last checkpoint",
                beat.rank,
                beat.pid,
                beat.host,
                what,
                beat.where(),
                why,
                self.rank,
            )
            if beat.host == self._me.host and _state(beat) != "gone":
                os.kill(beat.pid, signal.SIGKILL)  # stopped: SIGTERM would wait until it is continued
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_PEER_LOST)  # the main thread may be blocked in a collective: no exception can reach it

    def check_now(self) -> None:
        """On a failed collective: if a peer is lost, end the job naming it (instead of gloo's or NCCL's error)."""
        if self.store is None or self._store_error is not None:
            return
        try:
            lost = self.lost_peers()
        except Exception as e:  # no store: the original error is the one to report
            log.warning("rank %d: could not read the other ranks' heartbeats (%s)", self.rank, e)
            return
        if lost:
            self._end_job(lost)
