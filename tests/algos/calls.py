"""The tests' functional spelling of the library's method object: build a :class:`~steer_bench.algos.Method` from
an intervention name and explicit hyperparameters, and call it like the trainer does (one call per micro-batch)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from steer_bench.algos import Intervention, Method, TokenBatch, Totals, build
from steer_bench.algos.advantages import Grpo

GRPO = {"norm_by_std": True, "eps": 1e-6}


def method(
    name: str, *, clip_low: float | None, clip_high: float | None, clip_c: float | None, agg: str,
    entropy_coef: float, **params: Any,
) -> Method:  # fmt: skip
    intervention = build("intervention", name, params)
    assert isinstance(intervention, Intervention)
    return Method(
        name=f"test-{name}", advantage=Grpo(**GRPO), intervention=intervention,
        clip_low=clip_low, clip_high=clip_high, clip_c=clip_c, agg=agg, entropy_coef=entropy_coef,
    )  # fmt: skip


def policy_loss(
    name: str, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
    entropy: Tensor | None = None, *, old_entropy: Tensor | None = None, batch_tokens: int | None = None,
    batch_seqs: int | None = None, max_response_len: int | None = None, stats: Any = None, generator: Any = None,
    clip_low: float | None, clip_high: float | None, clip_c: float | None, agg: str, entropy_coef: float,
    **params: Any,
) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """One :meth:`Method.loss` call (``stats``: :func:`mini_batch_stats`' value, None = the call's own)."""
    m = method(
        name, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c, agg=agg, entropy_coef=entropy_coef, **params
    )
    batch = TokenBatch(log_probs, old_log_probs, advantages, response_mask, entropy, old_entropy, generator)
    return m.loss(batch, Totals(batch_tokens, batch_seqs, max_response_len), stats)


def mini_batch_stats(
    name: str, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
    entropy: Tensor | None = None, *, old_entropy: Tensor | None = None, clip_low: float | None,
    clip_high: float | None, clip_c: float | None, agg: str, entropy_coef: float, **params: Any,
) -> dict[str, Any]:  # fmt: skip
    """{"stats": the method's mini-batch statistics} (to spread into :func:`policy_loss`), {} when it has none."""
    m = method(
        name, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c, agg=agg, entropy_coef=entropy_coef, **params
    )
    stats = m.mini_batch_stats(TokenBatch(log_probs, old_log_probs, advantages, response_mask, entropy, old_entropy))
    return {} if stats is None else {"stats": stats}
