"""Data-parallel helpers for the trainer: global loss denominators, mini-batch statistics and metrics over
ranks, a parameter checksum per rank, and FSDP2 driven directly (``train.shard: fsdp2``). No-ops (or cheap) in a
single process."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator


def global_totals(response_mask: torch.Tensor, accelerator: Accelerator) -> dict[str, int]:
    """Valid tokens and non-empty sequences of a mini-batch over all ranks: the loss denominators."""
    local = torch.tensor(
        [response_mask.sum().item(), (response_mask.sum(-1) > 0).sum().item()],
        dtype=torch.float64,
        device=accelerator.device,
    )
    total = accelerator.reduce(local, reduction="sum").cpu()
    return {"batch_tokens": int(total[0]), "batch_seqs": int(total[1])}


def sync_mini_stats(extra: dict[str, Any], accelerator: Accelerator) -> dict[str, Any]:
    """Make mini-batch statistics global over ranks: STEER's |Ω| range (min of mins, max of maxima — exact
    for ``k_norm: max``; for a quantile, the max over ranks' quantiles) and fork tokens' entropy threshold
    (mean over ranks' quantiles: an approximation, documented)."""
    if accelerator.num_processes == 1 or not extra:
        return extra
    out = dict(extra)
    if "omega_range" in extra:
        lo, hi = extra["omega_range"]
        lo_t = accelerator.gather(torch.tensor([lo], dtype=torch.float64, device=accelerator.device))
        hi_t = accelerator.gather(torch.tensor([hi], dtype=torch.float64, device=accelerator.device))
        out["omega_range"] = (float(lo_t.min()), float(hi_t.max()))
    if "entropy_threshold" in extra:
        thr = torch.tensor([extra["entropy_threshold"]], dtype=torch.float64, device=accelerator.device)
        out["entropy_threshold"] = float(accelerator.gather(thr).mean())
    return out


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
