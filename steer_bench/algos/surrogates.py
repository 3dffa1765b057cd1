"""The surrogates L (B, T) a method's intervention reshapes, and the loss aggregation modes.

Every policy loss is  agg(L ⊙ w)  with L from the preset's surrogate (``loss.surrogate``; default verl's
dual-clip PPO, :func:`clipped_surrogate`) and a per-token weight (or extra term) from the method; so methods
differ only in their per-token piece. Each surrogate is a registered part (:mod:`steer_bench.algos.registry`)
called with the preset's clip settings.
The surrogate choices a preset's ``loss.surrogate`` names: the shared dual-clip PPO surrogate (default) and
the 2025 replacements of it, GSPO, CISPO and CE-GPPO (``docs/methods.md`` §M24, §M25, §M26).

Every choice returns a :class:`Surrogate` (per-token loss L (B, T) with gradient
through ``log_probs``, the detached ratio and clip flags), so every intervention composes with every surrogate.
With r = exp(clamp(log π − log π_old, −20, 20)) and all tensors (B, T):

    dual_clip: verl's dual-clip PPO (:func:`clipped_surrogate`)
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

from dataclasses import dataclass

import torch
from torch import Tensor

from steer_bench.algos.registry import Part, register

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class Surrogate:
    """Per-token pieces of the clipped surrogate, all (B, T)."""

    loss: Tensor  # L, with gradient through log_probs
    ratio: Tensor  # r = exp(clamp(logp − old_logp, −20, 20)), detached
    clipped: Tensor  # bool: the PPO clip binds (L2 > L1), the token gets no gradient from L
    clipped_high: Tensor  # bool: r > 1 + ε_high and A > 0
    clipped_low: Tensor  # bool: r < 1 − ε_low and A < 0
    clipped_dual: Tensor  # bool: A < 0 and the dual-clip bound −A·c binds


def clipped_surrogate(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    *,
    clip_low: float | None,
    clip_high: float | None,
    clip_c: float | None,
) -> Surrogate:
    """verl's dual-clip PPO surrogate per token (to be minimised).

    r = exp(clamp(logp − old_logp, −20, 20)); L1 = −A·r; L2 = −A·clip(r, 1 − ε_low, 1 + ε_high);
    Lc = max(L1, L2); L = min(−A·c, Lc) where A < 0, else Lc.
    ``clip_low`` / ``clip_high`` None leave that side of r unbounded (both None: L = L1, as verl's kl_cov);
    ``clip_c`` None disables the dual clip (as verl's clip_cov and kl_cov); otherwise c must be > 1.
    """
    if clip_c is not None and clip_c <= 1:
        raise ValueError(f"dual-clip constant clip_c must be > 1 (or None to disable), got {clip_c}")
    log_ratio = (log_probs - old_log_probs).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    loss1 = -advantages * ratio
    lo = None if clip_low is None else 1.0 - clip_low
    hi = None if clip_high is None else 1.0 + clip_high
    if lo is None and hi is None:
        loss_c = loss1
        clipped = torch.zeros_like(loss1, dtype=torch.bool)
    else:
        loss2 = -advantages * ratio.clamp(lo, hi)
        loss_c = torch.maximum(loss1, loss2)
        clipped = (loss2 > loss1).detach()
    r = ratio.detach()
    clipped_high = (r > hi) & (advantages > 0) if hi is not None else torch.zeros_like(clipped)
    clipped_low = (r < lo) & (advantages < 0) if lo is not None else torch.zeros_like(clipped)
    if clip_c is None:
        loss = loss_c
        clipped_dual = torch.zeros_like(clipped)
    else:
        loss3 = -advantages * clip_c
        loss = torch.where(advantages < 0, torch.minimum(loss3, loss_c), loss_c)
        clipped_dual = ((loss_c > loss3) & (advantages < 0)).detach()
    return Surrogate(loss, r, clipped, clipped_high, clipped_low, clipped_dual)


def aggregate(
    loss_mat: Tensor,
    mask: Tensor,
    *,
    agg: str,
    batch_tokens: int | None = None,
    batch_seqs: int | None = None,
    max_response_len: int | None = None,
) -> Tensor:
    """Reduce a per-token matrix (B, T) to a scalar; exact under gradient accumulation.

    token-mean:              Σ_{i,t} L·M / N_tok
    seq-mean-token-mean:     Σ_i (Σ_t L·M / Σ_t M) / N_seq      (empty sequences contribute 0)
    seq-mean-token-sum-norm: Σ_{i,t} L·M / (N_seq · L_max)       (Dr. GRPO)

    N_tok / N_seq are the mini-batch's valid-token count and non-empty-sequence count (``batch_tokens``,
    ``batch_seqs``); None uses this call's own, which makes the sum of micro-batch losses equal the
    mini-batch loss only if the caller passes the totals. L_max is ``max_response_len`` (Dr. GRPO's constant:
    the generation budget); None uses this call's padded length T, as verl's default.
    Decision: sum-norm divides by N_seq like Dr. GRPO and TRL, so it equals token-mean when every response
    is L_max long; verl v0.4.1 divides by T only (a constant factor N_seq larger).
    """
    mask = mask.to(loss_mat.dtype)
    masked = loss_mat * mask
    if agg == "token-mean":
        denom = batch_tokens if batch_tokens is not None else mask.sum().clamp(min=1)
        return masked.sum() / denom
    seq_len = mask.sum(-1)
    n_seq = batch_seqs if batch_seqs is not None else (seq_len > 0).sum().clamp(min=1)
    if agg == "seq-mean-token-mean":
        return (masked.sum(-1) / seq_len.clamp(min=1)).sum() / n_seq
    if agg == "seq-mean-token-sum-norm":
        length = max_response_len if max_response_len is not None else loss_mat.shape[-1]
        return masked.sum() / (n_seq * length)
    raise ValueError(f"unknown loss aggregation {agg!r}; valid: {', '.join(AGG_MODES)}")


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


@dataclass(frozen=True)
class Clip:
    """The preset's clip settings: ε_low, ε_high (None: that side of the ratio unbounded), dual clip c (None: off)."""

    low: float | None
    high: float | None
    c: float | None


@dataclass(frozen=True, kw_only=True)
class PolicySurrogate(Part):
    """A surrogate choice (``loss.surrogate.name``), called once per loss call with the preset's clip settings:
    ``clip_low`` ε_low / ``clip_high`` ε_high (None: that side unbounded) and the dual-clip ``clip_c`` (None: off);
    ``mask`` (B, T) bool, the valid tokens."""

    role = "surrogate"

    def __call__(
        self,
        log_probs: Tensor,
        old_log_probs: Tensor,
        advantages: Tensor,
        mask: Tensor,
        *,
        clip_low: float | None,
        clip_high: float | None,
        clip_c: float | None,
    ) -> Surrogate:
        return self.compute(log_probs, old_log_probs, advantages, mask, Clip(clip_low, clip_high, clip_c))

    def compute(
        self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: Clip
    ) -> Surrogate:
        """The per-token surrogate (all (B, T)); see the module docstring."""
        raise NotImplementedError


@register
@dataclass(frozen=True, kw_only=True)
class DualClip(PolicySurrogate):
    name = "dual_clip"

    def compute(
        self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: Clip
    ) -> Surrogate:
        """verl's dual-clip PPO surrogate (:func:`clipped_surrogate`); ``mask`` is unused (per-token)."""
        return clipped_surrogate(
            log_probs, old_log_probs, advantages, clip_low=clip.low, clip_high=clip.high, clip_c=clip.c
        )


@register
@dataclass(frozen=True, kw_only=True)
class GSPO(PolicySurrogate):
    name = "gspo"

    def compute(
        self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: Clip
    ) -> Surrogate:
        """GSPO-token (Zheng et al. 2025, arXiv 2507.18071 eq. 7; verl ``compute_policy_loss_gspo``): see module doc.

        The sequence ratio uses the valid tokens of each row (``mask`` (B, T)); empty rows get s = 1. The clip
        flags are per sequence, broadcast to its tokens.
        """
        _no_dual_clip("gspo", clip.c)
        m = mask.to(log_probs.dtype)
        log_ratio = (log_probs - old_log_probs).clamp(-20.0, 20.0)
        seq_log = (log_ratio.detach() * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
        log_s = (log_probs - log_probs.detach() + seq_log).clamp(max=10.0)
        s = log_s.exp()
        lo, hi = _bounds(clip.low, clip.high)
        loss1 = -advantages * s
        if lo is None and hi is None:
            loss, clipped = loss1, torch.zeros_like(loss1, dtype=torch.bool)
        else:
            loss2 = -advantages * s.clamp(lo, hi)
            loss, clipped = torch.maximum(loss1, loss2), (loss2 > loss1).detach()
        high, low, _ = _flags(s, advantages, lo, hi)
        return Surrogate(loss, s.detach(), clipped, high, low, torch.zeros_like(clipped))


@register
@dataclass(frozen=True, kw_only=True)
class CISPO(PolicySurrogate):
    name = "cispo"

    def compute(
        self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: Clip
    ) -> Surrogate:
        """CISPO (MiniMax 2025, arXiv 2506.13585 eqs. 4–5; verl ``compute_policy_loss_cispo``): see module doc.

        ``clipped`` marks the tokens whose IS weight is clipped (verl's CISPO ``pg_clipfrac``); they keep the
        gradient −w·A·∇log π with the clipped weight w.
        """
        _no_dual_clip("cispo", clip.c)
        ratio = (log_probs - old_log_probs).clamp(-20.0, 20.0).exp().detach()
        lo, hi = _bounds(clip.low, clip.high)
        weight = ratio.clamp(lo, hi) if (lo is not None or hi is not None) else ratio
        loss = -weight * advantages * log_probs
        high, low, _ = _flags(ratio, advantages, lo, hi)
        return Surrogate(loss, ratio, weight != ratio, high, low, torch.zeros_like(high))


@register
@dataclass(frozen=True, kw_only=True)
class CEGPPO(PolicySurrogate):
    name = "ce_gppo"
    beta_low: float  # β1: A < 0 below the clip
    beta_high: float  # β2: A > 0 above it

    def compute(
        self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: Clip
    ) -> Surrogate:
        """CE-GPPO (Su et al. 2025, arXiv 2509.20712; Kwai-Klear/CE-GPPO README ``compute_gppo_loss_general_beta``).

        ``beta_low`` = β1 (A < 0 below the clip), ``beta_high`` = β2 (A > 0 above it); see the module doc. On the
        clipped tokens the value is the PPO-clipped one times β and the gradient β·(1 ∓ ε)·A·∇log π (bounded).
        """
        if clip.low is None or clip.high is None:
            raise ValueError("surrogate 'ce_gppo' needs both clip_low and clip_high")
        if clip.c is not None and clip.c <= 1:
            raise ValueError(f"dual-clip constant clip_c must be > 1 (or None to disable), got {clip.c}")
        ratio = (log_probs - old_log_probs).clamp(-20.0, 20.0).exp()
        r = ratio.detach()
        lo, hi = 1.0 - clip.low, 1.0 + clip.high
        high, low, out = _flags(r, advantages, lo, hi)
        unit = ratio / r  # value 1, gradient ∇log π
        loss1 = torch.where(
            low,
            -self.beta_low * lo * unit * advantages,
            torch.where(high, -self.beta_high * hi * unit * advantages, -ratio * advantages),
        )
        if clip.c is None:
            return Surrogate(loss1, r, out, high, low, torch.zeros_like(out))
        loss3 = -advantages * clip.c
        loss = torch.where(advantages < 0, torch.minimum(loss3, loss1), loss1)
        dual = ((loss1 > loss3) & (advantages < 0)).detach()
        return Surrogate(loss, r, out, high, low, dual)
