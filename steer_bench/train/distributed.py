"""The launch and the distribution of the model: the Accelerator (launch only), FSDP2 with its mixed-precision
policy driven by the trainer itself (``train.shard: fsdp2``, the same code on CPU and GPU), and the data-parallel
helpers: global loss denominators, the all-reduce of mini-batch statistics, metrics over ranks, a parameter checksum
per rank. No-ops (or cheap) in a single process."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator

from steer_bench.algos import Reduce, local_reduce
from steer_bench.algos.base import ReduceOp
from steer_bench.config.run import TrainConfig
from steer_bench.errors import SteerBenchError
from steer_bench.sharding import fsdp_mesh, mixed_precision_policy, shard_blocks


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
    zero = torch.zeros((), dtype=torch.float64)  # the sum's start (0 + Σ: the same float64 additions as before)
    total = sum(((p.full_tensor() if isinstance(p, DTensor) else p).double().abs().sum() for p in params), zero)
    return accelerator.gather(total.reshape(1).to(accelerator.device)).cpu().tolist()


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The launch as Accelerate sees it: processes, devices and the process group, nothing more.

    Never autocast and never Accelerate's FSDP plugin: both engage on CUDA only (autocast also converts the outputs
    to float32, so the (B, T, V) logits would be float32 on GPU and bf16 nowhere), so the trainer owns precision and
    sharding itself (:func:`shard_fsdp2`), and CPU ranks run the GPU's code. The process group's timeout is
    ``collective_timeout_s`` (how long ranks wait in a barrier while the main process writes a checkpoint)."""
    from accelerate import DistributedType, InitProcessGroupKwargs

    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.collective_timeout_s))
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no", kwargs_handlers=[timeout])
    launch_only = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    if accelerator.distributed_type not in launch_only:
        raise SteerBenchError(
            f"the accelerate config launches {accelerator.distributed_type.value}: the trainer shards and casts the "
            "model itself (train.shard: fsdp2, train.mixed_precision), so the accelerate config must only launch "
            "processes (distributed_type MULTI_GPU, or MULTI_CPU; see configs/accelerate/fsdp_8gpu.yaml)"
        )
    return accelerator


def prepare(accelerator: Accelerator, model: Any, optimizer: Any, scheduler: Any, *, shard: str) -> tuple[Any, ...]:
    """``accelerator.prepare`` (DDP over several ranks) for ``shard == "ddp"``, or for ``"fsdp2"`` only the
    optimizer and scheduler: the model was sharded by :func:`shard_fsdp2` (before the optimizer was built)."""
    if shard == "ddp":
        return accelerator.prepare(model, optimizer, scheduler)
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    return model, optimizer, scheduler


def ensure_process_group(accelerator: Accelerator, timeout_s: int) -> None:
    """FSDP2 needs a device mesh, hence a process group, even in one process: a one-rank group over an in-memory
    store (no port), so one GPU runs the same sharded, mixed-precision code as eight."""
    dist = torch.distributed
    if not dist.is_initialized():
        backend = "nccl" if accelerator.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timedelta(seconds=timeout_s)
        )


def shard_fsdp2(model: Any, accelerator: Accelerator, *, mixed_precision: str, replicas: int) -> Any:
    """``fully_shard`` every transformer block (the classes transformers lists in ``_no_split_modules``), then the
    root, over :func:`fsdp_mesh`, with :func:`mixed_precision_policy`. The same call on CPU (gloo) and GPU (NCCL),
    in one process (a one-rank mesh) and in many. FSDP2 moves each module's parameters to the mesh's device as it
    shards them, so at most one block is ever whole on the device. Gradients are reduce-scattered (and, under
    HSDP, all-reduced across replicas) with an average over all ranks, as DDP's all-reduce, so the trainer's loss
    scaling is the same; parameters, gradients and AdamW state are float32 DTensor shards (the weight sync and
    checkpoints gather them one tensor at a time)."""
    mesh = fsdp_mesh(accelerator.device.type, accelerator.num_processes, replicas)
    return shard_blocks(model, mesh, mixed_precision_policy(mixed_precision))
