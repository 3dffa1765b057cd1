"""The ``hf`` engine: transformers ``generate`` on the trainer's own model, so there is nothing to sync.

Every sampling knob is set explicitly (top-k off, no repetition penalty, …): transformers fills unset values
from the model's ``generation_config.json``, and a checkpoint's defaults (Qwen2.5-Math: top-p 0.8, top-k 20,
repetition penalty 1.05) must not leak into RL rollouts. Log-probs come from the processed scores ``generate``
sampled from (temperature and top-p applied), so they match vLLM's ``processed_logprobs``. The scores of a
call are held in memory (b·n·T·V floats): this engine is meant for small models and vocabularies; use vLLM
at scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from steer_bench.errors import NonFiniteError, SteerBenchError
from steer_bench.rollout.batch import RolloutBatch, SamplingParams

if TYPE_CHECKING:  # transformers is imported where a model is loaded, not by importing the trainer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Values that switch off every logits processor a checkpoint's generation_config could otherwise switch on.
_NEUTRAL = {"top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's eos plus every eos of the model's generation config (Qwen2.5 lists two), sorted."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update([configured] if isinstance(configured, int) else configured or [])
    if not ids:
        raise SteerBenchError("rollout: the tokenizer and the model's generation config define no eos token")
    return sorted(ids)


class RaiseOnNonFinite:
    """Stop sampling with a named error when a row's scores cannot form a distribution (a NaN, a +inf, or
    every token at −inf): ``torch.multinomial`` would otherwise fail with a bare RuntimeError. A logits
    processor (``generate`` calls each with ``(input_ids, scores)``)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = scores.isnan().any(-1) | scores.isposinf().any(-1) | scores.isneginf().all(-1)
        if bad.any():
            raise NonFiniteError(
                f"rollout: the model's next-token scores are not finite in {int(bad.sum())} of {len(bad)} rows "
                f"at generated position {input_ids.shape[1]} (the weights have diverged)"
            )
        return scores


def check_prompts(prompts: list[list[int]]) -> None:
    if not prompts:
        raise SteerBenchError("rollout: no prompts given")
    empty = [i for i, p in enumerate(prompts) if not p]
    if empty:
        raise SteerBenchError(f"rollout: prompt(s) {empty[:10]} are empty (a prompt needs at least one token)")


class HFEngine:
    """Rollouts with ``model.generate``; ``max_batch_size`` prompts per call (None: all at once)."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, max_batch_size: int | None = None
    ) -> None:
        self.model = model
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_token_id = self.eos_token_ids[0] if pad is None else pad
        self.max_batch_size = max_batch_size

    def sync_weights(self, model: PreTrainedModel) -> None:
        """Nothing to copy: generation runs on the trainer's model itself (adopts ``model`` if it is another)."""
        self.model = model

    def sync_metrics(self) -> dict[str, float]:
        """Nothing is copied, so there is nothing to report."""
        return {}

    def close(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutBatch:
        check_prompts(prompts)
        size = self.max_batch_size or len(prompts)
        parts = [
            self._generate(prompts[start : start + size], params, start, params.sequence_seed(start))
            for start in range(0, len(prompts), size)
        ]
        return RolloutBatch.concat(parts)

    def _generate(
        self, prompts: list[list[int]], params: SamplingParams, first_index: int, seed: int | None
    ) -> RolloutBatch:
        from transformers import GenerationConfig, LogitsProcessorList

        device = next(self.model.parameters()).device
        p = max(len(x) for x in prompts)
        input_ids = torch.full((len(prompts), p), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), p), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            input_ids[i, p - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[i, p - len(prompt) :] = 1
        config = GenerationConfig(
            **_NEUTRAL,
            do_sample=not params.greedy,
            temperature=1.0 if params.greedy else params.temperature,
            top_p=1.0 if params.greedy else params.top_p,
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=params.max_new_tokens if params.ignore_eos else None,
            num_return_sequences=params.n,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        was_training = self.model.training
        self.model.eval()
        # A private RNG stream: the same seed gives the same samples, and the trainer's RNG is left untouched.
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                # transformers types generate() so that mypy resolves it through nn.Module.__getattr__ (a Tensor)
                out = self.model.generate(  # type: ignore[operator]
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=config,
                    logits_processor=LogitsProcessorList([RaiseOnNonFinite()]),
                )
        finally:
            self.model.train(was_training)
        tokens = out.sequences[:, p:]  # (b·n, L), pad after an eos
        logprobs = torch.stack(
            [s.float().log_softmax(-1).gather(1, tokens[:, t : t + 1]) for t, s in enumerate(out.scores)], 1
        ).squeeze(-1)
        # H = −Σ p log p of the processed distribution; entr(0) = 0 where top-p masked a token to −inf
        entropy = torch.stack([torch.special.entr(s.float().softmax(-1)).sum(-1) for s in out.scores], 1)
        eos = torch.tensor([] if params.ignore_eos else self.eos_token_ids, dtype=torch.long)  # ignore_eos: no end
        return _cut_at_eos(prompts, tokens.cpu(), logprobs.cpu(), entropy.cpu(), params.n, eos, first_index)


def _cut_at_eos(
    prompts: list[list[int]],
    tokens: torch.Tensor,
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    n: int,
    eos: torch.Tensor,
    first_index: int,
) -> RolloutBatch:
    """Split (b·n, L) generated tokens into per-sample responses that end at (and include) the first eos."""
    is_eos = torch.isin(tokens, eos)
    finished = is_eos.any(1)
    lengths = torch.where(finished, is_eos.int().argmax(1) + 1, tokens.shape[1]).tolist()
    return RolloutBatch(
        prompt_index=[first_index + r // n for r in range(tokens.shape[0])],
        prompt_ids=[list(prompts[r // n]) for r in range(tokens.shape[0])],
        response_ids=[tokens[r, :k].tolist() for r, k in enumerate(lengths)],
        finished=finished.tolist(),
        response_logprobs=[logprobs[r, :k].tolist() for r, k in enumerate(lengths)],
        response_entropy=[entropy[r, :k].tolist() for r, k in enumerate(lengths)],
    )
