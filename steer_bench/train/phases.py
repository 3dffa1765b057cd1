"""Wall time and peak memory of each phase of a run (start-up, collect, update, validation, checkpoint).

The device's memory is what counts against a card: on CUDA the memory in use on the device (``mem_get_info``:
torch's allocations, vLLM's KV cache and weights, NCCL's buffers — everything on it), sampled every 20 ms during a
phase by a thread, beside torch's own peak; on CPU the process's resident set, sampled the same way. Step metrics
``mem/<phase>_mb_max`` (and ``mem/<phase>_torch_mb_max`` on CUDA); the whole run's table is in ``train.done``
(``phases``), which ``steer-bench preflight`` reads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _in_use_bytes() -> int:
    """Memory in use now: the whole CUDA device's, or this process's resident set."""
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return total - free
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass
class PhaseStats:
    seconds: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    torch_peak_mb: float = 0.0

    def as_dict(self) -> dict[str, float]:
        s = self.seconds
        return {
            "count": len(s),
            "seconds_mean": sum(s) / len(s),
            "seconds_max": max(s),
            "peak_mb": self.peak_mb,
            "torch_peak_mb": self.torch_peak_mb,
        }


class PhaseMeter:
    """``with meter.phase("update"): ...`` records the phase's wall time and peak memory."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.stats: dict[str, PhaseStats] = {}
        self.last: dict[str, float] = {}  # this step's peaks per phase, for the step's metrics
        self.where = "set-up"
        """The phase this process is in (``after <phase>`` between two): what a rank's heartbeat reports
        (:mod:`steer_bench.train.watchdog`), which sets ``on_move`` to hear of every change at once."""
        self.on_move: Callable[[str], None] | None = None

    @contextlib.contextmanager
    def phase(self, name: str, *, step_metric: bool = True) -> Iterator[None]:
        """``step_metric``: also report the peak in this step's metrics (start-up and checkpoints only go to
        :meth:`summary`: a checkpoint is written after its step's metrics)."""
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        peak = [_in_use_bytes()]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(self.interval_s):
                peak[0] = max(peak[0], _in_use_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        self._move(name)
        try:
            yield
        finally:
            self._move(f"after {name}")
            done.set()
            sampler.join()
            peak[0] = max(peak[0], _in_use_bytes())
            stats = self.stats.setdefault(name, PhaseStats())
            stats.seconds.append(time.perf_counter() - t0)
            stats.peak_mb = max(stats.peak_mb, peak[0] / 2**20)
            torch_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
            stats.torch_peak_mb = max(stats.torch_peak_mb, torch_peak)
            if step_metric:
                self.last[f"mem/{name}_mb_max"] = peak[0] / 2**20
                if cuda:
                    self.last[f"mem/{name}_torch_mb_max"] = torch_peak

    def _move(self, where: str) -> None:
        self.where = where
        if self.on_move is not None:
            self.on_move(where)

    def step_metrics(self) -> dict[str, float]:
        """This step's peaks (maxima over ranks once reduced), then cleared."""
        out, self.last = self.last, {}
        return out

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: s.as_dict() for name, s in self.stats.items()}
