"""Clip-Cov (Cui et al. 2025, arXiv 2505.22617; verl ``compute_policy_loss_clip_cov``; ``docs/methods.md §M7``).

    keep = 0 on ⌊ratio·N⌋ (≥ 1) random tokens among {valid, not clipped, cov_lb < Cov < cov_ub}, else 1
    L_method = L ⊙ keep                                                  (all (B, T))

Cov_t = (A_t − mean A)(log π_t − mean log π) over the call's valid tokens (``algos.entropy.covariance``);
N = valid tokens of the call. Detached tokens contribute neither value nor gradient but stay in the denominator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steer_bench.algos.base import Intervention, Metrics, TokenBatch, frac
from steer_bench.algos.entropy import covariance
from steer_bench.algos.registry import Metric, register
from steer_bench.algos.surrogates import Surrogate


@register
@dataclass(frozen=True, kw_only=True)
class ClipCov(Intervention):
    """Random choice uses ``batch.generator`` (None: torch's global RNG)."""

    name = "clip_cov"
    metrics = {
        "clip_cov/candidates": Metric("unclipped tokens with cov_lb < Cov < cov_ub", "sum"),
        "clip_cov/tokens_touched": Metric("tokens detached", "sum"),
        "clip_cov/frac_touched": Metric("fraction of the valid tokens detached"),
    }
    ratio: float  # fraction of the valid tokens to detach (verl clip_cov_ratio)
    cov_lb: float  # lower bound of the covariance band (verl clip_cov_lb)
    cov_ub: float  # upper bound (verl clip_cov_ub)

    def token_loss(self, surrogate: Surrogate, batch: TokenBatch, stats: Any) -> tuple[Tensor, Metrics]:
        cov = covariance(batch.advantages, batch.log_probs, batch.mask)
        candidates = batch.mask & ~surrogate.clipped & (cov > self.cov_lb) & (cov < self.cov_ub)
        n_pick = max(int(self.ratio * int(batch.mask.sum())), 1)
        idx = candidates.flatten().nonzero().squeeze(-1)
        chosen = idx[torch.randperm(idx.numel(), generator=batch.generator).to(idx.device)[:n_pick]]
        keep = torch.ones_like(surrogate.loss)
        keep.view(-1)[chosen] = 0.0
        metrics = {
            "clip_cov/candidates": candidates.sum().float(),
            "clip_cov/tokens_touched": torch.tensor(float(chosen.numel())),
            "clip_cov/frac_touched": frac(keep == 0, batch.mask),
        }
        return surrogate.loss * keep, metrics
