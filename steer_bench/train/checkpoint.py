"""Checkpoints: an HF model folder in the training's compute dtype (loadable by eval, vLLM, ``from_pretrained``) plus,
for ``last``, the trainer state. Written atomically: a run killed mid-save keeps its previous checkpoint intact.

Layout of a resumable checkpoint::

    config.json, model.safetensors, tokenizer files   the HF folder: bf16 under mixed_precision bf16 (the release saves
                                                      its ``hf_model`` so), else the model's dtype
    trainer_state/.metadata, __<r>_0.distcp            torch.distributed.checkpoint (DCP) of the float32 master weights
                                                      and the AdamW state: every rank writes its own shards in parallel
    trainer_state/rank<r>.pt                           each rank's scheduler and RNG states (small, plain objects)
    state.json                                        step, best metric, MLflow run id, world size

DCP is torch's supported route for FSDP2 state (``get_state_dict``/``set_state_dict``): shards are saved as plain
tensors with their placement and restored onto whatever device the mesh lives on, and replicated (DDP) tensors are
written once. The master weights travel in DCP because the HF folder may be bf16: a resume from it alone would
round them. The world size is recorded in ``state.json``; resuming with another one is an error. The ranks share the
checkpoint folder, so on several nodes it must be on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import logging
import random
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from torch.distributed.checkpoint.api import CheckpointException

from steer_bench import files
from steer_bench.config.run import TrainConfig
from steer_bench.errors import SteerBenchError
from steer_bench.rollout.weights import full_weights
from steer_bench.sharding import reshard

if TYPE_CHECKING:  # the update's module imports the methods and the rollout: the trainer's, not the checkpoint's
    from steer_bench.train.update import Learner

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state"
"""Folder of the DCP checkpoint (master weights, optimizer) and the per-rank scheduler and RNG files."""
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainState:
    """Where a run is, besides weights and optimizer state."""

    step: int = 0
    mlflow_run_id: str | None = None
    best_metric: float | None = None
    best_step: int | None = None
    best_disjoint_metric: float | None = None
    """Best ``validation.selection_metric`` so far (the disjoint selection set; None: none yet or off)."""
    best_disjoint_step: int | None = None
    world_size: int = 1
    """Processes that wrote the checkpoint (one scheduler/RNG file each)."""
    entropy_coef: float | None = None
    """The entropy controller's state for the next step: the adaptive entropy coefficient (``loss.adaptive_entropy``)
    or EntroPIC's integral I (``loss.entropic``); None: not started (or no controller with state)."""


def hf_dtype(cfg: TrainConfig) -> torch.dtype:
    """The HF folder's dtype: what the policy computes in (bf16 under ``mixed_precision: bf16``, as the release's
    ``hf_model``), else the weights' own dtype."""
    return torch.bfloat16 if cfg.mixed_precision == "bf16" else _DTYPES[cfg.model.dtype]


def save_bytes(n_params: int, world: int, hf_bytes_per_param: int) -> dict[str, int]:
    """Bytes a resumable checkpoint writes: the HF folder (main process only), and per rank its DCP share of the
    float32 master weights and AdamW's two moments (12 bytes per parameter over the ranks, replicas written once)."""
    shard = 12 * n_params // world
    return {"hf": hf_bytes_per_param * n_params, "dcp_per_rank": shard, "main": hf_bytes_per_param * n_params + shard}


def log_save_budget(cfg: TrainConfig, n_params: int, world: int) -> None:
    """Say what a checkpoint costs and which write bandwidth keeps it inside the process-group timeout (the other
    ranks wait in a barrier while the main process writes; ``steer-bench preflight`` measures the real time)."""
    size = save_bytes(n_params, world, hf_dtype(cfg).itemsize)
    need = size["main"] / cfg.collective_timeout_s / 1e6
    log.info(
        "checkpoints: %.2f GB written by the main process (HF folder %.2f GB + its DCP share), %.2f GB by each other "
        "rank; inside collective_timeout_s=%d that needs >= %.1f MB/s of the checkpoint filesystem",
        size["main"] / 1e9,
        size["hf"] / 1e9,
        size["dcp_per_rank"] / 1e9,
        cfg.collective_timeout_s,
        need,
    )


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


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _single_process_ok() -> Iterator[None]:
    """DCP warns on every single-process save and load that it "assumes" one process: here that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _raw(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the real one


def save_checkpoint(
    path: Path, learner: Learner, tokenizer: Any, state: TrainState, *, dtype: torch.dtype, resumable: bool
) -> None:
    """Write ``path`` atomically; ``resumable``: with the optimizer and scheduler state (``best`` checkpoints
    hold only the weights). ``dtype``: the HF folder's (:func:`hf_dtype`).

    Collective: every rank calls it. The main process creates the temporary folder and tells the others where
    it is; every rank writes its DCP shards and its scheduler/RNG file; after a barrier the main process adds the
    HF folder and ``state.json`` and moves the folder into place.
    """
    from accelerate.utils import broadcast_object_list

    accelerator, model = learner.accelerator, learner.model
    accelerator.wait_for_everyone()
    state_dict = hf_state_dict(model, accelerator, dtype)  # collective under FSDP2: every rank calls it
    state.world_size = accelerator.num_processes
    try:
        with contextlib.ExitStack() as stack:
            tmp = [str(stack.enter_context(files.atomic_dir(path))) if accelerator.is_main_process else None]
            if accelerator.num_processes > 1:
                broadcast_object_list(tmp, from_process=0)
            if tmp[0] is None:  # broadcast_object_list filled it on every rank
                raise SteerBenchError(f"{path}: the main process's temporary checkpoint folder did not arrive")
            tmp_dir = Path(tmp[0])
            if resumable:
                _save_trainer_state(tmp_dir, learner)
            accelerator.wait_for_everyone()  # every rank's files are in the folder before it moves into place
            if accelerator.is_main_process:
                unwrapped = accelerator.unwrap_model(model)
                unwrapped.save_pretrained(tmp_dir, state_dict=state_dict)
                _set_config_dtype(tmp_dir, dtype)
                tokenizer.save_pretrained(tmp_dir)
                files.write_json(tmp_dir / "state.json", asdict(state))
    except (OSError, SafetensorError, CheckpointException) as e:  # ENOSPC / EFBIG / EDQUOT, wrapped by safetensors
        # and by torch.distributed.checkpoint (which gathers every rank's write errors into one)
        raise SteerBenchError(
            f"{path}: cannot write the checkpoint of step {state.step} ({_one_line(e)}): is the disk full, or a "
            f"file-size or quota limit reached? The previous checkpoint in {path} is intact; free space and run "
            "again to resume from it"
        ) from e
    accelerator.wait_for_everyone()


def _one_line(error: BaseException) -> str:
    """A failed save's cause, one line per rank: DCP's exception names every rank whose write failed, and its own
    text is their tracebacks."""
    if isinstance(error, CheckpointException):
        return "; ".join(f"rank {r}: {type(x).__name__}: {x}" for r, (x, _) in sorted(error.failures.items()))
    return str(error)


def _set_config_dtype(folder: Path, dtype: torch.dtype) -> None:
    """``save_pretrained`` records the parameters' dtype (the float32 masters) in config.json; the folder holds
    ``dtype`` tensors, and vLLM's ``dtype: auto`` reads the config: record what is there."""
    config = files.read_json(folder / "config.json")
    config["dtype"] = str(dtype).removeprefix("torch.")
    config.pop("torch_dtype", None)
    files.write_json(folder / "config.json", config)


def _save_trainer_state(tmp_dir: Path, learner: Learner) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    accelerator = learner.accelerator
    unwrapped = accelerator.unwrap_model(learner.model)
    reshard(unwrapped)  # the optimizer holds the sharded parameters
    model_sd, optim_sd = get_state_dict(unwrapped, _raw(learner.optimizer))
    with _single_process_ok():
        dcp.save(
            {"model": model_sd, "optimizer": optim_sd},
            checkpoint_id=tmp_dir / TRAINER_STATE,
            no_dist=not _distributed(),
        )
    blob = {"scheduler": learner.scheduler.state_dict(), "rng": _rng_state()}
    _torch_save(blob, rank_file(tmp_dir, accelerator.process_index))


def _torch_save(obj: Any, target: Path) -> None:
    """torch.save, with a failed write (disk full, file-size limit) raised as the OSError it is: torch's zip
    writer reports it as a RuntimeError ("basic_ios::clear: iostream error", "unexpected pos ...")."""
    try:
        torch.save(obj, target)
    except RuntimeError as e:
        raise OSError(f"writing {target} failed: {e}") from e


def hf_state_dict(model: Any, accelerator: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The full state dict for the HF folder in ``dtype``, on the main process (empty elsewhere). Collective:
    FSDP2 shards are all-gathered one tensor at a time, every rank taking part in each all-gather, only the main
    process keeping the (host) copies."""
    out: dict[str, torch.Tensor] = {}
    for name, t in full_weights(accelerator.unwrap_model(model)):
        if accelerator.is_main_process:
            out[name] = t.to(device="cpu", dtype=dtype if t.is_floating_point() else t.dtype)
    return out


def is_resumable(path: Path) -> bool:
    return (path / TRAINER_STATE).is_dir() and (path / "state.json").is_file()


def load_trainer_state(path: Path, accelerator: Any, model: Any, optimizer: Any, scheduler: Any) -> TrainState:
    """Restore the master weights and optimizer (DCP, every rank its shards) and this rank's scheduler and RNG
    states from ``path`` (written by the same world size). Collective: every rank calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    state = TrainState(**files.read_json(path / "state.json"))
    if state.world_size != accelerator.num_processes:
        raise SteerBenchError(
            f"{path}: the checkpoint was written by {state.world_size} process(es), this run has "
            f"{accelerator.num_processes}: resume with the same number of processes"
        )
    if not (path / TRAINER_STATE / ".metadata").is_file():
        raise SteerBenchError(
            f"{path}: the trainer state is not a torch.distributed.checkpoint folder (an older steer-bench's per-rank "
            "optimizer files): delete the run folder to start afresh"
        )
    unwrapped, raw = accelerator.unwrap_model(model), _raw(optimizer)
    reshard(unwrapped)  # the optimizer holds the sharded parameters
    model_sd, optim_sd = get_state_dict(unwrapped, raw)
    saved: dict[str, Any] = {"model": model_sd, "optimizer": optim_sd}
    with _single_process_ok():
        dcp.load(saved, checkpoint_id=path / TRAINER_STATE, no_dist=not _distributed())
    set_state_dict(unwrapped, raw, model_state_dict=saved["model"], optim_state_dict=saved["optimizer"])
    blob = torch.load(rank_file(path, accelerator.process_index), weights_only=False, map_location="cpu")
    scheduler.load_state_dict(blob["scheduler"])
    _set_rng_state(blob["rng"])
    return state


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be recomputed)."""
    if path.is_file():
        files.write_jsonl(path, [r for r in files.read_jsonl(path) if r["step"] <= step])
