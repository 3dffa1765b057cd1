"""FSDP2 as the trainer drives it, in torch alone (importable where only torch is installed: benchmarks/gpu_check.py
runs this code on a GPU machine without the rest of the project's dependencies).

One call shards a transformers model the same way on CPU (gloo) and GPU (NCCL), in one process (a one-rank mesh)
and in many: ``fully_shard`` on every transformer block, then on the root, with an explicit precision policy.
"""

from __future__ import annotations

from typing import Any

import torch

from steer_bench.errors import SteerBenchError


def mixed_precision_policy(mixed_precision: str) -> Any:
    """bf16: compute (all-gathered parameters, activations, logits) in bf16, gradients reduced in float32 into
    the float32 master shards — verl's FSDP2 policy and the release's (``reduce_dtype fp32``); no: float32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if mixed_precision == "bf16":
        bf16 = torch.bfloat16
        return MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=torch.float32, output_dtype=bf16)
    return MixedPrecisionPolicy()


def fsdp_mesh(device_type: str, world: int, replicas: int) -> Any:
    """A 1-D mesh over every rank (FSDP), or (replicas, world / replicas) for HSDP: shard within groups of
    consecutive ranks (a node), replicate across them."""
    from torch.distributed.device_mesh import init_device_mesh

    if replicas == 1:
        return init_device_mesh(device_type, (world,))
    return init_device_mesh(device_type, (replicas, world // replicas), mesh_dim_names=("replicate", "shard"))


def shard_blocks(model: Any, mesh: Any, policy: Any) -> Any:
    """``fully_shard`` every transformer block (the classes transformers lists in ``_no_split_modules``), then the
    root, over ``mesh`` with ``policy``. FSDP2 moves each module's parameters to the mesh's device as it shards
    them, so at most one block is ever whole on the device."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in blocks]
    if not layers:
        raise SteerBenchError(f"shard: fsdp2: {type(model).__name__} names no transformer block (_no_split_modules)")
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def reshard(model: Any) -> None:
    """Put every FSDP2 module's parameters back into their sharded state (a no-op for an unsharded model).

    FSDP2 leaves the root's parameters (embeddings, final norm, LM head) unsharded after a forward that no backward
    follows (a no-grad pass: the π_old pass, the sync's probe), and ``model.parameters()`` then yields those
    unsharded tensors, not the sharded ones the optimizer holds. Anything that matches parameters to optimizer
    state (DCP's ``get_state_dict``) or reads sharded gradients must reshard first, and the root's gathered copy
    is memory held for nothing until then."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
