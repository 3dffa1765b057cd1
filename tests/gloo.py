"""Two real gloo ranks in spawned processes, for tests of what the trainer reduces or exchanges across ranks."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class GlooAccelerator:
    """What the trainer uses of an Accelerator (rank, world, gather), over an initialised gloo group."""

    def __init__(self) -> None:
        self.num_processes, self.process_index = dist.get_world_size(), dist.get_rank()

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(t) for _ in range(self.num_processes)]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out)


@contextlib.contextmanager
def gloo_group(rank: int, port: int, world: int = 2) -> Iterator[None]:
    """This process as ``rank`` of a gloo group on localhost; destroyed on exit."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_ranks(worker: Callable[[int, int, Any], None], world: int = 2) -> list[Any]:
    """Spawn ``worker(rank, port, queue)`` on each rank; what the workers put on the queue, sorted (rank first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results
