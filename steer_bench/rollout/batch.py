"""What every rollout engine takes and returns, and the padded tensor layout the trainer's forward uses.

Layout of :class:`PaddedRollout` (B = samples, P = longest prompt, T = longest response)::

    input_ids      (B, P+T)  [pad … pad, prompt | response, pad … pad]   prompts left-padded, responses right-padded
    attention_mask (B, P+T)  1 on real tokens
    position_ids   (B, P+T)  cumsum(attention_mask) − 1 (clamped at 0): a left-padded prompt starts at position 0,
                             exactly as ``generate`` numbers it — a plain forward would count the padding
    response_mask  (B, T)    1.0 on response tokens (eos included), float32

Response token t of row b is ``input_ids[b, P + t]``; the logits that predict it sit at position ``P − 1 + t``,
so ``logits[:, P-1:-1]`` is (B, T, V).
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass

import torch
from torch import Tensor

from steer_bench.algos.entropy import logprobs_and_entropy
from steer_bench.algos.stats import masked_mean
from steer_bench.errors import SteerBenchError


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy.

    ``seed`` makes a call reproducible (None: not) and is the seed of its first sequence: every engine gives
    sequence j of the call's prompt i the stream ``seed + i·n + j`` (:meth:`sequence_seed`; the ``hf`` engine,
    which samples a batch of prompts from one stream, seeds each batch with its first sequence's seed). A call of P
    prompts thus uses the seeds [seed, seed + P·n): callers space their calls by P·n and no two sequences share a
    stream (``steer_bench.train.setup.rollout_seed``)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    ignore_eos: bool = False
    """Sample every response to ``max_new_tokens`` (``steer-bench preflight``: the worst case of memory and time)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise SteerBenchError(f"sampling: max_new_tokens and n must be >= 1, got {self}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise SteerBenchError(f"sampling: need temperature >= 0 and 0 < top_p <= 1, got {self}")

    def sequence_seed(self, prompt: int, sample: int = 0) -> int | None:
        """The seed of sample ``sample`` of the call's prompt ``prompt`` (None if the call is unseeded)."""
        return None if self.seed is None else self.seed + prompt * self.n + sample

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class PaddedRollout:
    """A :class:`RolloutBatch` as tensors, in the layout of the module docstring."""

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    response_mask: Tensor
    response_logprobs: Tensor | None
    """(B, T) the engine's log-probs of the sampled tokens, 0 where ``response_mask`` is 0; None if not returned."""

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    @property
    def response_ids(self) -> Tensor:
        """(B, T) view of the response tokens (pad after the end)."""
        return self.input_ids[:, self.prompt_len :]

    def to(self, device: torch.device | str) -> PaddedRollout:
        lp = None if self.response_logprobs is None else self.response_logprobs.to(device)
        return PaddedRollout(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            position_ids=self.position_ids.to(device),
            response_mask=self.response_mask.to(device),
            response_logprobs=lp,
        )


@dataclass(frozen=True)
class RolloutBatch:
    """len(prompts)·n samples; sample j of prompt i is row i·n + j.

    ``response_ids`` end with an eos token iff ``finished``; a sample that hit ``max_new_tokens`` first is
    ``truncated``. ``response_logprobs`` are the engine's log-probs of the sampled tokens under the *processed*
    distribution it sampled from (temperature and top-p applied; top-p renormalises), or None;
    ``response_entropy`` the entropy of that distribution at each response token (the ``hf`` engine), or None.
    """

    prompt_index: list[int]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    finished: list[bool]
    response_logprobs: list[list[float]] | None = None
    response_entropy: list[list[float]] | None = None

    def __post_init__(self) -> None:
        n = len(self.prompt_index)
        lists: list[Sized] = [self.prompt_ids, self.response_ids, self.finished]
        if any(len(x) != n for x in lists):
            raise ValueError("RolloutBatch: per-sample lists differ in length")
        for name in ("response_logprobs", "response_entropy"):
            values = getattr(self, name)
            if values is not None and (
                len(values) != n or any(len(v) != len(r) for v, r in zip(values, self.response_ids, strict=True))
            ):
                raise ValueError(f"RolloutBatch: {name} and response_ids differ in length")

    def __len__(self) -> int:
        return len(self.prompt_index)

    @classmethod
    def concat(cls, parts: list[RolloutBatch]) -> RolloutBatch:
        """Rows of ``parts`` one after another (log-probs kept only if every part has them)."""

        def joined(name: str) -> list[list[float]] | None:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else [x for v in values for x in v]

        return cls(
            prompt_index=[x for p in parts for x in p.prompt_index],
            prompt_ids=[x for p in parts for x in p.prompt_ids],
            response_ids=[x for p in parts for x in p.response_ids],
            finished=[x for p in parts for x in p.finished],
            response_logprobs=joined("response_logprobs"),
            response_entropy=joined("response_entropy"),
        )

    def token_values(self, values: list[list[float]], device: torch.device | str = "cpu") -> Tensor:
        """Per-response-token ``values`` (one list per row, as long as its response) as (B, T) of
        :meth:`padded`'s T, 0 after each response's end."""
        t = max(1, max((len(x) for x in self.response_ids), default=0))
        out = torch.zeros((len(self), t), dtype=torch.float32)
        for i, v in enumerate(values):
            out[i, : len(v)] = torch.tensor(v, dtype=torch.float32)
        return out.to(device)

    @property
    def truncated(self) -> list[bool]:
        return [not f for f in self.finished]

    def padded(self, pad_token_id: int) -> PaddedRollout:
        """Build the (B, P+T) training tensors (module docstring); T ≥ 1 even if every response is empty."""
        b = len(self)
        p = max((len(x) for x in self.prompt_ids), default=0)
        t = max(1, max((len(x) for x in self.response_ids), default=0))
        input_ids = torch.full((b, p + t), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((b, p + t), dtype=torch.long)
        response_mask = torch.zeros((b, t), dtype=torch.float32)
        for i, (prompt, response) in enumerate(zip(self.prompt_ids, self.response_ids, strict=True)):
            input_ids[i, p - len(prompt) : p] = torch.tensor(prompt, dtype=torch.long)
            input_ids[i, p : p + len(response)] = torch.tensor(response, dtype=torch.long)
            attention_mask[i, p - len(prompt) : p + len(response)] = 1
            response_mask[i, : len(response)] = 1.0
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        logprobs = None if self.response_logprobs is None else self.token_values(self.response_logprobs)
        return PaddedRollout(input_ids, attention_mask, position_ids, response_mask, logprobs)


def score_responses(model: torch.nn.Module, batch: PaddedRollout, *, temperature: float) -> tuple[Tensor, Tensor]:
    """The trainer's view of a rollout: (logp (B, T), entropy (B, T)) of the responses under softmax(logits/τ).

    One forward of ``model`` (under the caller's grad mode) with the batch's attention mask and position ids;
    ``temperature == 0`` (greedy) scores at τ = 1. Entries where ``response_mask`` is 0 are set to 0.
    """
    if batch.prompt_len == 0:
        raise ValueError("score_responses: every prompt is empty; nothing predicts the first response token")
    t = batch.response_mask.shape[1]
    logits = model(  # only the T + 1 last positions: the prompt's logits are never needed (memory at scale)
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,  # a training forward: no KV cache kept alive across the layers
        logits_to_keep=t + 1,
    ).logits
    logp, entropy = logprobs_and_entropy(
        logits[:, :t], batch.response_ids, temperature=temperature if temperature > 0 else 1.0
    )
    return logp * batch.response_mask, entropy * batch.response_mask


def logprob_gap(engine_logp: Tensor, trainer_logp: Tensor, response_mask: Tensor) -> Tensor:
    """Mean |logp_engine − logp_trainer| over response tokens (B, T) -> scalar: the rollout/trainer mismatch."""
    return masked_mean((engine_logp - trainer_logp).abs(), response_mask)
