"""STEER token weights: λ_t from the estimated entropy change |Ω_t| (released ``compute_token_weights``).

exp (the method):  k = −ln λ_min / max(S, floor);  λ = clamp(exp(−k·|Ω|), λ_min, 1)
linear (variant):  λ = w_max − (|Ω| − min|Ω|)(w_max − w_min)/(S − min|Ω|), clamped to [w_min, w_max];
                   (w_min + w_max)/2 when S ≤ min|Ω|
S is the normaliser of |Ω| over a group of valid tokens: its max (the release) or, as **our ablation not in
the paper** (``k_norm="quantile:<q>"``), its q-quantile, so that the heavy-tailed max does not leave almost
every token at λ ≈ 1. The release normalises over each micro-batch (``scope: micro``); ``scope: mini``
uses a range computed once over the whole mini-batch (:func:`omega_range`) and passed to every call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from steer_bench.algos.entropy import omega
from steer_bench.algos.stats import masked_quantile

MAPPINGS = ("exp", "linear")


def parse_k_norm(k_norm: str) -> float | None:
    """``"max"`` -> None; ``"quantile:<q>"`` -> q in (0, 1]. Anything else is an error."""
    if k_norm == "max":
        return None
    if k_norm.startswith("quantile:"):
        try:
            q = float(k_norm.split(":", 1)[1])
        except ValueError:
            q = math.nan
        if 0 < q <= 1:
            return q
    raise ValueError(f"k_norm must be 'max' or 'quantile:<q>' with 0 < q <= 1, got {k_norm!r}")


def omega_range(abs_omega: Tensor, response_mask: Tensor, *, k_norm: str) -> tuple[float, float]:
    """(min |Ω|, S) over the valid tokens, S = max |Ω| or its quantile (see module doc); (0, 0) if none valid."""
    q = parse_k_norm(k_norm)
    valid = abs_omega[response_mask.bool()]
    if valid.numel() == 0:
        return 0.0, 0.0
    scale = valid.max() if q is None else masked_quantile(abs_omega, response_mask, q)
    return float(valid.min()), float(scale)


def lambda_map(
    abs_omega: Tensor,
    response_mask: Tensor,
    *,
    lo: float,
    scale: float,
    weight_min: float,
    weight_max: float,
    mapping: str,
    omega_floor: float,
) -> Tensor:
    """λ (B, T) from |Ω| and its range (lo, scale); 0 on padding (as released). No gradient."""
    if not 0 < weight_min <= 1:
        raise ValueError(f"weight_min (λ_min) must be in (0, 1], got {weight_min}")
    mask = response_mask.to(abs_omega.dtype)
    if mapping == "exp":
        # weight_max is unused: the release clamps the exponential map at 1.
        k = -math.log(weight_min) / max(scale, omega_floor)
        lam = torch.exp(-k * abs_omega).clamp(weight_min, 1.0)
    elif mapping == "linear":
        if weight_max < weight_min:
            raise ValueError(f"weight_max ({weight_max}) must be >= weight_min ({weight_min})")
        if scale > lo:
            lam = weight_max - (abs_omega - lo) * (weight_max - weight_min) / (scale - lo)
        else:
            lam = torch.full_like(abs_omega, (weight_min + weight_max) / 2)
        lam = lam.clamp(weight_min, weight_max)
    else:
        raise ValueError(f"STEER mapping must be one of {MAPPINGS}, got {mapping!r}")
    return lam * mask


def steer_weights(
    advantages: Tensor,
    old_log_probs: Tensor,
    log_probs: Tensor,
    entropy: Tensor,
    response_mask: Tensor,
    *,
    weight_min: float = 0.8,
    weight_max: float = 1.0,
    mapping: str = "exp",
    omega_floor: float = 0.02,
    k_norm: str = "max",
    form: str = "paper",
) -> Tensor:
    """STEER's λ (B, T) treating the whole input as one normalisation group; 0 on padding, no gradient.

    All inputs (B, T): A, log π_old, log π_θ (current), H of the old policy, mask. Defaults are the released
    ``run_exp.sh`` (λ_min 0.8, exponential map, floor 0.02 on max|Ω|, Ω as released).
    """
    abs_omega = omega(advantages, old_log_probs, log_probs, entropy, form=form).abs()
    lo, scale = omega_range(abs_omega, response_mask, k_norm=k_norm)
    return lambda_map(
        abs_omega,
        response_mask,
        lo=lo,
        scale=scale,
        weight_min=weight_min,
        weight_max=weight_max,
        mapping=mapping,
        omega_floor=omega_floor,
    )
