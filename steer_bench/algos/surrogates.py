"""The surrogate choices a preset's ``loss.surrogate`` names: the shared dual-clip PPO surrogate (default) and
the 2025 replacements of it, GSPO, CISPO and CE-GPPO (``docs/methods.md`` §M24, §M25, §M26).

Every choice returns a :class:`~steer_bench.algos.surrogate.Surrogate` (per-token loss L (B, T) with gradient
through ``log_probs``, the detached ratio and clip flags), so every intervention composes with every surrogate.
With r = exp(clamp(log π − log π_old, −20, 20)) and all tensors (B, T):

    dual_clip: verl's dual-clip PPO (:func:`~steer_bench.algos.surrogate.clipped_surrogate`)
    gspo:      s_i = exp(Σ_t M·(log π − log π_old) / Σ_t M)      (the geometric mean of the token ratios)
               s_it = sg(s_i) · π_t / sg(π_t)                   (GSPO-token: value s_i, gradient s_i·∇log π_t)
               L = max(−A·s_it, −A·clip(s_it, 1 − ε_low, 1 + ε_high))      (log s clamped at 10, as verl)
    cispo:     L = −sg(clip(r, 1 − ε_low, 1 + ε_high)) · A · log π       (ε_low None: no lower bound)
    ce_gppo:   L1 = −β1·(1 − ε_low)·(r / sg(r))·A  where r < 1 − ε_low and A < 0
                    −β2·(1 + ε_high)·(r / sg(r))·A where r > 1 + ε_high and A > 0
                    −r·A                            elsewhere
               L = min(−A·c, L1) where A < 0, else L1                    (dual clip, c > 1)

GSPO, CISPO and CE-GPPO give clipped tokens a gradient (GSPO per sequence); ``Surrogate.clipped`` marks the
tokens whose ratio factor is clipped (for CISPO / CE-GPPO they still get a bounded gradient).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from steer_bench.algos.surrogate import Surrogate, clipped_surrogate

SurrogateFn = Callable[..., Surrogate]


def _flags(ratio: Tensor, advantages: Tensor, lo: float | None, hi: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """(r > hi and A > 0, r < lo and A < 0, either) — the shared metrics' clip flags, detached."""
    r = ratio.detach()
    none = torch.zeros_like(r, dtype=torch.bool)
    high = (r > hi) & (advantages > 0) if hi is not None else none
    low = (r < lo) & (advantages < 0) if lo is not None else none
    return high, low, high | low


def _bounds(clip_low: float | None, clip_high: float | None) -> tuple[float | None, float | None]:
    return (None if clip_low is None else 1.0 - clip_low), (None if clip_high is None else 1.0 + clip_high)


def _no_dual_clip(name: str, clip_c: float | None) -> None:
    if clip_c is not None:
        raise ValueError(f"surrogate {name!r} has no dual clip: set clip_c to null")


def dual_clip(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float | None,
    clip_high: float | None,
    clip_c: float | None,
) -> Surrogate:
    """verl's dual-clip PPO surrogate (:func:`clipped_surrogate`); ``mask`` is unused (per-token)."""
    return clipped_surrogate(
        log_probs, old_log_probs, advantages, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c
    )


def gspo(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float | None,
    clip_high: float | None,
    clip_c: float | None,
) -> Surrogate:
    """GSPO-token (Zheng et al. 2025, arXiv 2507.18071 eq. 7; verl ``compute_policy_loss_gspo``): see module doc.

    The sequence ratio uses the valid tokens of each row (``mask`` (B, T)); empty rows get s = 1. The clip
    flags are per sequence, broadcast to its tokens.
    """
    _no_dual_clip("gspo", clip_c)
    m = mask.to(log_probs.dtype)
    log_ratio = (log_probs - old_log_probs).clamp(-20.0, 20.0)
    seq_log = (log_ratio.detach() * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
    log_s = (log_probs - log_probs.detach() + seq_log).clamp(max=10.0)
    s = log_s.exp()
    lo, hi = _bounds(clip_low, clip_high)
    loss1 = -advantages * s
    if lo is None and hi is None:
        loss, clipped = loss1, torch.zeros_like(loss1, dtype=torch.bool)
    else:
        loss2 = -advantages * s.clamp(lo, hi)
        loss, clipped = torch.maximum(loss1, loss2), (loss2 > loss1).detach()
    high, low, _ = _flags(s, advantages, lo, hi)
    return Surrogate(loss, s.detach(), clipped, high, low, torch.zeros_like(clipped))


def cispo(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float | None,
    clip_high: float | None,
    clip_c: float | None,
) -> Surrogate:
    """CISPO (MiniMax 2025, arXiv 2506.13585 eqs. 4–5; verl ``compute_policy_loss_cispo``): see module doc.

    ``clipped`` marks the tokens whose IS weight is clipped (verl's CISPO ``pg_clipfrac``); they keep the
    gradient −w·A·∇log π with the clipped weight w.
    """
    _no_dual_clip("cispo", clip_c)
    ratio = (log_probs - old_log_probs).clamp(-20.0, 20.0).exp().detach()
    lo, hi = _bounds(clip_low, clip_high)
    weight = ratio.clamp(lo, hi) if (lo is not None or hi is not None) else ratio
    loss = -weight * advantages * log_probs
    high, low, _ = _flags(ratio, advantages, lo, hi)
    return Surrogate(loss, ratio, weight != ratio, high, low, torch.zeros_like(high))


def ce_gppo(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float | None,
    clip_high: float | None,
    clip_c: float | None,
    beta_low: float,
    beta_high: float,
) -> Surrogate:
    """CE-GPPO (Su et al. 2025, arXiv 2509.20712; Kwai-Klear/CE-GPPO README ``compute_gppo_loss_general_beta``).

    ``beta_low`` = β1 (A < 0 below the clip), ``beta_high`` = β2 (A > 0 above it); see the module doc. On the
    clipped tokens the value is the PPO-clipped one times β and the gradient β·(1 ∓ ε)·A·∇log π (bounded).
    """
    if clip_low is None or clip_high is None:
        raise ValueError("surrogate 'ce_gppo' needs both clip_low and clip_high")
    if clip_c is not None and clip_c <= 1:
        raise ValueError(f"dual-clip constant clip_c must be > 1 (or None to disable), got {clip_c}")
    ratio = (log_probs - old_log_probs).clamp(-20.0, 20.0).exp()
    r = ratio.detach()
    lo, hi = 1.0 - clip_low, 1.0 + clip_high
    high, low, out = _flags(r, advantages, lo, hi)
    unit = ratio / r  # value 1, gradient ∇log π
    loss1 = torch.where(
        low,
        -beta_low * lo * unit * advantages,
        torch.where(high, -beta_high * hi * unit * advantages, -ratio * advantages),
    )
    if clip_c is None:
        return Surrogate(loss1, r, out, high, low, torch.zeros_like(out))
    loss3 = -advantages * clip_c
    loss = torch.where(advantages < 0, torch.minimum(loss3, loss1), loss1)
    dual = ((loss1 > loss3) & (advantages < 0)).detach()
    return Surrogate(loss, r, out, high, low, dual)


SURROGATES: dict[str, SurrogateFn] = {"dual_clip": dual_clip, "gspo": gspo, "cispo": cispo, "ce_gppo": ce_gppo}
SURROGATE_PARAMS: dict[str, tuple[str, ...]] = {
    "dual_clip": (),
    "gspo": (),
    "cispo": (),
    "ce_gppo": ("beta_low", "beta_high"),
}


def check_surrogate(name: str, params: Mapping[str, Any]) -> None:
    """ValueError naming an unknown surrogate or an unknown / missing parameter of it."""
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; valid: {', '.join(SURROGATES)}")
    valid = SURROGATE_PARAMS[name]
    unknown, missing = sorted(set(params) - set(valid)), [p for p in valid if p not in params]
    if unknown or missing:
        raise ValueError(
            f"surrogate {name!r}: unknown {unknown} / missing {missing} parameter(s); "
            f"its parameters are: {', '.join(valid) if valid else '(none)'}"
        )
