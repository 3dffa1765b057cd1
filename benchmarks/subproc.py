"""Run a command as a fresh process and measure it: wall time from start to exit, and peak memory.

Shared by the benchmarks that compare whole processes (``vs_trl.py``, ``miniature_engines.py``). Peak memory is
reported twice: ``max_rss_mb``, the kernel's high-water mark of the process (``ru_maxrss`` from ``wait4`` on its
pid, so each run gets its own number, not the maximum over all children so far; it covers the children that
process reaped as a maximum, not a sum; and it is never below this launching process's own high-water mark at the
launch — the kernel copies the address space's high-water mark at fork and carries it across ``exec``, so a
launcher that once held 3 GiB and freed it floors every child at 3 GiB: ``launcher_peak_mb`` in the result, its
VmHWM; keep the launcher small), and
``tree_rss_mb``, the largest sum of the RSS of the process and all its descendants (grading workers, vLLM's
engine process) seen by sampling ``/proc`` every ``sample_s`` seconds — a lower bound of the true tree peak,
and an over-count where forked processes share pages.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread or process ended while we looked
            continue
    return out


def rss_mb(pid: int | str = "self") -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB


def peak_rss_mb() -> float:
    """This process's high-water mark of resident memory (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("/proc/self/status has no VmHWM line")


def tree_rss_mb(pid: int) -> float:
    """Sum of the resident set sizes (MiB) of ``pid`` and all its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += rss_mb(p)
        except OSError:
            continue
        todo += _children(p)
    return total


def timed_run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log: Path,
    sample_s: float = 0.25,
) -> dict[str, Any]:
    """Run ``cmd`` to completion (stdout and stderr to ``log``); raise with the log's tail if it fails."""
    peak, launcher = [0.0], peak_rss_mb()
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd, stdout=fh, stderr=fh)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(sample_s):
                peak[0] = max(peak[0], tree_rss_mb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: keep Popen from waiting again
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}; the end of {log}:\n{tail}")
    return {
        "wall_s": wall,
        "max_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "tree_rss_mb": peak[0],
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "launcher_peak_mb": launcher,  # the floor of max_rss_mb (see the module doc)
    }
