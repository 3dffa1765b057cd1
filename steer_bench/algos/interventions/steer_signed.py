"""STEER, signed (**our ablation, not in the paper**): λ from the signed entropy change Ω′ = −Ω instead of |Ω|.

    Ω′_t   = −Ω_t = −(A/π_old)·f_t           (> 0: the update raises entropy; :func:`~steer_bench.algos.entropy.omega`)
    exp:     k = −ln λ_min / max(max|Ω′|, floor);  λ = clamp(exp(k·Ω′), λ_min, λ_max)
    linear:  λ = λ_min + (Ω′ − min Ω′)·(λ_max − λ_min)/(max Ω′ − min Ω′), clamped to [λ_min, λ_max];
             (λ_min + λ_max)/2 when max Ω′ = min Ω′                                  (our choice)
    L_method = λ ⊙ L,  λ without gradient, 0 on padding                               (all (B, T))

Entropy-reducing tokens (Ω′ < 0) are damped towards λ_min, entropy-raising ones boosted up to λ_max. Source:
secondhand, a description of the "asymmetric" mode of later versions of the official repository
(zz-haooo/STEER ``run/run_asymmetric.sh``; not in the stored release b31df71; ``docs/methods.md`` §M33). Min,
max and max|Ω′| are over the call's valid tokens (per micro-batch, as the release's ``compute_token_weights``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steer_bench.algos.base import Intervention, Metrics, TokenBatch, frac
from steer_bench.algos.entropy import OMEGA_FORMS, omega
from steer_bench.algos.registry import Metric, register
from steer_bench.algos.stats import masked_mean
from steer_bench.algos.surrogates import Surrogate

MAPPINGS = ("exp", "linear")


def signed_lambda(
    signed_omega: Tensor,
    mask: Tensor,
    *,
    weight_min: float,
    weight_max: float,
    mapping: str,
    omega_floor: float,
) -> Tensor:
    """λ (B, T) from Ω′ (B, T) over the valid tokens of ``mask`` (module docstring); 0 on padding, no gradient."""
    with torch.no_grad():
        valid = signed_omega[mask]
        if valid.numel() == 0:
            return torch.zeros_like(signed_omega)
        if mapping == "exp":
            k = -math.log(weight_min) / max(float(valid.abs().max()), omega_floor)
            lam = torch.exp(k * signed_omega)
        else:
            lo, hi = float(valid.min()), float(valid.max())
            if hi > lo:
                lam = weight_min + (signed_omega - lo) * (weight_max - weight_min) / (hi - lo)
            else:
                lam = torch.full_like(signed_omega, (weight_min + weight_max) / 2)
        return lam.clamp(weight_min, weight_max) * mask.to(signed_omega.dtype)


@register
@dataclass(frozen=True, kw_only=True)
class SteerSigned(Intervention):
    """λ ⊙ L with λ from the signed Ω′ (module docstring)."""

    name = "steer_signed"
    needs_old_entropy = True
    metrics = {
        "steer_signed/lambda_mean": Metric("mean λ"),
        "steer_signed/lambda_min": Metric("smallest λ", "min"),
        "steer_signed/lambda_max": Metric("largest λ", "max"),
        "steer_signed/frac_damped": Metric("fraction with λ < 1 (entropy-reducing tokens damped)"),
        "steer_signed/frac_boosted": Metric("fraction with λ > 1 (entropy-raising tokens boosted)"),
        "steer_signed/frac_entropy_up": Metric("fraction with Ω′ > 0 (the update raises entropy)"),
    }
    weight_min: float  # λ_min in (0, 1]
    weight_max: float  # λ_max ≥ 1
    mapping: str  # exp | linear
    omega_floor: float  # floor on max|Ω′| in k (as STEER's 0.02)
    form: str  # Ω's form: see steer_bench.algos.entropy.OMEGA_FORMS

    def __post_init__(self) -> None:
        if not 0 < self.weight_min <= 1 <= self.weight_max:
            bounds = f"{self.weight_min}, {self.weight_max}"
            raise ValueError(f"steer_signed needs 0 < weight_min <= 1 <= weight_max, got {bounds}")
        if self.mapping not in MAPPINGS:
            raise ValueError(f"steer_signed mapping must be one of {MAPPINGS}, got {self.mapping!r}")
        if self.form not in OMEGA_FORMS:
            raise ValueError(f"steer_signed form must be one of {OMEGA_FORMS}, got {self.form!r}")
        if self.form == "theorem":  # the clipping indicator that completes it is applied by STEER only
            raise ValueError("steer_signed does not support form 'theorem' (its clipping indicator is STEER's)")
        if not self.omega_floor > 0:
            raise ValueError(f"steer_signed omega_floor must be > 0, got {self.omega_floor}")

    def token_loss(self, surrogate: Surrogate, batch: TokenBatch, stats: Any) -> tuple[Tensor, Metrics]:
        assert batch.old_entropy is not None
        om = -omega(batch.advantages, batch.old_log_probs, batch.log_probs, batch.old_entropy, form=self.form)
        lam = signed_lambda(
            om,
            batch.mask,
            weight_min=self.weight_min,
            weight_max=self.weight_max,
            mapping=self.mapping,
            omega_floor=self.omega_floor,
        )
        mask = batch.mask
        valid = lam[mask] if mask.any() else torch.ones(1)
        metrics = {
            "steer_signed/lambda_mean": masked_mean(lam.float(), mask),
            "steer_signed/lambda_min": valid.min(),
            "steer_signed/lambda_max": valid.max(),
            "steer_signed/frac_damped": frac(lam < 1, mask),
            "steer_signed/frac_boosted": frac(lam > 1, mask),
            "steer_signed/frac_entropy_up": frac(om > 0, mask),
        }
        return surrogate.loss * lam, metrics
