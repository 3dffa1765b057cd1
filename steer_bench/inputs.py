"""Checked readers for the files a user hands the harness: parquet datasets, model folders, tokenizers and
checkpoints. Each failure is a :class:`SteerBenchError` that names the file and what is wrong with it, raised
before anything is written (so nothing already computed is touched)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow

from steer_bench.errors import SteerBenchError

# The config fields that make two checkpoints the same network (a resumed or evaluated checkpoint must match).
ARCHITECTURE_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "tie_word_embeddings",
)


def read_parquet(path: str | os.PathLike[str], *, what: str, allow_empty: bool = False) -> pd.DataFrame:
    """A parquet file (with at least one row unless ``allow_empty``), or an error naming ``path``: missing,
    0 bytes, corrupt, truncated or another format."""
    path = Path(path)
    if not path.is_file():
        raise SteerBenchError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise SteerBenchError(f"{path}: empty file (0 bytes); expected a parquet {what}")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as e:  # ArrowInvalid: magic bytes, truncated footer
        raise SteerBenchError(
            f"{path}: not a readable parquet file (corrupt, truncated or another format): {type(e).__name__}: {e}"
        ) from e
    if df.empty and not allow_empty:
        raise SteerBenchError(f"{path}: the {what} has no rows")
    return df


def read_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A local folder's config.json; for a Hub id, its config through transformers (the HF cache)."""
    if not Path(folder).exists() and "/" in str(folder):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(str(folder)).to_dict()
        except (OSError, ValueError) as e:
            raise SteerBenchError(f"cannot read the config of model {folder!r}: {e}") from e
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise SteerBenchError(f"{folder}: not a model folder (no config.json)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SteerBenchError(f"{path}: not a readable JSON model config: {e}") from e


def check_model_dir(folder: str | os.PathLike[str]) -> None:
    """A local HF model folder: a config, weight files that exist and whose headers read, a tokenizer."""
    folder = Path(folder)
    read_config(folder)
    shards = _weight_files(folder)
    if not shards:
        raise SteerBenchError(
            f"{folder}: no model weights (expected model.safetensors, *.safetensors shards with their index, "
            f"or pytorch_model*.bin); found {sorted(p.name for p in folder.iterdir())}"
        )
    for shard in shards:
        if not shard.is_file():
            raise SteerBenchError(f"{folder}: the weight index lists {shard.name}, which is missing")
        if shard.suffix == ".safetensors":
            _check_safetensors(shard)
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise SteerBenchError(f"{folder}: no tokenizer files (tokenizer.json or tokenizer_config.json)")


def check_chat_template(tokenizer: Any, where: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise SteerBenchError(
            f"{where}: the tokenizer has no chat template (tokenizer_config.json 'chat_template' or "
            "chat_template.jinja); prompts are chat messages"
        )


def check_same_architecture(checkpoint: str | os.PathLike[str], model: str | os.PathLike[str]) -> None:
    """A checkpoint must be of the configured model: resuming another network's weights is an error."""
    ours, theirs = read_config(checkpoint), read_config(model)
    diff = {k: (ours.get(k), theirs.get(k)) for k in ARCHITECTURE_KEYS if ours.get(k) != theirs.get(k)}
    if diff:
        shown = ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items())
        raise SteerBenchError(f"{checkpoint}: a checkpoint of a different model than {model} ({shown})")


def _weight_files(folder: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            try:
                names = set(json.loads((folder / index).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError) as e:
                raise SteerBenchError(f"{folder / index}: not a readable weight index: {e}") from e
            return [folder / n for n in sorted(names)]
    return sorted([*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")])


def _check_safetensors(path: Path) -> None:
    """Read the header and check the file holds every byte it declares (a truncated copy fails here)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (OSError, SafetensorError) as e:
        raise SteerBenchError(f"{path}: not a readable safetensors file (corrupt or truncated): {e}") from e
    if not keys:
        raise SteerBenchError(f"{path}: the safetensors file holds no tensors")
