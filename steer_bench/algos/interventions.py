"""Token-level interventions: each turns the shared surrogate L (B, T) into a method's per-token loss.

Signature: ``fn(surrogate, batch, *, hyperparameters) -> (per-token loss (B, T), metrics)``, where the
hyperparameters are keyword-only without defaults (they come from configs/methods/*.yaml). Optional
``*_batch_stats`` hooks compute the statistics a method normalises over a whole mini-batch (scope=mini).
Registered in :data:`steer_bench.algos.losses.POLICY_LOSSES`; metric keys are documented there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steer_bench.algos.entropy import QUADRANTS, covariance, omega
from steer_bench.algos.stats import masked_mean, masked_quantile
from steer_bench.algos.steer import lambda_map, omega_range, parse_k_norm
from steer_bench.algos.surrogate import Surrogate

Metrics = dict[str, Tensor]

SCOPES = ("micro", "mini")


@dataclass(frozen=True)
class TokenBatch:
    """The (B, T) inputs of one call plus mini-batch statistics passed in by the trainer."""

    log_probs: Tensor
    old_log_probs: Tensor
    advantages: Tensor
    mask: Tensor  # bool
    entropy: Tensor | None = None  # current policy (may carry grad; interventions use it detached)
    old_entropy: Tensor | None = None  # rollout / old policy, no grad
    omega_range: tuple[float, float] | None = None  # STEER scope=mini: (min|Ω|, S) of the mini-batch
    entropy_threshold: float | None = None  # fork_tokens scope=mini: the mini-batch's H quantile
    generator: torch.Generator | None = None  # clip_cov's random choice


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


def frac(x: Tensor, mask: Tensor) -> Tensor:
    return masked_mean(x.float(), mask)


def ppo(s: Surrogate, b: TokenBatch) -> tuple[Tensor, Metrics]:
    """Plain dual-clip surrogate: L_method = L (GRPO, Clip-Higher, the extreme setting, …)."""
    return s.loss, {}


def steer(
    s: Surrogate,
    b: TokenBatch,
    *,
    weight_min: float,
    weight_max: float,
    mapping: str,
    scope: str,
    omega_floor: float,
    k_norm: str,
    form: str,
) -> tuple[Tensor, Metrics]:
    """STEER: λ ⊙ L with λ from |Ω| (see :mod:`steer_bench.algos.steer`); λ carries no gradient.

    scope ``micro`` normalises |Ω| over this call (the release: per micro-batch); ``mini`` uses
    ``b.omega_range`` from :func:`mini_batch_stats` over the mini-batch (None: this call is the whole mini-batch).
    """
    _check_scope(scope)
    if b.old_entropy is None:
        raise ValueError("steer needs the old policy's entropy (old_entropy=...)")
    om = omega(b.advantages, b.old_log_probs, b.log_probs, b.old_entropy, form=form)
    abs_om = om.abs()
    if scope == "mini" and b.omega_range is not None:
        lo, scale = b.omega_range
    else:
        lo, scale = omega_range(abs_om, b.mask, k_norm=k_norm)
    lam = lambda_map(
        abs_om,
        b.mask,
        lo=lo,
        scale=scale,
        weight_min=weight_min,
        weight_max=weight_max,
        mapping=mapping,
        omega_floor=omega_floor,
    )
    return s.loss * lam, _steer_metrics(b, om, lam, scale, weight_min, mapping, omega_floor)


def _steer_metrics(
    b: TokenBatch, om: Tensor, lam: Tensor, scale: float, weight_min: float, mapping: str, floor: float
) -> Metrics:
    """STEER's per-call metrics (:mod:`steer_bench.algos.losses`' table). The masked fractions and quadrant sums
    are computed as rows of one stacked tensor — the same elementwise products and the same sums over (B, T)
    as one :func:`frac` / ``(Ω·1[q]).sum()`` per key (a test checks equality with that per-key form), in a few
    tensor ops instead of ~60: on the miniature's (16, 64) micro-batches this took half of STEER's extra time."""
    mask = b.mask
    maskf = mask.float()  # frac's dtype: float32 whatever λ's
    valid_lam = lam[mask] if mask.any() else torch.ones(1)
    abs_q = masked_quantile(om.abs(), mask, [0.5, 0.9, 0.99, 1.0])
    n = mask.sum().clamp(min=1)
    a = b.advantages.sign()
    s = (b.log_probs.detach() + b.old_entropy).sign()
    pos, neg, high, low = a > 0, a < 0, s > 0, s < 0
    quads = torch.stack([pos & high, pos & low, neg & high, neg & low]) & mask  # QUADRANTS order 1..4
    shares = torch.cat([torch.stack([lam.float(), lam < 0.99, lam <= weight_min + 1e-6]).float(), quads.float()])
    fracs = (shares * maskf).sum(dim=(1, 2)) / maskf.sum().clamp(min=1)
    sums = (om * quads).sum(dim=(1, 2)) / n
    out = {
        "steer/lambda_mean": fracs[0],
        "steer/lambda_min": valid_lam.min(),
        "steer/lambda_max": valid_lam.max(),
        "steer/frac_lambda_below_099": fracs[1],
        "steer/frac_lambda_at_min": fracs[2],
        "steer/floor_active": torch.tensor(float(mapping == "exp" and scale < floor)),
        "steer/omega_scale": torch.tensor(scale),
        "steer/omega_abs_p50": abs_q[0],
        "steer/omega_abs_p90": abs_q[1],
        "steer/omega_abs_p99": abs_q[2],
        "steer/omega_abs_max": abs_q[3],
    }
    for i, qname in enumerate(QUADRANTS.values()):
        out[f"steer/frac_{qname}"] = fracs[3 + i]
        out[f"steer/omega_sum_{qname}"] = sums[i]
    return out


def clip_cov(s: Surrogate, b: TokenBatch, *, ratio: float, cov_lb: float, cov_ub: float) -> tuple[Tensor, Metrics]:
    """Clip-Cov: detach ⌊ratio·N⌋ (≥ 1) random tokens among those with cov_lb < Cov < cov_ub not already clipped.

    N = valid tokens of the call; the chosen tokens' loss is multiplied by 0 (verl ``compute_policy_loss_clip_cov``),
    so they contribute neither value nor gradient. Random choice uses ``b.generator`` (None: torch's global RNG).
    """
    cov = covariance(b.advantages, b.log_probs, b.mask)
    candidates = b.mask & ~s.clipped & (cov > cov_lb) & (cov < cov_ub)
    n_pick = max(int(ratio * int(b.mask.sum())), 1)
    idx = candidates.flatten().nonzero().squeeze(-1)
    chosen = idx[torch.randperm(idx.numel(), generator=b.generator).to(idx.device)[:n_pick]]
    keep = torch.ones_like(s.loss)
    keep.view(-1)[chosen] = 0.0
    metrics = {
        "clip_cov/candidates": candidates.sum().float(),
        "clip_cov/tokens_touched": torch.tensor(float(chosen.numel())),
        "clip_cov/frac_touched": frac(keep == 0, b.mask),
    }
    return s.loss * keep, metrics


def kl_cov(s: Surrogate, b: TokenBatch, *, ratio: float, kl_coef: float) -> tuple[Tensor, Metrics]:
    """KL-Cov: L + kl_coef·|log π − log π_old| on the ⌊ratio·N⌋ (≥ 1) valid tokens with the largest Cov.

    verl ``compute_policy_loss_kl_cov`` pairs it with no clipping at all (clip_low/high/c None). On-policy
    (log π = log π_old) the penalty and its gradient are 0: KL-Cov needs several updates per rollout.
    """
    cov = covariance(b.advantages, b.log_probs, b.mask)
    idx = b.mask.flatten().nonzero().squeeze(-1)
    selected = torch.zeros_like(b.mask)
    if idx.numel() > 0:
        k = max(int(idx.numel() * ratio), 1)
        top = idx[cov.flatten()[idx].topk(k).indices]
        selected.view(-1)[top] = True
    abs_kl = (b.log_probs - b.old_log_probs).abs()
    metrics = {"kl_cov/tokens_touched": selected.sum().float(), "kl_cov/abs_kl": masked_mean(abs_kl.detach(), b.mask)}
    return s.loss + kl_coef * abs_kl * selected, metrics


def fork_tokens(s: Surrogate, b: TokenBatch, *, top_frac: float, scope: str) -> tuple[Tensor, Metrics]:
    """Forking tokens (Wang et al. 2025): keep L only where H ≥ the (1 − top_frac)-quantile of H.

    H is the current policy's entropy (detached). scope ``micro``: the quantile over this call's valid tokens;
    ``mini``: ``b.entropy_threshold`` from :func:`mini_batch_stats` over the mini-batch (the paper's "batch").
    Decision: masked tokens stay in the denominator (TRL's implementation, and the same rule as STEER's λ).
    """
    _check_scope(scope)
    if not 0 < top_frac <= 1:
        raise ValueError(f"fork_tokens top_frac must be in (0, 1], got {top_frac}")
    if b.entropy is None:
        raise ValueError("fork_tokens needs the current policy's entropy (entropy=...)")
    ent = b.entropy.detach()
    if scope == "mini" and b.entropy_threshold is not None:
        threshold = torch.tensor(b.entropy_threshold)
    else:
        threshold = masked_quantile(ent, b.mask, 1.0 - top_frac)
    keep = ent >= threshold
    metrics = {
        "fork_tokens/threshold": threshold.float(),
        "fork_tokens/frac_kept": frac(keep, b.mask),
        "fork_tokens/tokens_touched": (b.mask & ~keep).sum().float(),
    }
    return s.loss * keep, metrics


def steer_batch_stats(b: TokenBatch, *, scope: str, k_norm: str, form: str) -> dict[str, Any]:
    _check_scope(scope)
    parse_k_norm(k_norm)
    if scope != "mini":
        return {}
    if b.old_entropy is None:
        raise ValueError("steer needs the old policy's entropy (old_entropy=...)")
    abs_om = omega(b.advantages, b.old_log_probs, b.log_probs, b.old_entropy, form=form).abs()
    return {"omega_range": omega_range(abs_om, b.mask, k_norm=k_norm)}


def fork_batch_stats(b: TokenBatch, *, top_frac: float, scope: str) -> dict[str, Any]:
    _check_scope(scope)
    if scope != "mini":
        return {}
    if b.entropy is None:
        raise ValueError("fork_tokens needs the current policy's entropy (entropy=...)")
    return {"entropy_threshold": float(masked_quantile(b.entropy.detach(), b.mask, 1.0 - top_frac))}
