"""Checkpoints: an HF model folder (loadable by eval, vLLM, `from_pretrained`) plus, for ``last``, the trainer
state. Written atomically: a run killed mid-save keeps its previous checkpoint intact.

Sharded resume: every rank writes its own ``trainer_state/rank<r>.pt`` (optimizer state, scheduler state, RNG
states) into the checkpoint's temporary folder before the main process moves it into place. Under DDP the
ranks' optimizer states are equal; under FSDP2 each rank holds its own shard (DTensor states, saved and loaded
per rank with ``torch.save``/``torch.load``), so a resume must give every rank its own file back. The world size
is recorded in ``state.json``; resuming with another one is an error (a shard cannot be re-split here). The ranks
share the checkpoint folder, so on several nodes it must be on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from steer_bench import files
from steer_bench.errors import SteerBenchError

TRAINER_STATE = "trainer_state"
"""Folder of the per-rank trainer states."""
LEGACY_TRAINER_STATE = "trainer_state.pt"
"""Single-file trainer state of older checkpoints (rank 0's optimizer only): resumable in one process only."""


@dataclass
class TrainState:
    """Where a run is, besides weights and optimizer state."""

    step: int = 0
    mlflow_run_id: str | None = None
    best_metric: float | None = None
    best_step: int | None = None
    world_size: int = 1
    """Processes that wrote the checkpoint (one trainer-state file each)."""
    entropy_coef: float | None = None
    """The adaptive entropy coefficient for the next step (``loss.adaptive_entropy``); None: not started."""


def rank_file(path: Path, rank: int) -> Path:
    return path / TRAINER_STATE / f"rank{rank}.pt"


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(
    path: Path,
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    state: TrainState,
    *,
    optimizer: Any = None,
    scheduler: Any = None,
) -> None:
    """Write ``path`` atomically; with optimizer/scheduler it is resumable (every rank writes its own state).

    Collective: every rank calls it. The main process creates the temporary folder and tells the others where
    it is; each rank writes ``trainer_state/rank<r>.pt``; after a barrier the main process adds the HF folder and
    ``state.json`` and moves the folder into place.
    """
    from accelerate.utils import broadcast_object_list

    accelerator.wait_for_everyone()
    state_dict = full_state_dict(model, accelerator)  # collective under FSDP: every rank calls it
    state.world_size = accelerator.num_processes
    try:
        with contextlib.ExitStack() as stack:
            tmp = [str(stack.enter_context(files.atomic_dir(path))) if accelerator.is_main_process else None]
            if accelerator.num_processes > 1:
                broadcast_object_list(tmp, from_process=0)
            tmp_dir = Path(tmp[0])
            if optimizer is not None:
                blob = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()}
                target = rank_file(tmp_dir, accelerator.process_index)
                target.parent.mkdir(exist_ok=True)
                _torch_save(blob, target)
            accelerator.wait_for_everyone()  # every rank's file is in the folder before it moves into place
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(tmp_dir, state_dict=state_dict)
                tokenizer.save_pretrained(tmp_dir)
                files.write_json(tmp_dir / "state.json", asdict(state))
    except (OSError, SafetensorError) as e:  # ENOSPC / EFBIG / EDQUOT; safetensors wraps them in its own type
        raise SteerBenchError(
            f"{path}: cannot write the checkpoint of step {state.step} ({e}): is the disk full, or a file-size "
            f"or quota limit reached? The previous checkpoint in {path} is intact; free space and run again "
            "to resume from it"
        ) from e
    accelerator.wait_for_everyone()


def _torch_save(obj: Any, target: Path) -> None:
    """torch.save, with a failed write (disk full, file-size limit) raised as the OSError it is: torch's zip
    writer reports it as a RuntimeError ("basic_ios::clear: iostream error", "unexpected pos ...")."""
    try:
        torch.save(obj, target)
    except RuntimeError as e:
        raise OSError(f"writing {target} failed: {e}") from e


def full_state_dict(model: Any, accelerator: Any) -> dict[str, torch.Tensor]:
    """The full state dict for the HF folder (used on the main process; collective, every rank calls it).

    Accelerate's under its own FSDP plugin (it gathers) and for unsharded models; for a model sharded with
    ``fully_shard`` directly (``train.shard: fsdp2``) gathered here one tensor at a time, every rank taking part in
    each all-gather but only the main process keeping the (host) copies.
    """
    from accelerate.utils import DistributedType
    from torch.distributed.tensor import DTensor

    from steer_bench.rollout.weights import full_weights

    unwrapped = accelerator.unwrap_model(model)
    sharded = any(isinstance(t, DTensor) for t in unwrapped.state_dict().values())
    if accelerator.distributed_type == DistributedType.FSDP or not sharded:
        return accelerator.get_state_dict(model)
    out: dict[str, torch.Tensor] = {}
    for name, t in full_weights(unwrapped):
        if accelerator.is_main_process:
            out[name] = t.cpu()
    return out


def is_resumable(path: Path) -> bool:
    has_state = (path / TRAINER_STATE).is_dir() or (path / LEGACY_TRAINER_STATE).is_file()
    return has_state and (path / "state.json").is_file()


def load_trainer_state(path: Path, optimizer: Any, scheduler: Any) -> TrainState:
    """Restore this rank's optimizer, scheduler and RNG state from ``path`` (written by the same world size)."""
    dist = torch.distributed
    initialized = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if initialized else (0, 1)
    state = TrainState(**files.read_json(path / "state.json"))
    if (path / TRAINER_STATE).is_dir():
        if state.world_size != world:
            raise SteerBenchError(
                f"{path}: the checkpoint was written by {state.world_size} process(es), this run has {world}: "
                "resume with the same number of processes (optimizer shards are per rank)"
            )
        blob = torch.load(rank_file(path, rank), weights_only=False, map_location="cpu")
    elif world == 1:
        blob = torch.load(path / LEGACY_TRAINER_STATE, weights_only=False, map_location="cpu")
    else:
        raise SteerBenchError(
            f"{path}: a single-file trainer state (rank 0's optimizer only) cannot resume {world} processes"
        )
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if "rng" in blob:
        _set_rng_state(blob["rng"])
    return state


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be recomputed)."""
    if path.is_file():
        files.write_jsonl(path, [r for r in files.read_jsonl(path) if r["step"] <= step])
