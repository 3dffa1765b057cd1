"""KL-Cov (Cui et al. 2025, arXiv 2505.22617; verl ``compute_policy_loss_kl_cov``; ``docs/methods.md §M8``).

    L_method = L + kl_coef · |log π − log π_old| · 1[t among the ⌊ratio·N⌋ (≥ 1) valid tokens of largest Cov]

verl pairs it with no clipping at all (clip_low/high/c None). On-policy (log π = log π_old) the penalty and
its gradient are 0: KL-Cov needs several updates per rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steer_bench.algos.base import Intervention, Metrics, TokenBatch
from steer_bench.algos.entropy import covariance
from steer_bench.algos.registry import Metric, register
from steer_bench.algos.stats import masked_mean
from steer_bench.algos.surrogates import Surrogate


@register
@dataclass(frozen=True, kw_only=True)
class KLCov(Intervention):
    name = "kl_cov"
    metrics = {
        "kl_cov/tokens_touched": Metric("tokens penalised", "sum"),
        "kl_cov/abs_kl": Metric("mean |log π − log π_old| (verl's kl_cov ppo_kl)"),
    }
    ratio: float  # fraction of the valid tokens penalised (verl kl_cov_ratio)
    kl_coef: float  # penalty coefficient (verl ppo_kl_coef)

    def token_loss(self, surrogate: Surrogate, batch: TokenBatch, stats: Any) -> tuple[Tensor, Metrics]:
        cov = covariance(batch.advantages, batch.log_probs, batch.mask)
        idx = batch.mask.flatten().nonzero().squeeze(-1)
        selected = torch.zeros_like(batch.mask)
        if idx.numel() > 0:
            k = max(int(idx.numel() * self.ratio), 1)
            top = idx[cov.flatten()[idx].topk(k).indices]
            selected.view(-1)[top] = True
        abs_kl = (batch.log_probs - batch.old_log_probs).abs()
        metrics = {
            "kl_cov/tokens_touched": selected.sum().float(),
            "kl_cov/abs_kl": masked_mean(abs_kl.detach(), batch.mask),
        }
        return surrogate.loss + self.kl_coef * abs_kl * selected, metrics
