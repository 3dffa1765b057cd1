"""Forking tokens (Wang et al. 2025, "Beyond the 80/20 rule", arXiv 2506.01939; ``docs/methods.md §M9``).

    L_method = L ⊙ 1[H_t ≥ τ],   τ = quantile_{1 − top_frac}(H over the valid tokens)      (all (B, T))

H is the current policy's entropy (detached). scope ``micro``: τ over this call's valid tokens; ``mini``: τ
over the whole mini-batch (the paper's "batch"), the mean over ranks of each rank's quantile (an
approximation of the global quantile; exact on one rank). Decision: masked tokens stay in the denominator
(TRL's implementation, and the same rule as STEER's λ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from steer_bench.algos.base import Intervention, Metrics, Reduce, TokenBatch, check_scope, frac
from steer_bench.algos.registry import Metric, register
from steer_bench.algos.stats import masked_quantile
from steer_bench.algos.surrogates import Surrogate


@register
@dataclass(frozen=True, kw_only=True)
class ForkTokens(Intervention):
    name = "fork_tokens"
    needs_entropy = True
    metrics = {
        "fork_tokens/threshold": Metric("the entropy threshold τ used"),
        "fork_tokens/frac_kept": Metric("fraction of the valid tokens with H ≥ τ (keeping their gradient)"),
        "fork_tokens/tokens_touched": Metric("tokens masked out", "sum"),
    }
    top_frac: float  # ρ: the share of highest-entropy tokens that keep their gradient (paper: 0.2)
    scope: str  # micro | mini

    def __post_init__(self) -> None:
        check_scope(self.name, self.scope)
        if not 0 < self.top_frac <= 1:
            raise ValueError(f"fork_tokens top_frac must be in (0, 1], got {self.top_frac}")

    @property
    def uses_mini_batch_stats(self) -> bool:
        return self.scope == "mini"

    def mini_batch_stats(self, batch: TokenBatch, reduce: Reduce) -> float:
        assert batch.entropy is not None
        local = masked_quantile(batch.entropy, batch.mask, 1.0 - self.top_frac).to(torch.float64)
        ranks = reduce(torch.ones((), dtype=torch.float64, device=local.device), "sum")
        return float(reduce(local, "sum") / ranks)

    def token_loss(self, surrogate: Surrogate, batch: TokenBatch, stats: float | None) -> tuple[Tensor, Metrics]:
        assert batch.entropy is not None
        ent = batch.entropy.detach()
        threshold = masked_quantile(ent, batch.mask, 1.0 - self.top_frac) if stats is None else torch.tensor(stats)
        keep = ent >= threshold
        metrics = {
            "fork_tokens/threshold": threshold.float(),
            "fork_tokens/frac_kept": frac(keep, batch.mask),
            "fork_tokens/tokens_touched": (batch.mask & ~keep).sum().float(),
        }
        return surrogate.loss * keep, metrics
