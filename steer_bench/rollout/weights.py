"""The trainer's full weights, one tensor at a time: what a rollout engine's weight sync consumes.

One function for every launch mode. A single process or DDP (Accelerate's ``MULTI_CPU`` / ``MULTI_GPU``) holds
plain tensors; FSDP2 (``fully_shard``, Accelerate's ``fsdp_version: 2``) holds ``DTensor`` shards, gathered here
with ``full_tensor()`` — an all-gather over the shard mesh, so **every rank must consume the iterator to the
end, in the same order** (``state_dict()`` order is the module order, the same on every rank). Only one gathered
tensor exists at a time on the producer's side; what the consumer keeps alive is its business, and
:class:`SyncMeter` measures it (vLLM's layer-wise reload buffers the tensors of one of *its* layers — e.g.
Qwen2's ``gate_proj`` + ``up_proj`` for the fused ``gate_up_proj`` — until that layer is complete).

FSDP1 (``FullyShardedDataParallel`` with flat parameters) is refused: its ``state_dict()`` needs a
state-dict-type context and gathers the whole model at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from steer_bench.errors import SteerBenchError


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_weights(
    model: torch.nn.Module, *, device: str | torch.device | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every ``state_dict()`` entry, gathered (FSDP2) or copied (plain), one at a time.

    Each yielded tensor is a new tensor the caller owns (a snapshot: training the model afterwards does not change
    it). ``device``: where to put it (None: where the parameter lives; ``"cpu"`` for the disk sync, so the device
    holds at most one gathered tensor).
    """
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise SteerBenchError(
            "weight sync: FSDP1 (FullyShardedDataParallel) is not supported; use FSDP2 (fsdp_version: 2, "
            "torch.distributed.fsdp.fully_shard), whose parameters are gathered one tensor at a time"
        )
    for name, t in model.state_dict().items():
        out = t.detach().full_tensor() if _is_dtensor(t) else t.detach().clone()
        if device is not None:
            out = out.to(device)
        yield name, out
        del out  # before the next gather: the producer holds at most one full tensor


@dataclass
class SyncMeter:
    """Wraps a weights iterator and measures the memory its tensors hold while the consumer runs.

    ``peak_bytes``: the most bytes of yielded tensors alive at once (tracked with ``weakref.finalize``, so it
    counts what the consumer still references, not what the allocator has cached); ``largest_bytes``: the
    largest single tensor; ``total_bytes``: the whole model; ``tensors``: how many were yielded.
    """

    peak_bytes: int = 0
    largest_bytes: int = 0
    total_bytes: int = 0
    tensors: int = 0
    _live: list[int] = field(default_factory=lambda: [0])

    def wrap(self, weights: Iterator[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in weights:
            size = t.numel() * t.element_size()
            self._live[0] += size
            weakref.finalize(t, self._freed, size)
            self.peak_bytes = max(self.peak_bytes, self._live[0])
            self.largest_bytes = max(self.largest_bytes, size)
            self.total_bytes += size
            self.tensors += 1
            yield name, t
            del t

    def _freed(self, size: int) -> None:
        self._live[0] -= size

    def as_dict(self) -> dict[str, int]:
        return {
            "peak_bytes": self.peak_bytes,
            "largest_bytes": self.largest_bytes,
            "total_bytes": self.total_bytes,
            "tensors": self.tensors,
        }
