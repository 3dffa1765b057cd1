"""One generation interface, two engines: ``hf`` (transformers ``generate``) and ``vllm`` (colocated vLLM).

Usage in a trainer::

    engine = make_engine(cfg.engine, model, tokenizer, seed=seed)
    for step in ...:
        engine.sync_weights(model)                        # no-op for hf
        batch = engine.generate(prompt_ids, SamplingParams(max_new_tokens=64, n=8, seed=seed + step))
        tensors = batch.padded(tokenizer.pad_token_id)    # (B, P+T) left-padded prompts, right-padded responses
        logp, entropy = score_responses(model, tensors, temperature=1.0)
        gap = logprob_gap(tensors.response_logprobs, logp, tensors.response_mask)

Prompts are token ids of already chat-templated prompts. See :mod:`steer_bench.rollout.batch` for the layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from steer_bench.config.run import VllmConfig
from steer_bench.errors import SteerBenchError
from steer_bench.rollout.batch import PaddedRollout, RolloutBatch, SamplingParams, logprob_gap, score_responses
from steer_bench.rollout.hf import HFEngine
from steer_bench.rollout.vllm import VLLMEngine

if TYPE_CHECKING:  # transformers is imported where a model is loaded, not by importing the trainer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "ENGINES",
    "HFEngine",
    "PaddedRollout",
    "RolloutBatch",
    "RolloutEngine",
    "SamplingParams",
    "logprob_gap",
    "make_engine",
    "score_responses",
]

ENGINES = ("hf", "vllm")


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """Sample ``params.n`` responses per prompt; row i·n + j is sample j of prompt i."""
        ...

    def sync_weights(self, model: PreTrainedModel) -> None:
        """Make the engine sample from ``model``'s current weights."""
        ...

    def sync_metrics(self) -> dict[str, float]:
        """Metrics of the last sync (the self-check's probe gap, the memory it held); {} if nothing is synced."""
        ...

    def close(self) -> None: ...


def make_engine(
    kind: Literal["hf", "vllm"],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    vllm: VllmConfig | None = None,
    **options: Any,
) -> RolloutEngine:
    """Build an engine. hf: ``options`` = ``max_batch_size``. vllm: its knobs ``vllm`` (None: the config's
    defaults) and ``options`` = the launch's ``model_path``, ``seed``, ``max_model_len``, ``dtype``
    (:class:`steer_bench.rollout.vllm.VLLMEngine`; vllm itself is imported only when the engine starts)."""
    if kind == "hf":
        return HFEngine(model, tokenizer, **options)
    if kind == "vllm":
        return VLLMEngine(model, tokenizer, vllm or VllmConfig(), **options)
    raise SteerBenchError(f"rollout: unknown engine {kind!r}; valid engines: {', '.join(ENGINES)}")
