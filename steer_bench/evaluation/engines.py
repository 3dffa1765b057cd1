"""The model under evaluation: where it is, how long its context is, and the engine that samples from it.

Evaluation never needs the weights in this process for ``vllm`` (the engine loads them from the folder or
Hub id itself: :meth:`~steer_bench.rollout.vllm.VLLMEngine.from_path`); the ``hf`` fallback loads them with
:func:`steer_bench.rollout.model.load_policy`, exactly as training does, onto the GPU when there is one.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from steer_bench.config.run import ModelConfig
from steer_bench.errors import SteerBenchError
from steer_bench.evaluation.schema import EvalSection
from steer_bench.inputs import ARCHITECTURE_KEYS, check_model_dir, read_config
from steer_bench.rollout import HFEngine
from steer_bench.rollout.model import load_policy
from steer_bench.rollout.vllm import VLLMEngine

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json")


def check_model(model: str) -> None:
    """A local folder must exist; anything else must look like a Hub id (``org/name``)."""
    if Path(model).is_dir():
        check_model_dir(model)
        return
    if Path(model).exists() or not _HUB_ID.match(model):
        raise SteerBenchError(f"model not found: {model!r} is neither a model folder nor a Hub id (org/name)")


def _load_error(model: str, e: Exception) -> SteerBenchError:
    where = "folder" if Path(model).is_dir() else "Hub id (is the Hub reachable, or the model in the HF cache?)"
    return SteerBenchError(f"cannot load model {model!r} as a {where}: {e}")


def load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    check_model(model)
    try:
        return AutoTokenizer.from_pretrained(model, padding_side="left")
    except (OSError, ValueError) as e:
        raise _load_error(model, e) from e


def context_len(model: str) -> int:
    """The model's maximum sequence length (``max_position_embeddings`` of its config)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise _load_error(model, e) from e
    length = getattr(config, "max_position_embeddings", None)
    if not length:
        raise SteerBenchError(f"{model}: the config has no max_position_embeddings; cannot check prompt lengths")
    return int(length)


def model_fingerprint(model: str) -> str:
    """Changes when a local model folder's weights or config change (names, sizes, mtimes); a Hub id is itself."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    text = "\n".join(f"{p.name} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_engine(
    kind: str, model: str, tokenizer: Any, settings: EvalSection, *, seed: int, max_model_len: int
) -> tuple[Any, dict[str, Any]]:
    """(engine, what to record about it). ``max_model_len``: the longest prompt + max_new_tokens (vLLM
    reserves KV cache for it); ``seed``: the engine's base seed (requests carry their own)."""
    cuda = torch.cuda.is_available()
    if kind == "vllm":
        # no sleep mode: evaluation generates call after call without a weight sync, which a sleeping engine refuses
        v = settings.vllm.model_copy(update={"enable_sleep_mode": "off"})
        dtype = None if settings.dtype == "auto" else settings.dtype
        vllm_engine = VLLMEngine.from_path(model, tokenizer, v, seed=seed, max_model_len=max_model_len, dtype=dtype)
        recorded = {
            "seed": seed,
            "max_model_len": max_model_len,
            "tensor_parallel_size": v.tensor_parallel_size,
            "gpu_memory_utilization": v.gpu_memory_utilization,
            "cpu_kvcache_gb": v.cpu_kvcache_gb,
            "enforce_eager": not cuda if v.enforce_eager is None else v.enforce_eager,
        }
        return vllm_engine, {
            "kind": "vllm",
            **recorded,
            "dtype": vllm_engine.dtype,
            "device": "cuda" if cuda else "cpu",
        }
    if kind == "hf":
        dtype = settings.dtype if settings.dtype != "auto" else ("bfloat16" if cuda else "float32")
        policy = load_policy(ModelConfig(path=model, dtype=dtype))
        device = "cuda" if cuda else "cpu"
        engine = HFEngine(policy.model.to(device), policy.tokenizer, max_batch_size=settings.batch_size)
        return engine, {"kind": "hf", "dtype": dtype, "device": device, "batch_size": settings.batch_size}
    raise SteerBenchError(f"unknown evaluation engine {kind!r}; valid: hf, vllm")


class SharedEngine:
    """An :data:`~steer_bench.evaluation.runner.EngineOpener` that keeps one engine open across evaluation jobs
    (``eval.jobs: one``): vLLM's start-up (~10 s on 2 CPU cores, minutes for a 7B model on a GPU) is paid once.

    The first call opens an engine with :func:`open_engine`. A later call for another model of the same
    architecture, tokenizer and engine settings, whose context fits the open engine, loads that model's weights
    into it (the trainer's weight sync, :meth:`~steer_bench.rollout.vllm.VLLMEngine.sync_weights`, which then
    checks the engine's probe log-probs against the loaded model and raises on a gap); anything else closes the
    open engine and opens a new one. The engine handed out ignores ``close()``: call :meth:`close` when done.
    """

    def __init__(self) -> None:
        self.engine: Any = None
        self.key: tuple[Any, ...] | None = None
        self.info: dict[str, Any] = {}
        self.opened = self.reloaded = 0

    def __call__(
        self, kind: str, model: str, tokenizer: Any, settings: EvalSection, *, seed: int, max_model_len: int
    ) -> tuple[Any, dict[str, Any]]:
        key = (kind, settings.model_dump_json(), seed, _tokenizer_fingerprint(tokenizer), _architecture(model))
        if self.engine is not None and key == self.key and max_model_len <= self.info["max_model_len"]:
            self._load(kind, model)
            self.reloaded += 1
            return _KeepOpen(self.engine), self.info | {"shared": True, "weights_from": model}
        self.close()
        self.engine, self.info = open_engine(kind, model, tokenizer, settings, seed=seed, max_model_len=max_model_len)
        self.info.setdefault("max_model_len", max_model_len)
        self.key, self.opened = key, self.opened + 1
        return _KeepOpen(self.engine), self.info | {"shared": False}

    def _load(self, kind: str, model: str) -> None:
        if kind == "hf":  # the hf engine samples from the model object itself: swap it in
            policy = load_policy(ModelConfig(path=model, dtype=self.info["dtype"]))
            self.engine.sync_weights(policy.model.to(self.info["device"]))
            return
        # vLLM serves float32 on CPU and the checkpoint's dtype on GPU; the probe check compares in float32
        self.engine.sync_weights(load_policy(ModelConfig(path=model, dtype="float32")).model)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine, self.key = None, None


class _KeepOpen:
    """The shared engine as one job sees it: everything but ``close``, which the :class:`SharedEngine` owns."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def close(self) -> None:
        pass


def _architecture(model: str) -> tuple[Any, ...]:
    """The architecture keys of ``model``'s config, and its generation config (the eos set the engine stops on)."""
    generation = Path(model) / "generation_config.json"
    eos = generation.read_text() if generation.is_file() else None
    return (*(read_config(model).get(k) for k in ARCHITECTURE_KEYS), eos)


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    """Equal for tokenizers that map every text to the same ids (vocabulary, merges, special tokens, template)."""
    state = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    extra = f"{tokenizer.all_special_tokens}{getattr(tokenizer, 'chat_template', None)}"
    return hashlib.sha256((state + extra).encode()).hexdigest()
