"""Rollout importance correction: a per-token weight on any method's loss for the mismatch between the
rollout engine's log-probs and the trainer's π_old (``docs/methods.md`` §M34).

    ρ_t = exp(clamp(log π_old − log π_rollout, −20, 20))                   token level
    ρ_i = exp(clamp(Σ_t M·(log π_old − log π_rollout), −20, 20))           sequence level (the product)
    truncate (TIS):  w = min(ρ, high)                                      (Yao et al. 2025; verl tis_imp_ratio_cap)
    mask:            w = ρ · 1[low ≤ ρ ≤ high]                             (TRL *_mask; low None: no bound)
    reject:          w = 1[low ≤ ρ ≤ high]                                 (our option: a plain 0/1 filter, no source)
    L_method ← L_method ⊙ w      (w without gradient, (B, T); sequence level: w_i broadcast over the row)

``mask`` is TRL's (huggingface/trl ``trl/trainer/grpo_trainer.py``, ``GRPOTrainer``): the ratio is kept and
zeroed outside the band, ``vllm_importance_sampling_ratio.masked_fill(invalid_mis_mask, value=0.0)``, then
``per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]``. ``reject`` drops ρ from the weight
(what ``grpo_seq_mask`` did before issue 27); kept as an option, no preset uses it.

Decision (our choice): a masked token keeps its place in the aggregation's denominator, as every other
weight of the library (TRL multiplies its loss by the masked ratio the same way; verl's rejection sampling
instead drops the token from the denominator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from steer_bench.algos.base import Metrics, frac
from steer_bench.algos.registry import Metric, Part, register
from steer_bench.algos.stats import masked_mean

LEVELS = ("token", "sequence")
MODES = ("truncate", "mask", "reject")

METRICS: dict[str, Metric] = {
    "rollout_corr/ratio_mean": Metric("mean ρ over the valid tokens (sequence level: each token carries ρ_i)"),
    "rollout_corr/ratio_min": Metric("smallest ρ", "min"),
    "rollout_corr/ratio_max": Metric("largest ρ", "max"),
    "rollout_corr/log_ratio_abs_mean": Metric("mean |log π_old − log π_rollout| over the valid tokens"),
    "rollout_corr/kl": Metric("mean (log π_rollout − log π_old): the k1 estimate of KL(rollout ‖ π_old)"),
    "rollout_corr/weight_mean": Metric("mean weight w applied"),
    "rollout_corr/frac_corrected": Metric("fraction of the valid tokens truncated (w < ρ) or masked (w = 0)"),
}


@register
@dataclass(frozen=True, kw_only=True)
class RolloutCorrection(Part):
    """The preset's ``loss.rollout_correction`` (module docstring); needs ``TokenBatch.rollout_log_probs``."""

    role = "correction"
    name = "rollout_correction"
    metrics = METRICS

    level: str  # token | sequence
    mode: str  # truncate | mask (TRL: ρ kept inside the band) | reject (0/1)
    low: float | None  # mask / reject: lower bound of the band (None: none); truncate: must be None
    high: float  # truncate: the cap C; mask / reject: upper bound of the band

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"rollout_correction level must be one of {LEVELS}, got {self.level!r}")
        if self.mode not in MODES:
            raise ValueError(f"rollout_correction mode must be one of {MODES}, got {self.mode!r}")
        if not self.high > 0:
            raise ValueError(f"rollout_correction high must be > 0, got {self.high}")
        if self.mode == "truncate" and self.low is not None:
            raise ValueError("rollout_correction: truncate has no lower bound (set low to null)")
        if self.low is not None and not 0 <= self.low < self.high:
            raise ValueError(f"rollout_correction low must be in [0, high), got {self.low}")

    def weights(self, old_log_probs: Tensor, rollout_log_probs: Tensor, mask: Tensor) -> tuple[Tensor, Metrics]:
        """w (B, T), detached and 0 on padding, and the metrics of ρ; inputs (B, T), ``mask`` bool."""
        with torch.no_grad():
            m = mask.to(old_log_probs.dtype)
            diff = (old_log_probs - rollout_log_probs) * m
            if self.level == "token":
                ratio = diff.clamp(-20.0, 20.0).exp()
            else:
                ratio = diff.sum(-1, keepdim=True).clamp(-20.0, 20.0).exp().expand_as(diff)
            if self.mode == "truncate":
                w = ratio.clamp(max=self.high)
                corrected = ratio > self.high
            else:
                keep = ratio <= self.high
                if self.low is not None:
                    keep = keep & (ratio >= self.low)
                w = ratio * keep if self.mode == "mask" else keep.to(ratio.dtype)
                corrected = ~keep
            w = w * m
            valid = ratio[mask] if mask.any() else torch.ones(1, dtype=ratio.dtype)
            metrics = {
                "rollout_corr/ratio_mean": masked_mean(ratio, mask),
                "rollout_corr/ratio_min": valid.min(),
                "rollout_corr/ratio_max": valid.max(),
                "rollout_corr/log_ratio_abs_mean": masked_mean(diff.abs(), mask),
                "rollout_corr/kl": masked_mean(-diff, mask),
                "rollout_corr/weight_mean": masked_mean(w, mask),
                "rollout_corr/frac_corrected": frac(corrected, mask),
            }
        return w, metrics
