"""Data-parallel helpers for the trainer: global loss denominators, the all-reduce of mini-batch statistics, metrics
over ranks, a parameter checksum per rank, and FSDP2 driven directly (``train.shard: fsdp2``). No-ops (or cheap) in a
single process."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator

from steer_bench.algos import Reduce, local_reduce
from steer_bench.algos.base import ReduceOp


def global_totals(response_mask: torch.Tensor, accelerator: Accelerator) -> dict[str, int]:
    """Valid tokens and non-empty sequences of a mini-batch over all ranks: the loss denominators."""
    local = torch.tensor(
        [response_mask.sum().item(), (response_mask.sum(-1) > 0).sum().item()],
        dtype=torch.float64,
        device=accelerator.device,
    )
    total = accelerator.reduce(local, reduction="sum").cpu()
    return {"batch_tokens": int(total[0]), "batch_seqs": int(total[1])}


def rank_reduce(accelerator: Accelerator) -> Reduce:
    """The all-reduce a method's mini-batch statistics go through (``reduce(x, op)``, op sum | min | max)."""
    if accelerator.num_processes == 1:
        return local_reduce

    def reduce(x: torch.Tensor, op: ReduceOp) -> torch.Tensor:
        gathered = accelerator.gather(x.reshape(1, *x.shape))  # (world, ...)
        return {"sum": gathered.sum, "min": gathered.amin, "max": gathered.amax}[op](0)

    return reduce


def reduce_across_ranks(metrics: dict[str, float], accelerator: Accelerator) -> dict[str, float]:
    """Mean over ranks (``_max``/``_min`` keys: max/min). Every rank holds the same keys in the same order."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    gathered = accelerator.gather(values[None]).cpu()  # (world, K)
    out = {}
    for i, k in enumerate(keys):
        col = gathered[:, i]
        out[k] = float(col.max() if k.endswith("_max") else col.min() if k.endswith("_min") else col.nanmean())
    return out


def param_checksums(model: Any, accelerator: Accelerator) -> list[float]:
    """Σ|θ| of the trained parameters on every rank: equal on all ranks iff data-parallel training stayed in sync
    (FSDP2 shards are gathered first, so there it checks the gather)."""
    from torch.distributed.tensor import DTensor

    params = [p.detach() for p in accelerator.unwrap_model(model).parameters()]
    total = sum((p.full_tensor() if isinstance(p, DTensor) else p).double().abs().sum() for p in params)
    return accelerator.gather(total.reshape(1).to(accelerator.device)).cpu().tolist()


def prepare(accelerator: Accelerator, model: Any, optimizer: Any, scheduler: Any, *, shard: str) -> tuple[Any, ...]:
    """``accelerator.prepare`` (DDP, or FSDP from the accelerate config), or for ``shard == "fsdp2"`` only the
    optimizer and scheduler: the model was sharded by :func:`shard_fsdp2` (before the optimizer was built)."""
    if shard == "accelerate":
        return accelerator.prepare(model, optimizer, scheduler)
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    return model, optimizer, scheduler


def shard_fsdp2(model: Any, accelerator: Accelerator) -> Any:
    """FSDP2 without Accelerate's plugin (which does not engage on CPU): ``fully_shard`` every decoder layer, then
    the root, over a 1-D mesh of all ranks. Gradients are reduce-scattered with an average over ranks, as DDP's
    all-reduce, so the trainer's loss scaling is the same; parameters, gradients and AdamW state are DTensor
    shards (the weight sync and checkpoints gather them one tensor at a time)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if accelerator.num_processes == 1:
        return model
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    model.to(accelerator.device)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model
