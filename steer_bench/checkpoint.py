"""Checkpoints: an HF model folder (loadable by eval, vLLM, `from_pretrained`) plus, for ``last``, the trainer
state (optimizer, scheduler, RNG, step, MLflow run id). Written atomically: a run killed mid-save keeps its
previous checkpoint intact."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from steer_bench import io
from steer_bench.errors import SteerBenchError

TRAINER_STATE = "trainer_state.pt"


@dataclass
class TrainState:
    """Where a run is, besides weights and optimizer state."""

    step: int = 0
    mlflow_run_id: str | None = None
    best_metric: float | None = None
    best_step: int | None = None


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
    """Write ``path`` atomically (main process); with optimizer/scheduler it is resumable."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP: every rank calls it
    if accelerator.is_main_process:
        try:
            with io.atomic_dir(path) as tmp:
                accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict)
                tokenizer.save_pretrained(tmp)
                if optimizer is not None:
                    blob = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
                    torch.save(blob, tmp / TRAINER_STATE)
                io.write_json(tmp / "state.json", asdict(state))
        except (OSError, SafetensorError) as e:  # ENOSPC / EFBIG / EDQUOT; safetensors wraps them in its own type
            raise SteerBenchError(
                f"{path}: cannot write the checkpoint of step {state.step} ({e}): is the disk full, or a file-size "
                f"or quota limit reached? The previous checkpoint in {path} is intact; free space and run again "
                "to resume from it"
            ) from e
    accelerator.wait_for_everyone()


def is_resumable(path: Path) -> bool:
    return (path / TRAINER_STATE).is_file() and (path / "state.json").is_file()


def load_trainer_state(path: Path, optimizer: Any, scheduler: Any) -> TrainState:
    blob = torch.load(path / TRAINER_STATE, weights_only=False, map_location="cpu")
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    return TrainState(**io.read_json(path / "state.json"))


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be recomputed)."""
    if path.is_file():
        io.write_jsonl(path, [r for r in io.read_jsonl(path) if r["step"] <= step])
