"""The training watchdog's two rules on real processes, in a second: a peer whose heartbeat stops moving (a stopped
process) or whose process is gone is lost, a peer that said it exited is not; SIGTERM only sets the flag the loop
turns into a checkpoint. The whole path, through SLURM and torchrun, is tests/faults/test_cluster.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, replace
from types import SimpleNamespace

from torch.distributed import HashStore

from steer_bench.train.watchdog import CLOSED, Beat, Watchdog, _stat


def test_a_stopped_then_dead_peer_is_lost_and_one_that_exited_is_not() -> None:
    store = HashStore()
    watchdog = Watchdog(0.5, rank=0, world=2, store=store)
    peer = subprocess.Popen(["sleep", "60"])
    try:
        beat = Beat(rank=1, count=1, pid=peer.pid, started=_stat(peer.pid)[1], host=socket.gethostname(), step=2,
                    phase="update")  # fmt: skip
        store.set("rank1", json.dumps(asdict(beat)))
        assert watchdog.lost_peers() == []
        time.sleep(0.3)
        store.set("rank1", json.dumps(asdict(replace(beat, count=2))))  # it beats: the clock starts again
        time.sleep(0.3)
        assert watchdog.lost_peers() == []
        os.kill(peer.pid, signal.SIGSTOP)
        time.sleep(0.6)
        ((seen, what, why),) = watchdog.lost_peers()
        assert (seen.rank, seen.where(), what) == (1, "step 2, phase 'update'", "stopped answering")
        assert "heartbeat_timeout_s=0.5; process stopped" in why
        peer.kill()
        peer.wait()
        ((_, what, why),) = watchdog.lost_peers()
        assert (what, why) == ("died", "its process is gone")
        store.set("rank1", json.dumps(asdict(replace(beat, phase=CLOSED))))
        assert watchdog.lost_peers() == []  # finished or failed by itself: its own error is the one to read
    finally:
        peer.kill()
        peer.wait()


def test_sigterm_only_asks_for_a_checkpoint_at_the_end_of_the_step() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    watchdog = Watchdog.start(300)  # one process: no heartbeats, the SIGTERM flag
    try:
        one_rank = SimpleNamespace(num_processes=1)
        assert not watchdog.preempted(one_rank)
        os.kill(os.getpid(), signal.SIGTERM)  # the process lives on
        assert watchdog.preempted(one_rank)
    finally:
        watchdog.close()
    assert signal.getsignal(signal.SIGTERM) == previous
